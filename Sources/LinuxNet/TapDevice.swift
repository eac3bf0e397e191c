// TapDevice.swift - one kernel TAP interface, owned through its /dev/net/tun fd.
//
// Mode is IFF_TAP|IFF_NO_PI: every read/write is exactly one Ethernet frame (no packet-info
// prefix). The fd is non-blocking and close-on-exec; the caller polls it (epoll) and calls
// read/write, which report EAGAIN as a value. The interface exists while the fd is open (it is not
// made persistent), so closing the device also removes the interface.
//
// Offloads (`open(name:offloads: true)`): IFF_VNET_HDR puts a 10-byte virtio_net_hdr before every
// frame both ways, which lets frames carry partial checksums and 64 KiB super-segments (see
// NetStack's VirtioNetHeader). Writing such frames needs nothing more; TUNSETOFFLOAD says which
// ones the kernel may hand us when we read (CSUM, TSO4/6, TSO_ECN, USO4+6). The kernel refuses an
// unknown flag by refusing the whole set, so we step down a ladder and note each refusal.

#if canImport(Glibc)
import Glibc
#endif
import CShims
import PhyLoop
import Synchronization

/// Something that moves whole Ethernet frames through a non-blocking fd: a TAP device, or in
/// tests one end of a SOCK_SEQPACKET pair.
public protocol FrameDevice: AnyObject, Sendable {
    /// The fd to poll for readability.
    var fd: Int32 { get }
    var name: String { get }
    /// What the device negotiated: with `.vnetHeader`, every frame read or written starts with
    /// a `TapOffloads.vnetHeaderLength`-byte virtio header. Default: nothing.
    var offloads: TapOffloads { get }
    /// One frame into `buffer`; nil when none is queued.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> Int?
    /// One frame out; false when the queue is full (the frame is not sent).
    func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> Bool
    /// One frame out from up to four pieces in order (writev: virtio header, headers, payload
    /// regions), so nothing is copied together first. Empty pieces are skipped.
    func write(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer,
               _ d: UnsafeRawBufferPointer) throws(LinuxError) -> Bool
}

extension FrameDevice {
    public var offloads: TapOffloads { [] }

    /// Flattens (allocates): only for devices in tests.
    public func write(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer,
                      _ d: UnsafeRawBufferPointer) throws(LinuxError) -> Bool {
        var bytes = [UInt8](a)
        bytes.append(contentsOf: b)
        bytes.append(contentsOf: c)
        bytes.append(contentsOf: d)
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
        defer { p.deallocate() }
        p.copyBytes(from: bytes)
        return try write(UnsafeRawBufferPointer(p))
    }
}

