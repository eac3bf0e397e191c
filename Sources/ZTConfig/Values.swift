#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Address family of an `IPPrefix`.
public enum IPFamily: Hashable, Sendable {
    case v4, v6

    /// Address length in bytes (4 or 16).
    public var byteCount: Int { self == .v4 ? 4 : 16 }
    /// Longest prefix (32 or 128).
    public var maxPrefixLength: Int { self == .v4 ? 32 : 128 }
}

/// An IPv4 or IPv6 address with a prefix length, e.g. `10.1.0.2/24` or `fd00::1/64`.
///
/// Addresses are parsed with `inet_pton` rules (dotted quad only for IPv4, no zone ids) and printed
/// in canonical `inet_ntop` form, so `FD00:0::1/64` reads back as `fd00::1/64`.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public let family: IPFamily
    /// Network byte order, 4 or 16 bytes.
    public let bytes: [UInt8]
    public let prefixLength: Int

    public init(family: IPFamily, bytes: [UInt8], prefixLength: Int) {
        precondition(bytes.count == family.byteCount, "IPPrefix: \(bytes.count) bytes for \(family)")
        precondition((0...family.maxPrefixLength).contains(prefixLength), "IPPrefix: prefix \(prefixLength)")
        self.family = family
        self.bytes = bytes
        self.prefixLength = prefixLength
    }

    /// Parses `ADDRESS/LEN`. Without `/LEN`, `defaultsToHost` decides between a host prefix
    /// (/32 or /128) and nil. Returns nil for anything malformed or out of range.
    public init?(_ text: String, defaultsToHost: Bool = false) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let (family, bytes) = IPPrefix.parseAddress(String(parts[0])) else { return nil }
        var length = family.maxPrefixLength
        if parts.count == 2 {
            // Digits only: Int() would also take "+24".
            let digits = parts[1]
            guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let n = Int(digits), n <= family.maxPrefixLength else { return nil }
            length = n
        } else if !defaultsToHost {
            return nil
        }
        self.init(family: family, bytes: bytes, prefixLength: length)
    }

    /// Parses a bare address (no prefix) with `inet_pton`.
    public static func parseAddress(_ text: String) -> (IPFamily, [UInt8])? {
        guard !text.isEmpty, text.utf8.count < 64 else { return nil }
        var buf = [UInt8](repeating: 0, count: 16)
        if text.contains(":") {
            guard inet_pton(AF_INET6, text, &buf) == 1 else { return nil }
            return (.v6, buf)
        }
        guard inet_pton(AF_INET, text, &buf) == 1 else { return nil }
        return (.v4, Array(buf[0..<4]))
    }

    /// The address part in canonical text form.
    public var address: String {
        var out = [CChar](repeating: 0, count: 64)
        let af = family == .v4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { src in inet_ntop(af, src.baseAddress, &out, socklen_t(out.count)) }
        precondition(ok != nil, "inet_ntop failed for \(bytes)")
        return String(decoding: out.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String { "\(address)/\(prefixLength)" }

    /// The IPv4 address as a host-order integer (10.0.0.1 == 0x0A000001); nil for IPv6.
    public var ipv4Value: UInt32? {
        guard family == .v4 else { return nil }
        return UInt32(bytes[0]) << 24 | UInt32(bytes[1]) << 16 | UInt32(bytes[2]) << 8 | UInt32(bytes[3])
    }

    /// The same prefix with the host bits cleared.
    public var network: IPPrefix {
        IPPrefix(family: family, bytes: IPPrefix.masked(bytes, prefixLength), prefixLength: prefixLength)
    }

    /// True when the host bits are all zero (a proper route destination).
    public var isNetwork: Bool { network.bytes == bytes }

    /// True when `addressBytes` (same family) lies inside this prefix.
    public func contains(addressBytes: [UInt8]) -> Bool {
        addressBytes.count == bytes.count
            && IPPrefix.masked(addressBytes, prefixLength) == IPPrefix.masked(bytes, prefixLength)
    }

    var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } }
    var isMulticast: Bool { family == .v4 ? bytes[0] >> 4 == 0xE : bytes[0] == 0xFF }
    var isLoopback: Bool {
        family == .v4 ? bytes[0] == 127 : bytes.dropLast().allSatisfy { $0 == 0 } && bytes[15] == 1
    }
    var isLimitedBroadcast: Bool { family == .v4 && bytes.allSatisfy { $0 == 0xFF } }

    static func masked(_ b: [UInt8], _ length: Int) -> [UInt8] {
        var out = b
        for i in out.indices {
            let keep = max(0, min(8, length - i * 8))
            out[i] &= keep == 0 ? 0 : ~UInt8(0) << UInt8(8 - keep)
        }
        return out
    }
}

