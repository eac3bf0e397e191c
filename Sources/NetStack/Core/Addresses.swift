/// An IPv4 address in host byte order (the numeric value, 10.0.0.1 == 0x0A000001).
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt32
    @inlinable public init(_ value: UInt32) { self.value = value }
    @inlinable public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }
    public static let any = IPv4Address(0)
    public static let broadcast = IPv4Address(0xFFFF_FFFF)

    /// Parses dotted-quad text; nil for anything else.
    public init?(_ text: some StringProtocol) {
        var parts: [UInt32] = []
        for p in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard !p.isEmpty, p.count <= 3, let v = UInt32(p), v <= 255 else { return nil }
            parts.append(v)
        }
        guard parts.count == 4 else { return nil }
        value = parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3]
    }
    @inlinable public var isUnspecified: Bool { value == 0 }
    @inlinable public var isBroadcast: Bool { value == 0xFFFF_FFFF }
    @inlinable public var isMulticast: Bool { value >> 28 == 0xE }
    @inlinable public var isLoopback: Bool { value >> 24 == 127 }
    @inlinable public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }
    public var description: String {
        "\(value >> 24).\((value >> 16) & 0xFF).\((value >> 8) & 0xFF).\(value & 0xFF)"
    }
}

/// An address with its prefix length (10.0.0.2/24).
public struct IPv4CIDR: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var prefixLength: Int
    public init(address: IPv4Address, prefixLength: Int) {
        precondition((0...32).contains(prefixLength))
        self.address = address
        self.prefixLength = prefixLength
    }
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = IPv4Address(parts[0]), let p = Int(parts[1]), (0...32).contains(p) else {
            return nil
        }
        self.init(address: a, prefixLength: p)
    }
    @inlinable @inline(__always) public var netmask: UInt32 { prefixLength == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefixLength) }
    @inlinable public var network: IPv4Address { IPv4Address(address.value & netmask) }
    @inlinable @inline(__always) public var directedBroadcast: IPv4Address { IPv4Address(address.value | ~netmask) }
    @inlinable public func contains(_ a: IPv4Address) -> Bool { a.value & netmask == address.value & netmask }
    public var description: String { "\(address)/\(prefixLength)" }
}

/// A 48-bit Ethernet MAC address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
    @inlinable public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        bytes = (b0, b1, b2, b3, b4, b5)
    }
    public static let broadcast = MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)
    public static let zero = MACAddress(0, 0, 0, 0, 0, 0)

    /// Parses "aa:bb:cc:dd:ee:ff" (or with '-').
    public init?(_ text: some StringProtocol) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var b = [UInt8]()
        for p in parts {
            guard p.count == 2, let v = UInt8(p, radix: 16) else { return nil }
            b.append(v)
        }
        bytes = (b[0], b[1], b[2], b[3], b[4], b[5])
    }
    @inlinable public var isBroadcast: Bool { self == .broadcast }
    @inlinable public var isMulticast: Bool { bytes.0 & 1 == 1 }
    @inlinable public var isUnicast: Bool { !isMulticast }
    public static func == (a: MACAddress, b: MACAddress) -> Bool {
        a.bytes.0 == b.bytes.0 && a.bytes.1 == b.bytes.1 && a.bytes.2 == b.bytes.2
            && a.bytes.3 == b.bytes.3 && a.bytes.4 == b.bytes.4 && a.bytes.5 == b.bytes.5
    }
    public func hash(into h: inout Hasher) {
        h.combine(bytes.0); h.combine(bytes.1); h.combine(bytes.2)
        h.combine(bytes.3); h.combine(bytes.4); h.combine(bytes.5)
    }
    public var description: String {
        let b = [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5]
        return b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
    /// Reads 6 bytes at `p`.
    @inlinable public init(loadingFrom p: UnsafeRawPointer) {
        bytes = (p.load(as: UInt8.self), p.load(fromByteOffset: 1, as: UInt8.self),
                 p.load(fromByteOffset: 2, as: UInt8.self), p.load(fromByteOffset: 3, as: UInt8.self),
                 p.load(fromByteOffset: 4, as: UInt8.self), p.load(fromByteOffset: 5, as: UInt8.self))
    }
    /// Writes 6 bytes at `p`.
    @inlinable public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: bytes.0, as: UInt8.self); p.storeBytes(of: bytes.1, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: bytes.2, toByteOffset: 2, as: UInt8.self); p.storeBytes(of: bytes.3, toByteOffset: 3, as: UInt8.self)
        p.storeBytes(of: bytes.4, toByteOffset: 4, as: UInt8.self); p.storeBytes(of: bytes.5, toByteOffset: 5, as: UInt8.self)
    }
}

