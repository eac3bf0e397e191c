// Capture.swift - what `ztctl capture` receives from ztapd and writes: the capture socket's
// messages and the classic pcap file format (tcpdump -r, Wireshark).
//
// ztapd answers a `capture` request with a SOCK_SEQPACKET socket (SCM_RIGHTS on the reply line).
// Each message on it is one frame, prefixed so that ztctl can write bytes 8... of the message
// to a pcap file unchanged:
//
//   offset 0  u32 dropped  frames ztapd dropped for this reader since the previous message
//                          (its socket buffer was full: a slow reader never stalls the network)
//   offset 4  u32 flags    bit 0: outbound (the stack sent the frame; else the stack received it)
//   offset 8  pcap record header: u32 ts_sec, u32 ts_usec, u32 incl_len, u32 orig_len
//   offset 24 the Ethernet frame (incl_len bytes)
//
// Every integer is little-endian, like the file header ztctl writes (magic a1b2c3d4 read as
// little-endian), so the record needs no re-encoding.

import Foundation

/// What ztapd tells ztctl about a capture it handed over.
public struct CaptureInfo: Codable, Sendable, Equatable {
    public var network: String
    public var interface: String
    /// pcap link type of the frames (1: Ethernet).
    public var linkType: UInt32
    /// Longest frame a record can hold.
    public var snapLength: UInt32
    /// Bytes ztapd may queue for this reader before it drops frames.
    public var bufferBytes: Int
    public init(network: String, interface: String, linkType: UInt32 = Pcap.linkTypeEthernet,
                snapLength: UInt32 = Pcap.snapLength, bufferBytes: Int) {
        self.network = network; self.interface = interface; self.linkType = linkType
        self.snapLength = snapLength; self.bufferBytes = bufferBytes
    }
}

/// One capture-socket message (layout above).
public enum CaptureWire {
    public static let prefixSize = 8
    public static let headerSize = 24
    public static let flagOutbound: UInt32 = 1

    /// Writes the 24-byte header of a frame of `length` bytes at `p`.
    @inline(__always)
    public static func encodeHeader(_ p: UnsafeMutableRawPointer, dropped: UInt32, outbound: Bool,
                                    seconds: UInt32, micros: UInt32, length: UInt32) {
        p.storeBytes(of: dropped.littleEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: (outbound ? flagOutbound : 0).littleEndian, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: seconds.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: micros.littleEndian, toByteOffset: 12, as: UInt32.self)
        p.storeBytes(of: length.littleEndian, toByteOffset: 16, as: UInt32.self)
        p.storeBytes(of: length.littleEndian, toByteOffset: 20, as: UInt32.self)
    }

    public struct Message: Equatable, Sendable {
        public var dropped: UInt32
        public var outbound: Bool
        public var seconds: UInt32
        public var micros: UInt32
        public var capturedLength: Int
        public var originalLength: Int
    }

    /// Validates one received message; nil when it is not a well-formed record.
    public static func decode(_ m: UnsafeRawBufferPointer) -> Message? {
        guard m.count >= headerSize else { return nil }
        func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: m.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        let incl = Int(u32(16)), orig = Int(u32(20))
        guard incl == m.count - headerSize, orig >= incl, u32(12) < 1_000_000 else { return nil }
        return Message(dropped: u32(0), outbound: u32(4) & flagOutbound != 0, seconds: u32(8), micros: u32(12),
                       capturedLength: incl, originalLength: orig)
    }
}

/// The classic libpcap file format, version 2.4, microsecond timestamps.
public enum Pcap {
    public static let linkTypeEthernet: UInt32 = 1
    /// Frames are at most MTU 10000 + 14 bytes; records never need truncation.
    public static let snapLength: UInt32 = 65535

    /// The 24-byte file header (little-endian).
    public static func fileHeader(snapLength: UInt32 = snapLength, linkType: UInt32 = linkTypeEthernet) -> [UInt8] {
        var out: [UInt8] = []
        func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func put16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        put32(0xa1b2_c3d4)
        put16(2); put16(4)      // version 2.4
        put32(0); put32(0)      // thiszone, sigfigs
        put32(snapLength)
        put32(linkType)
        return out
    }
}