/// Built-in diagnostic services a network's stack can answer (RFC 862/863/864), from `Services=`.
public enum DiagnosticService: String, CaseIterable, Hashable, Sendable {
    case echo, discard, chargen
}

/// The name the API brief uses. `DiagnosticService` is the primary name because a type called
/// ZTService shadows the ZTService module inside code that imports ZTConfig.
public typealias ZTService = DiagnosticService

/// Daemon log threshold, from `LogLevel=` (names of swift-log's levels).
public enum LogLevel: String, CaseIterable, Hashable, Sendable {
    case trace, debug, info, notice, warning, error, critical
}

// MARK: - Value parsers shared by the key specs (each throws a Reason naming key, value and what is allowed)

enum Value {
    static func invalid(_ key: String, _ value: String, _ allowed: String) -> Reason {
        Reason("invalid \(key)=\(value): \(allowed)")
    }

    /// systemd booleans.
    static func bool(_ key: String, _ v: String) throws(Reason) -> Bool {
        switch v.lowercased() {
        case "1", "yes", "y", "true", "t", "on": return true
        case "0", "no", "n", "false", "f", "off": return false
        default: throw invalid(key, v, "expected yes or no (also 1/0, true/false, on/off)")
        }
    }

    static func integer(_ key: String, _ v: String, _ range: ClosedRange<Int>) throws(Reason) -> Int {
        guard v.allSatisfy({ $0.isASCII && $0.isNumber }), v.count <= 18, let n = Int(v), range.contains(n) else {
            throw invalid(key, v, "expected an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    /// A byte size: digits with an optional binary suffix K, M or G (1024-based, case-insensitive).
    static func size(_ key: String, _ v: String, _ range: ClosedRange<Int>) throws(Reason) -> Int {
        let allowed = "expected a size in \(renderSize(range.lowerBound))...\(renderSize(range.upperBound)) "
            + "(bytes, or with suffix K or M, e.g. 4M)"
        var digits = Substring(v)
        var multiplier = 1
        if let last = v.last, !last.isNumber {
            switch last {
            case "K", "k": multiplier = 1 << 10
            case "M", "m": multiplier = 1 << 20
            case "G", "g": multiplier = 1 << 30
            default: throw invalid(key, v, allowed)
            }
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.count <= 12, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let n = Int(digits) else { throw invalid(key, v, allowed) }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: multiplier)
        guard !overflow, range.contains(bytes) else { throw invalid(key, v, allowed) }
        return bytes
    }

    /// Digits followed by one of `units` (name -> multiplier), as a number in `range`; nil if
    /// `v` is not of that form or out of range.
    private static func scaled(_ v: String, _ units: [String: Int], _ range: ClosedRange<Int>) -> Int? {
        let digits = v.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 12, let n = Int(digits), let scale = units[String(v.dropFirst(digits.count))]
        else { return nil }
        let (x, overflow) = n.multipliedReportingOverflow(by: scale)
        return !overflow && range.contains(x) ? x : nil
    }

    /// A time span in milliseconds: digits with a unit `ms`, `s`, `min` or `h` (systemd's
    /// spellings); bare digits are seconds, as in systemd.
    static func duration(_ key: String, _ v: String, _ rangeMs: ClosedRange<Int>) throws(Reason) -> Int {
        let allowed = "expected a duration in \(renderDuration(rangeMs.lowerBound))...\(renderDuration(rangeMs.upperBound)) "
            + "(digits with ms, s, min or h; bare digits are seconds, e.g. 30s)"
        guard let ms = scaled(v, ["": 1000, "s": 1000, "ms": 1, "min": 60_000, "h": 3_600_000], rangeMs) else {
            throw invalid(key, v, allowed)
        }
        return ms
    }

    /// A short time span in microseconds: digits with `us` (or `µs`) or `ms`; `0` alone (or
    /// `no`) is zero. Bare digits are refused: the other durations read them as seconds.
    static func microseconds(_ key: String, _ v: String, _ rangeUs: ClosedRange<Int>) throws(Reason) -> Int {
        let allowed = "expected a duration in \(rangeUs.lowerBound)us...\(rangeUs.upperBound)us "
            + "(digits with us or ms, e.g. 20us; 0 or no for off)"
        if (v == "0" || v == "no") && rangeUs.contains(0) { return 0 }
        guard let us = scaled(v, ["us": 1, "µs": 1, "ms": 1000], rangeUs) else { throw invalid(key, v, allowed) }
        return us
    }

    /// Largest exact unit: 30000 -> "30s", 120000 -> "2min", 250 -> "250ms".
    static func renderDuration(_ ms: Int) -> String {
        if ms != 0, ms % 3_600_000 == 0 { return "\(ms / 3_600_000)h" }
        if ms != 0, ms % 60_000 == 0 { return "\(ms / 60_000)min" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    /// Shortest exact form: 4194304 -> "4M", 65536 -> "64K", 1000 -> "1000".
    static func renderSize(_ n: Int) -> String {
        if n != 0, n % (1 << 30) == 0 { return "\(n >> 30)G" }
        if n != 0, n % (1 << 20) == 0 { return "\(n >> 20)M" }
        if n != 0, n % (1 << 10) == 0 { return "\(n >> 10)K" }
        return "\(n)"
    }

    /// A user or group: a name like useradd accepts, or a numeric id (not the invalid id 4294967295).
    static func principal(_ key: String, _ v: String, kind: String) throws(Reason) -> String {
        if v.allSatisfy({ $0.isASCII && $0.isNumber }), v.count <= 10, let n = UInt64(v), n < 0xFFFF_FFFF {
            return v
        }
        var ok = (1...32).contains(v.utf8.count)
        for (i, c) in v.utf8.enumerated() where ok {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "_"):
                break
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."):
                ok = i > 0
            case UInt8(ascii: "$"):
                ok = i == v.utf8.count - 1 && i > 0  // Samba machine accounts
            default:
                ok = false
            }
        }
        guard ok else {
            throw invalid(key, v, "expected a \(kind) name ([A-Za-z_][A-Za-z0-9_.-]{0,31}) or a numeric \(kind == "user" ? "uid" : "gid")")
        }
        return v
    }

    /// Network interface name as the kernel accepts it, restricted to a safe character set.
    static func isValidInterfaceName(_ s: String) -> Bool {
        guard (1...15).contains(s.utf8.count), s != ".", s != ".." else { return false }
        return s.utf8.allSatisfy { c in
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"):
                return true
            default:
                return false
            }
        }
    }

    /// Six hex pairs separated by ':' or '-'; returns the bytes.
    static func macBytes(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: s.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard p.count == 2, p.allSatisfy({ $0.isHexDigit && $0.isASCII }), let b = UInt8(p, radix: 16) else {
                return nil
            }
            out.append(b)
        }
        return out
    }

    static func renderMAC(_ b: [UInt8]) -> String {
        b.map { hex2($0) }.joined(separator: ":")
    }

    static func hex2(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 0xF)]])
    }
}

/// 32-bit FNV-1a; stable across processes and builds (unlike Swift's per-process seeded Hasher).
func fnv1a32(_ s: String) -> UInt32 {
    var h: UInt32 = 0x811C_9DC5
    for b in s.utf8 { h = (h ^ UInt32(b)) &* 0x0100_0193 }
    return h
}

/// 64-bit FNV-1a.
func fnv1a64(_ s: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return h
}