/// An IP address of either family in 16 bytes: the IPv6 address, with IPv4 stored v4-mapped
/// (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), so one value type serves sockets, TCP demultiplexing and
/// the port table for both families, and an IPv4 address costs no more to compare than one
/// 64-bit word beyond the old 32-bit value. `hi` and `lo` are the two halves as big-endian numbers
/// (fd00::1 == hi 0xfd00_0000_0000_0000, lo 1).
///
/// The two unspecified addresses differ: `.v4Any` (0.0.0.0, mapped) is an IPv4 wildcard, `.v6Any`
/// (::) the IPv6 one (dual stack unless the socket is IPV6_V6ONLY). Mapped addresses never
/// appear on the IPv6 wire: the IPv6 input drops them as martians, so `isV4` is the family.
public struct IPAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var hi: UInt64
    public var lo: UInt64
    @inlinable public init(hi: UInt64, lo: UInt64) { self.hi = hi; self.lo = lo }
    @inlinable public init(_ v4: IPv4Address) { hi = 0; lo = 0xFFFF_0000_0000 | UInt64(v4.value) }

    public static let v4Any = IPAddress(IPv4Address.any)
    public static let v6Any = IPAddress(hi: 0, lo: 0)
    public static let loopback6 = IPAddress(hi: 0, lo: 1)
    /// ff02::1, every node on the link.
    public static let allNodes = IPAddress(hi: 0xFF02_0000_0000_0000, lo: 1)
    /// ff02::2, every router on the link.
    public static let allRouters = IPAddress(hi: 0xFF02_0000_0000_0000, lo: 2)

    /// True for an IPv4 address (v4-mapped form).
    @inlinable public var isV4: Bool { hi == 0 && lo >> 32 == 0xFFFF }
    /// The IPv4 address in the low 32 bits (meaningful when `isV4`).
    @inlinable public var v4: IPv4Address { IPv4Address(UInt32(truncatingIfNeeded: lo)) }
    /// The IPv4 address, nil for IPv6.
    @inlinable public var asV4: IPv4Address? { isV4 ? v4 : nil }

    /// 0.0.0.0 or ::.
    @inlinable public var isUnspecified: Bool { hi == 0 && (lo == 0 || lo == 0xFFFF_0000_0000) }
    @inlinable public var isLoopback: Bool { isV4 ? v4.isLoopback : hi == 0 && lo == 1 }
    /// 255.255.255.255 (IPv6 has no broadcast).
    @inlinable public var isBroadcast: Bool { hi == 0 && lo == 0xFFFF_FFFF_FFFF }
    /// Neither unspecified, broadcast nor multicast (a possible TCP endpoint).
    @inlinable public var isUnicast: Bool { !isUnspecified && !isBroadcast && !isMulticast }
    /// IPv4 multicast (224/4) or IPv6 multicast (ff00::/8).
    @inlinable public var isMulticast: Bool { isV4 ? v4.isMulticast : hi >> 56 == 0xFF }
    /// fe80::/10.
    @inlinable public var isLinkLocal: Bool { hi >> 54 == 0x3FA }
    /// ff02::1:ffXX:XXXX for `self` (RFC 4291 §2.7.1).
    @inlinable public var solicitedNode: IPAddress {
        IPAddress(hi: 0xFF02_0000_0000_0000, lo: 0x0000_0001_FF00_0000 | (lo & 0xFF_FFFF))
    }
    /// Whether `self` is a solicited-node multicast address (ff02::1:ff00:0/104).
    @inlinable public var isSolicitedNode: Bool {
        hi == 0xFF02_0000_0000_0000 && lo >> 24 == 0x0000_0001_FF
    }

    @inlinable public static func < (a: IPAddress, b: IPAddress) -> Bool { (a.hi, a.lo) < (b.hi, b.lo) }

    /// Reads 16 bytes in network order at `p`.
    @inlinable public init(loadingFrom p: UnsafeRawPointer) {
        hi = UInt64(bigEndian: p.loadUnaligned(as: UInt64.self))
        lo = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    }
    /// Writes 16 bytes in network order at `p`.
    @inlinable public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: hi.bigEndian, as: UInt64.self)
        p.storeBytes(of: lo.bigEndian, toByteOffset: 8, as: UInt64.self)
    }
    /// The 16 bytes in network order.
    public var bytes: [UInt8] {
        (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? hi : lo) >> (UInt64(7 &- i % 8) &* 8)) }
    }
    public init(bytes b: some Collection<UInt8>) {
        precondition(b.count == 16)
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, v) in b.enumerated() {
            if i < 8 { h = h << 8 | UInt64(v) } else { l = l << 8 | UInt64(v) }
        }
        hi = h; lo = l
    }

    /// The 16-bit group `i` (0...7).
    @inlinable func group(_ i: Int) -> UInt16 {
        UInt16(truncatingIfNeeded: (i < 4 ? hi : lo) >> (UInt64(3 &- i & 3) &* 16))
    }

    /// Parses IPv4 dotted-quad text (giving the mapped form) or IPv6 text (RFC 4291 §2.2,
    /// with `::` and an embedded dotted quad); nil for anything else, zone ids included.
    public init?(_ text: some StringProtocol) {
        if let v4 = IPv4Address(text) { self.init(v4); return }
        guard let v = Self.parse6(Substring(text)) else { return nil }
        self = v
    }

    private static func parse6(_ s: Substring) -> IPAddress? {
        guard s.count >= 2, s.count <= 45 else { return nil }
        /// Colon-separated groups of one side of "::"; a dotted quad may end the last side.
        func groups(_ part: Substring, last: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let items = part.split(separator: ":", omittingEmptySubsequences: false)
            for (k, g) in items.enumerated() {
                if last && k == items.count - 1 && g.contains(".") {
                    guard let v4 = IPv4Address(g) else { return nil }
                    out += [UInt16(v4.value >> 16), UInt16(v4.value & 0xFFFF)]
                } else {
                    guard !g.isEmpty, g.count <= 4, let v = UInt16(g, radix: 16) else { return nil }
                    out.append(v)
                }
            }
            return out
        }
        var all: [UInt16]
        if let r = s.range(of: "::") {
            let left = s[s.startIndex..<r.lowerBound], right = s[r.upperBound...]
            guard !right.contains("::"), let l = groups(left, last: false), let t = groups(right, last: true),
                  l.count + t.count <= 7 else { return nil }
            all = l + [UInt16](repeating: 0, count: 8 - l.count - t.count) + t
        } else {
            guard let g = groups(s, last: true), g.count == 8 else { return nil }
            all = g
        }
        var h: UInt64 = 0, l: UInt64 = 0
        for k in 0..<4 { h = h << 16 | UInt64(all[k]) }
        for k in 4..<8 { l = l << 16 | UInt64(all[k]) }
        return IPAddress(hi: h, lo: l)
    }

    /// IPv4 in dotted quad; IPv6 in RFC 5952's canonical form.
    public var description: String { isV4 ? v4.description : ipv6Text }

    /// RFC 5952 text even for a mapped address (`::ffff:10.0.0.1`), as an AF_INET6 socket shows it.
    public var ipv6Text: String {
        if isV4 { return "::ffff:" + v4.description }
        // Longest run of two or more zero groups becomes "::" (the first one on a tie).
        var best = (start: -1, len: 0), cur = (start: -1, len: 0)
        for i in 0..<8 {
            if group(i) == 0 {
                if cur.start < 0 { cur = (i, 1) } else { cur.len += 1 }
                if cur.len > best.len { best = cur }
            } else {
                cur = (-1, 0)
            }
        }
        if best.len < 2 { best = (-1, 0) }
        var out = ""
        var i = 0
        while i < 8 {
            if i == best.start {
                out += "::"
                i += best.len
                continue
            }
            if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
            out += String(group(i), radix: 16)
            i += 1
        }
        return out
    }
}

