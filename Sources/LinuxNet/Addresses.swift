// Addresses.swift - strict parsing/formatting of the address strings LinuxNet accepts.
//
// Kept strict on purpose (inet_pton, not nl_addr_parse, which also takes "default", "any" and
// bare hex): a typo in a config file should fail with the text that was wrong.

#if canImport(Glibc)
import Glibc
#endif

/// An interface address with prefix, "10.0.0.1/24" or "fd00::1/64".
struct InterfaceCIDR: Equatable, CustomStringConvertible {
    var family: Int32            // AF_INET or AF_INET6
    var bytes: [UInt8]           // 4 or 16 bytes, network order
    var prefixLength: Int

    var fullLength: Int { bytes.count * 8 }

    /// Parses "addr/prefix"; without "/prefix", the full length (/32, /128) is assumed.
    init?(parsing text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count >= 1, !parts[0].isEmpty else { return nil }
        let host = String(parts[0])
        if let b = InterfaceCIDR.pton(AF_INET, host, count: 4) {
            family = AF_INET; bytes = b
        } else if let b = InterfaceCIDR.pton(AF_INET6, host, count: 16) {
            family = AF_INET6; bytes = b
        } else {
            return nil
        }
        if parts.count == 2 {
            // Only plain decimal digits: Int("+8") would accept a sign.
            guard !parts[1].isEmpty, parts[1].count <= 3, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
                  let p = Int(parts[1]), p >= 0, p <= bytes.count * 8 else { return nil }
            prefixLength = p
        } else {
            prefixLength = bytes.count * 8
        }
    }

    init(family: Int32, bytes: [UInt8], prefixLength: Int) {
        self.family = family
        self.bytes = bytes
        self.prefixLength = prefixLength
    }

    var addressText: String {
        var buf = [CChar](repeating: 0, count: 64)
        let ok = bytes.withUnsafeBytes { src in
            inet_ntop(family, src.baseAddress, &buf, socklen_t(buf.count)) != nil
        }
        guard ok else { return "?" }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    var description: String { "\(addressText)/\(prefixLength)" }

    /// IPv4 broadcast of the subnet, for prefixes that have one (< /31).
    var ipv4Broadcast: [UInt8]? {
        guard family == AF_INET, prefixLength < 31 else { return nil }
        let host: UInt32 = prefixLength == 0 ? ~0 : (UInt32(1) << UInt32(32 - prefixLength)) &- 1
        let addr = bytes.withUnsafeBytes { UInt32(bigEndian: $0.loadUnaligned(as: UInt32.self)) }
        let b = (addr | host).bigEndian
        return withUnsafeBytes(of: b) { Array($0) }
    }

    private static func pton(_ family: Int32, _ text: String, count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        let r = out.withUnsafeMutableBytes { inet_pton(family, text, $0.baseAddress) }
        return r == 1 ? out : nil
    }
}

/// Ethernet MAC parsing/formatting ("02:00:00:aa:bb:cc"; '-' separators accepted).
enum MACText {
    static func parse(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let groups = parts.count == 6 ? parts : text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.count == 6 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(6)
        for g in groups {
            guard g.count == 2, let v = UInt8(g, radix: 16) else { return nil }
            out.append(v)
        }
        return out
    }

    static func format(_ bytes: UnsafeRawBufferPointer) -> String {
        let hex: [Character] = Array("0123456789abcdef")
        var s = ""
        s.reserveCapacity(bytes.count * 3)
        for (i, b) in bytes.enumerated() {
            if i > 0 { s.append(":") }
            s.append(hex[Int(b >> 4)])
            s.append(hex[Int(b & 0xf)])
        }
        return s
    }
}
