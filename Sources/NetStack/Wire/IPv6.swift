/// IPv6 (RFC 8200): the 40-byte fixed header, the extension headers the input walks, and the
/// Fragment header. Views validate lengths in their checked initialisers; after that no getter
/// can trap.
public struct IPv6HeaderView {
    public static let headerLength = 40
    public static let minimumMTU = 1280

    /// Exactly 40 + payload length bytes (link padding cut off).
    public let bytes: UnsafeRawBufferPointer

    /// Validates version and payload length against the buffer. A payload length of 0 with a
    /// Hop-by-Hop header would be a jumbogram (RFC 2675), which an Ethernet link cannot carry: it
    /// is simply a packet with no payload here, and the Hop-by-Hop walk then finds it truncated.
    @inlinable
    public init(_ buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= Self.headerLength, let p = buffer.baseAddress else {
            throw .truncated(needed: Self.headerLength, available: buffer.count)
        }
        let v = p.load(as: UInt8.self) >> 4
        guard v == 6 else { throw .badVersion(v) }
        let plen = Int(wireLoad16(p, 4))
        guard Self.headerLength &+ plen <= buffer.count else {
            throw .badLength(field: plen, available: buffer.count &- Self.headerLength)
        }
        bytes = UnsafeRawBufferPointer(start: p, count: Self.headerLength &+ plen)
    }

    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: wireLoad16(base, 0) >> 4) }
    @inlinable public var flowLabel: UInt32 { wireLoad32(base, 0) & 0xF_FFFF }
    @inlinable public var payloadLength: Int { bytes.count &- Self.headerLength }
    @inlinable public var nextHeader: UInt8 { base.load(fromByteOffset: 6, as: UInt8.self) }
    @inlinable public var hopLimit: UInt8 { base.load(fromByteOffset: 7, as: UInt8.self) }
    @inlinable public var source: IPAddress { IPAddress(loadingFrom: base + 8) }
    @inlinable public var destination: IPAddress { IPAddress(loadingFrom: base + 24) }
    @inlinable public var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + Self.headerLength, count: bytes.count &- Self.headerLength)
    }

    /// Writes the 40-byte header at `p` (flow label 0).
    @inlinable
    public static func emit(into p: UnsafeMutableRawPointer, source: IPAddress, destination: IPAddress,
                            nextHeader: UInt8, payloadLength: Int, hopLimit: UInt8 = 64, trafficClass: UInt8 = 0) {
        wireStore32(p, 0, 0x6000_0000 | UInt32(trafficClass) << 20)
        wireStore16(p, 4, UInt16(truncatingIfNeeded: payloadLength))
        p.storeBytes(of: nextHeader, toByteOffset: 6, as: UInt8.self)
        p.storeBytes(of: hopLimit, toByteOffset: 7, as: UInt8.self)
        source.store(to: p + 8)
        destination.store(to: p + 24)
    }

    /// Whether `next` names an extension header this stack walks (RFC 8200 §4.1 order aside).
    @inlinable public static func isExtension(_ next: UInt8) -> Bool {
        next == IPProtocol.hopByHop || next == IPProtocol.routing || next == IPProtocol.fragment
            || next == IPProtocol.destinationOptions
    }
}

/// An extension header of the Hop-by-Hop / Routing / Destination Options shape: next header,
/// length in 8-octet units not counting the first 8, then its data (RFC 8200 §4.3-4.6).
public struct IPv6ExtensionView {
    public let bytes: UnsafeRawBufferPointer   // exactly the header's length

    @inlinable public init(_ buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= 8, let p = buffer.baseAddress else { throw .truncated(needed: 8, available: buffer.count) }
        let n = (Int(p.load(fromByteOffset: 1, as: UInt8.self)) &+ 1) &* 8
        guard n <= buffer.count else { throw .truncated(needed: n, available: buffer.count) }
        bytes = UnsafeRawBufferPointer(start: p, count: n)
    }
    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var nextHeader: UInt8 { base.load(as: UInt8.self) }
    @inlinable public var length: Int { bytes.count }
    /// Routing header fields (RFC 8200 §4.4).
    @inlinable public var routingType: UInt8 { base.load(fromByteOffset: 2, as: UInt8.self) }
    @inlinable public var segmentsLeft: UInt8 { base.load(fromByteOffset: 3, as: UInt8.self) }
    /// The options area of a Hop-by-Hop or Destination Options header (after the 2 fixed bytes).
    @inlinable public var options: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[2...]) }
}

/// The 8-byte Fragment header (RFC 8200 §4.5).
public struct IPv6FragmentView {
    public static let length = 8
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= Self.length, let p = buffer.baseAddress else {
            throw .truncated(needed: Self.length, available: buffer.count)
        }
        bytes = UnsafeRawBufferPointer(start: p, count: Self.length)
    }
    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var nextHeader: UInt8 { base.load(as: UInt8.self) }
    /// Offset of the data in bytes (a multiple of 8).
    @inlinable public var fragmentOffset: Int { Int(wireLoad16(base, 2) & 0xFFF8) }
    @inlinable public var moreFragments: Bool { wireLoad16(base, 2) & 1 != 0 }
    @inlinable public var identification: UInt32 { wireLoad32(base, 4) }

    @inlinable
    public static func emit(into p: UnsafeMutableRawPointer, nextHeader: UInt8, offset: Int, more: Bool,
                            identification: UInt32) {
        p.storeBytes(of: nextHeader, as: UInt8.self)
        p.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
        wireStore16(p, 2, UInt16(truncatingIfNeeded: offset) & 0xFFF8 | (more ? 1 : 0))
        wireStore32(p, 4, identification)
    }
}

/// Options of Hop-by-Hop and Destination Options headers (RFC 8200 §4.2).
public enum IPv6Option {
    public static let pad1: UInt8 = 0
    public static let padN: UInt8 = 1
    public static let routerAlert: UInt8 = 5
    public static let jumboPayload: UInt8 = 0xC2

    /// What to do with an unrecognized option: the two high-order bits of its type.
    public enum Action: Equatable { case skip, discard, discardAndReport, discardAndReportUnlessMulticast }
    @inlinable public static func action(_ type: UInt8) -> Action {
        switch type >> 6 {
        case 0: .skip
        case 1: .discard
        case 2: .discardAndReport
        default: .discardAndReportUnlessMulticast
        }
    }
}

extension MACAddress {
    /// The Ethernet multicast address of an IPv6 multicast address (RFC 2464 §7): 33:33 and its
    /// last 32 bits.
    @inlinable public init(ipv6Multicast a: IPAddress) {
        let l = UInt32(truncatingIfNeeded: a.lo)
        self.init(0x33, 0x33, UInt8(l >> 24), UInt8(truncatingIfNeeded: l >> 16), UInt8(truncatingIfNeeded: l >> 8),
                  UInt8(truncatingIfNeeded: l))
    }
    /// Whether this is an IPv6 multicast MAC (33:33:xx:xx:xx:xx).
    @inlinable public var isIPv6Multicast: Bool { bytes.0 == 0x33 && bytes.1 == 0x33 }

    /// The modified EUI-64 interface identifier (RFC 4291 Appendix A): the link-local address's
    /// lower half.
    public var interfaceIdentifier: UInt64 {
        UInt64(bytes.0 ^ 0x02) << 56 | UInt64(bytes.1) << 48 | UInt64(bytes.2) << 40 | 0xFF_FE00_0000
            | UInt64(bytes.3) << 16 | UInt64(bytes.4) << 8 | UInt64(bytes.5)
    }
}