/// Offloads a TAP negotiated.
public struct TapOffloads: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// IFF_VNET_HDR: frames carry a virtio header both ways (so we may write partial checksums
    /// and TSO super-segments, which the kernel accepts from any such TAP).
    public static let vnetHeader = TapOffloads(rawValue: 1)
    /// TUN_F_CSUM: the kernel may hand us frames with partial checksums (NEEDS_CSUM).
    public static let checksum = TapOffloads(rawValue: 2)
    /// TUN_F_TSO4 / TSO6 / TSO_ECN: TCP super-segments up to 64 KiB.
    public static let tso4 = TapOffloads(rawValue: 4)
    public static let tso6 = TapOffloads(rawValue: 8)
    public static let tsoECN = TapOffloads(rawValue: 16)
    /// TUN_F_USO4|USO6 (Linux >= 6.2): UDP super-datagrams (UDP_SEGMENT).
    public static let uso = TapOffloads(rawValue: 32)

    /// Bytes of `struct virtio_net_hdr` we set (TUNSETVNETHDRSZ), the kernel's default.
    public static let vnetHeaderLength = 10

    public var description: String {
        let names: [(TapOffloads, String)] = [(.vnetHeader, "vnet_hdr"), (.checksum, "csum"), (.tso4, "tso4"),
                                              (.tso6, "tso6"), (.tsoECN, "tso_ecn"), (.uso, "uso")]
        let on = names.filter { contains($0.0) }.map(\.1)
        return on.isEmpty ? "none" : on.joined(separator: " ")
    }

    /// The TUN_F_* flags for the offloads in this set (TUNSETOFFLOAD).
    var tunFlags: UInt32 {
        var f: UInt32 = 0
        if contains(.checksum) { f |= UInt32(CSHIM_TUN_F_CSUM) }
        if contains(.tso4) { f |= UInt32(CSHIM_TUN_F_TSO4) }
        if contains(.tso6) { f |= UInt32(CSHIM_TUN_F_TSO6) }
        if contains(.tsoECN) { f |= UInt32(CSHIM_TUN_F_TSO_ECN) }
        if contains(.uso) { f |= UInt32(CSHIM_TUN_F_USO4) | UInt32(CSHIM_TUN_F_USO6) }
        return f
    }

    /// What TUNSETOFFLOAD tries, best first: each step drops what the kernel may not know.
    static let ladder: [TapOffloads] = [[.checksum, .tso4, .tso6, .tsoECN, .uso], [.checksum, .tso4, .tso6, .tsoECN],
                                        [.checksum, .tso4, .tso6], [.checksum], []]

    /// Walks `ladder` with `setOffload` (TUN_F_* flags -> 0, or the errno of the refusal) until
    /// a step is granted; returns it and one line per refused step.
    static func negotiate(_ setOffload: (UInt32) -> Int32) -> (offloads: TapOffloads, refusals: [String]) {
        var refusals: [String] = []
        for step in ladder {
            let e = setOffload(step.tunFlags)
            if e == 0 { return (step, refusals) }
            refusals.append("TUNSETOFFLOAD \(step) refused (\(errnoText(e)))")
        }
        return ([], refusals)
    }
}

/// Longest interface name the kernel accepts (IFNAMSIZ - 1); IFNAMSIZ itself is ambiguous in
/// Swift once both Glibc and libnl are imported.
public let maxInterfaceNameLength = 15

public final class TapDevice: FrameDevice {
    /// The /dev/net/tun fd (non-blocking). Invalid after `close()`.
    public let fd: Int32
    /// The interface name the kernel gave (equal to the requested one when one was given).
    public let name: String
    /// Interface index, read once at open (a TAP keeps its index while the fd is open).
    public var ifIndex: Int32 { index }
    /// What was negotiated (empty without `offloads: true` at open).
    public let offloads: TapOffloads
    /// One line per offload asked for and refused by the kernel, with its errno (for the log).
    public let offloadRefusals: [String]

    private let index: Int32
    private let closed = Atomic<Bool>(false)
    private let sys: Sys

    private init(fd: Int32, name: String, index: Int32, offloads: TapOffloads, refusals: [String], sys: Sys) {
        self.fd = fd
        self.name = name
        self.index = index
        self.offloads = offloads
        self.offloadRefusals = refusals
        self.sys = sys
    }