/// A one-line description of an Ethernet frame, for `ztctl capture` without -w (a quick look;
/// tcpdump or Wireshark on a pcap for anything more).
public enum FrameSummary {
    public static func describe(_ f: UnsafeRawBufferPointer) -> String {
        guard f.count >= 14 else { return "truncated frame, \(f.count) bytes" }
        let type = be16(f, 12)
        let macs = "\(mac(f, 6)) > \(mac(f, 0))"
        switch type {
        case 0x0806: return macs + " " + arp(f, 14)
        case 0x0800: return macs + " " + ipv4(f, 14)
        case 0x86dd: return macs + " IPv6, length \(f.count)"
        default: return macs + " ethertype 0x" + hex(type, 4) + ", length \(f.count)"
        }
    }

    static func be16(_ f: UnsafeRawBufferPointer, _ o: Int) -> UInt16 { UInt16(f[o]) << 8 | UInt16(f[o + 1]) }
    static func be32(_ f: UnsafeRawBufferPointer, _ o: Int) -> UInt32 {
        UInt32(f[o]) << 24 | UInt32(f[o + 1]) << 16 | UInt32(f[o + 2]) << 8 | UInt32(f[o + 3])
    }
    static func hex(_ v: some BinaryInteger, _ width: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
    static func mac(_ f: UnsafeRawBufferPointer, _ o: Int) -> String {
        (0..<6).map { hex(f[o + $0], 2) }.joined(separator: ":")
    }
    static func ip(_ f: UnsafeRawBufferPointer, _ o: Int) -> String {
        (0..<4).map { String(f[o + $0]) }.joined(separator: ".")
    }

    static func arp(_ f: UnsafeRawBufferPointer, _ o: Int) -> String {
        guard f.count >= o + 28, be16(f, o) == 1, be16(f, o + 2) == 0x0800 else { return "ARP, length \(f.count)" }
        switch be16(f, o + 6) {
        case 1: return "ARP who-has \(ip(f, o + 24)) tell \(ip(f, o + 14))"
        case 2: return "ARP reply \(ip(f, o + 14)) is-at \(mac(f, o + 8))"
        default: return "ARP op \(be16(f, o + 6))"
        }
    }

    static func ipv4(_ f: UnsafeRawBufferPointer, _ o: Int) -> String {
        guard f.count >= o + 20, f[o] >> 4 == 4 else { return "IPv4, malformed, length \(f.count)" }
        let ihl = Int(f[o] & 0x0f) * 4
        let total = Int(be16(f, o + 2))
        let proto = f[o + 9]
        let src = ip(f, o + 12), dst = ip(f, o + 16)
        let fragment = be16(f, o + 6) & 0x1fff != 0
        let l4 = o + ihl
        let end = min(f.count, o + total)
        if fragment || ihl < 20 || l4 > end { return "IP \(src) > \(dst): proto \(proto) fragment, length \(total)" }
        switch proto {
        case 1 where end >= l4 + 8:
            let t = f[l4], code = f[l4 + 1]
            let idSeq = "id \(be16(f, l4 + 4)) seq \(be16(f, l4 + 6))"
            let what: String
            switch t {
            case 0: what = "echo reply " + idSeq
            case 8: what = "echo request " + idSeq
            case 3: what = "destination unreachable code \(code)"
            case 11: what = "time exceeded"
            default: what = "type \(t) code \(code)"
            }
            return "IP \(src) > \(dst): ICMP \(what), length \(total)"
        case 6 where end >= l4 + 20:
            let flagsByte = f[l4 + 13]
            let names: [(UInt8, Character)] = [(0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, ".")]
            let flags = String(names.filter { flagsByte & $0.0 != 0 }.map(\.1))
            let dataOffset = Int(f[l4 + 12] >> 4) * 4
            let len = max(0, end - l4 - dataOffset)
            var s = "IP \(src).\(be16(f, l4)) > \(dst).\(be16(f, l4 + 2)): TCP [\(flags)] seq \(be32(f, l4 + 4))"
            if flagsByte & 0x10 != 0 { s += " ack \(be32(f, l4 + 8))" }
            return s + " win \(be16(f, l4 + 14)) len \(len)"
        case 17 where end >= l4 + 8:
            return "IP \(src).\(be16(f, l4)) > \(dst).\(be16(f, l4 + 2)): UDP len \(Int(be16(f, l4 + 4)) - 8)"
        default:
            return "IP \(src) > \(dst): proto \(proto), length \(total)"
        }
    }
}
