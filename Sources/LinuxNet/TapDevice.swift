// TapDevice.swift - one kernel TAP interface, owned through its /dev/net/tun fd.
//
// Mode is IFF_TAP|IFF_NO_PI: every read/write is exactly one Ethernet frame (no packet-info
// prefix). The fd is non-blocking and close-on-exec; the caller polls it (epoll) and calls
// read/write, which report EAGAIN as a value. The interface exists while the fd is open (it is not
// made persistent), so closing the device also removes the interface.

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
    /// One frame into `buffer`; nil when none is queued.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> Int?
    /// One frame out; false when the queue is full (the frame is not sent).
    func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> Bool
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

    private let index: Int32
    private let closed = Atomic<Bool>(false)
    private let sys: Sys

    private init(fd: Int32, name: String, index: Int32, sys: Sys) {
        self.fd = fd
        self.name = name
        self.index = index
        self.sys = sys
    }

    /// Creates (or attaches to) TAP interface `name`; an empty name lets the kernel choose "tapN".
    /// Needs CAP_NET_ADMIN unless the device is persistent and owned by the caller.
    public static func open(name: String, sys: Sys = .live) throws(LinuxError) -> TapDevice {
        let op = "open TAP device \(name.isEmpty ? "(kernel-chosen name)" : name) via /dev/net/tun"
        try validateInterfaceName(name, allowEmpty: true, operation: op)
        var out = [CChar](repeating: 0, count: maxInterfaceNameLength + 1)
        let fd = cshim_tap_open(name, 0, &out)
        if fd < 0 { throw LinuxError.posix(op) }
        let finalName = out.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let index = Int32(cshim_if_nametoindex(finalName))
        if index <= 0 {
            let e = Glibc.errno
            _ = Glibc.close(fd)
            throw LinuxError.posix("look up index of new TAP \(finalName)", errno: e)
        }
        return TapDevice(fd: fd, name: finalName, index: index, sys: sys)
    }

    /// Closes the fd (idempotent). Must not race with a read/write on another thread: the fd
    /// number could be reused by then.
    public func close() {
        if closed.exchange(true, ordering: .acquiringAndReleasing) { return }
        _ = Glibc.close(fd)
    }

    deinit { close() }

    /// Reads one frame into `buffer`; nil when no frame is queued (EAGAIN). The buffer should
    /// hold MTU + 14 bytes: a longer frame is silently truncated by the kernel.
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
}

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
