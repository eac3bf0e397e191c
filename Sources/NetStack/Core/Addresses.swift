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
    @inlinable public var netmask: UInt32 { prefixLength == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefixLength) }
    @inlinable public var network: IPv4Address { IPv4Address(address.value & netmask) }
    @inlinable public var directedBroadcast: IPv4Address { IPv4Address(address.value | ~netmask) }
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

/// An IPv4 transport endpoint.
public struct IPv4Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var port: UInt16
    @inlinable public init(_ address: IPv4Address, _ port: UInt16) { self.address = address; self.port = port }
    public var description: String { "\(address):\(port)" }
}