/// An IPv6 prefix (fd00::2/64): an interface address with its on-link prefix, or a route.
public struct IPv6CIDR: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: Int
    public init(address: IPAddress, prefixLength: Int) {
        precondition((0...128).contains(prefixLength) && !address.isV4)
        self.address = address
        self.prefixLength = prefixLength
    }
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = IPAddress(parts[0]), !a.isV4, let p = Int(parts[1]), (0...128).contains(p)
        else { return nil }
        self.init(address: a, prefixLength: p)
    }
    @inlinable var maskHi: UInt64 { prefixLength >= 64 ? ~0 : prefixLength == 0 ? 0 : ~UInt64(0) << UInt64(64 &- prefixLength) }
    @inlinable var maskLo: UInt64 { prefixLength <= 64 ? 0 : prefixLength == 128 ? ~0 : ~UInt64(0) << UInt64(128 &- prefixLength) }
    @inlinable public func contains(_ a: IPAddress) -> Bool {
        (a.hi ^ address.hi) & maskHi == 0 && (a.lo ^ address.lo) & maskLo == 0
    }
    public var network: IPAddress { IPAddress(hi: address.hi & maskHi, lo: address.lo & maskLo) }
    public var description: String { "\(address)/\(prefixLength)" }
}

/// A transport endpoint of either family (see `IPAddress`).
public struct IPEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    @inlinable public init(_ address: IPAddress, _ port: UInt16) { self.address = address; self.port = port }
    @inlinable public init(_ address: IPv4Address, _ port: UInt16) { self.address = IPAddress(address); self.port = port }
    /// `10.0.0.1:80`, `[fd00::1]:80`.
    public var description: String { address.isV4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
}