    /// Creates (or attaches to) TAP interface `name`; an empty name lets the kernel choose "tapN".
    /// Needs CAP_NET_ADMIN unless the device is persistent and owned by the caller. With
    /// `offloads`, asks for a virtio header and every offload the kernel grants (see the top of
    /// the file); what it refuses is left out and listed in `offloadRefusals`.
    public static func open(name: String, offloads wanted: Bool = false, sys: Sys = .live) throws(LinuxError) -> TapDevice {
        let op = "open TAP device \(name.isEmpty ? "(kernel-chosen name)" : name) via /dev/net/tun"
        try validateInterfaceName(name, allowEmpty: true, operation: op)
        var out = [CChar](repeating: 0, count: maxInterfaceNameLength + 1)
        var refusals: [String] = []
        var offloads: TapOffloads = []
        var fd: Int32 = -1
        if wanted {
            fd = cshim_tap_open(name, cshim_iff_vnet_hdr(), &out)
            if fd >= 0 {
                offloads.insert(.vnetHeader)
            } else if Glibc.errno == EINVAL {
                refusals.append("IFF_VNET_HDR refused (\(errnoText(Glibc.errno))): plain frames, no offloads")
            } else {
                throw LinuxError.posix(op)
            }
        }
        if fd < 0 { fd = cshim_tap_open(name, 0, &out) }
        if fd < 0 { throw LinuxError.posix(op) }
        if offloads.contains(.vnetHeader) {
            // 10 is the kernel's default; set it anyway so a changed default cannot shift frames.
            if cshim_tap_set_vnet_hdr_size(fd, Int32(TapOffloads.vnetHeaderLength)) != 0 {
                refusals.append("TUNSETVNETHDRSZ \(TapOffloads.vnetHeaderLength) refused (\(errnoText(Glibc.errno))): "
                                + "keeping the default header size")
            }
            let granted = TapOffloads.negotiate { flags in cshim_tap_set_offload(fd, flags) == 0 ? 0 : Glibc.errno }
            offloads.formUnion(granted.offloads)
            refusals += granted.refusals
        }
        let finalName = out.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let index = Int32(cshim_if_nametoindex(finalName))
        if index <= 0 {
            let e = Glibc.errno
            _ = Glibc.close(fd)
            throw LinuxError.posix("look up index of new TAP \(finalName)", errno: e)
        }
        return TapDevice(fd: fd, name: finalName, index: index, offloads: offloads, refusals: refusals, sys: sys)
    }

    /// Closes the fd (idempotent). Must not race with a read/write on another thread: the fd
    /// number could be reused by then.
    public func close() {
        if closed.exchange(true, ordering: .acquiringAndReleasing) { return }
        _ = Glibc.close(fd)
    }

    deinit { close() }

    /// Reads one frame into `buffer`; nil when no frame is queued (EAGAIN). The buffer should
    /// hold MTU + 14 bytes, and with offloads the virtio header and a 64 KiB super-frame: a
    /// longer frame is silently truncated by the kernel.
    @inline(__always)
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> Int? {
        do {
            guard case .processed(let n) = try sys.read(fd, into: buffer) else { return nil }
            return n
        } catch {
            throw LinuxError.posix("read frame from TAP \(name)", errno: error.rawValue)
        }
    }

    /// Writes one frame; false when the kernel queue is full (EAGAIN), so the caller can drop or
    /// wait for EPOLLOUT.
    @inline(__always)
    public func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> Bool {
        do {
            guard case .processed = try sys.write(fd, frame) else { return false }
            return true
        } catch {
            throw LinuxError.posix("write \(frame.count)-byte frame to TAP \(name)", errno: error.rawValue)
        }
    }

    /// Writes one frame gathered from up to four pieces (writev).
    @inline(__always)
    public func write(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer,
                      _ d: UnsafeRawBufferPointer) throws(LinuxError) -> Bool {
        do {
            guard case .processed = try sys.writev(fd, a, b, c, d) else { return false }
            return true
        } catch {
            throw LinuxError.posix("write \(a.count &+ b.count &+ c.count &+ d.count)-byte frame to TAP \(name)",
                                   errno: error.rawValue)
        }
    }
}

private func errnoText(_ e: Int32) -> String { "\(String(cString: strerror(e))), errno \(e)" }

/// Checks what the kernel's dev_valid_name checks, so the error names the real problem.
func validateInterfaceName(_ name: String, allowEmpty: Bool = false, operation: String,
                           file: String = #fileID, line: Int = #line) throws(LinuxError) {
    let bytes = name.utf8
    if bytes.isEmpty {
        if allowEmpty { return }
        throw LinuxError(operation: operation, errno: EINVAL, detail: "empty interface name",
                         file: file, line: line)
    }
    if bytes.count > maxInterfaceNameLength {
        throw LinuxError(operation: operation, errno: ENAMETOOLONG,
                         detail: "interface name '\(name)' is \(bytes.count) bytes, the limit is \(maxInterfaceNameLength)",
                         file: file, line: line)
    }
    if name == "." || name == ".." || bytes.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 0x20 || $0 == 0x7f }) {
        throw LinuxError(operation: operation, errno: EINVAL,
                         detail: "invalid interface name '\(name)' (no '/', ':', whitespace or control characters)",
                         file: file, line: line)
    }
}
