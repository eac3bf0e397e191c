/// IPv4 header (RFC 791). The view validates version, IHL, total length against the buffer and
/// (optionally) the header checksum; options are not interpreted, only skipped via IHL.
public struct IPv4HeaderView {
    public static let minHeaderLength = 20
    /// Flag bits in the 16-bit flags/fragment-offset word.
    public static let dontFragmentFlag: UInt16 = 0x4000
    public static let moreFragmentsFlag: UInt16 = 0x2000

    public let bytes: UnsafeRawBufferPointer   // exactly `totalLength` bytes (link padding cut off)
    public let headerLength: Int

    /// Validates the header. `verifyChecksum: false` is for callers that already did, or for
    /// views of headers quoted inside ICMP errors.
    @inlinable
    public init(_ buffer: UnsafeRawBufferPointer, verifyChecksum: Bool = true) throws(WireError) {
        guard buffer.count >= Self.minHeaderLength, let p = buffer.baseAddress else {
            throw .truncated(needed: Self.minHeaderLength, available: buffer.count)
        }
        let vihl = p.load(as: UInt8.self)
        guard vihl >> 4 == 4 else { throw .badVersion(vihl >> 4) }
        let ihl = Int(vihl & 0x0F) &* 4
        guard ihl >= Self.minHeaderLength, ihl <= buffer.count else { throw .badHeaderLength(ihl) }
        let total = Int(wireLoad16(p, 2))
        guard total >= ihl, total <= buffer.count else { throw .badLength(field: total, available: buffer.count) }
        if verifyChecksum, Checksum.compute(p, count: ihl) != 0 { throw .badChecksum }
        self.bytes = UnsafeRawBufferPointer(start: p, count: total)
        self.headerLength = ihl
    }

    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var dscpECN: UInt8 { base.load(fromByteOffset: 1, as: UInt8.self) }
    @inlinable public var totalLength: Int { bytes.count }
    @inlinable public var identification: UInt16 { wireLoad16(base, 4) }
    @inlinable var flagsFragment: UInt16 { wireLoad16(base, 6) }
    @inlinable public var dontFragment: Bool { flagsFragment & Self.dontFragmentFlag != 0 }
    @inlinable public var moreFragments: Bool { flagsFragment & Self.moreFragmentsFlag != 0 }
    /// Fragment offset in bytes.
    @inlinable public var fragmentOffset: Int { Int(flagsFragment & 0x1FFF) &* 8 }
    @inlinable public var isFragment: Bool { flagsFragment & 0x3FFF != 0 }
    @inlinable public var ttl: UInt8 { base.load(fromByteOffset: 8, as: UInt8.self) }
    @inlinable public var protocolNumber: UInt8 { base.load(fromByteOffset: 9, as: UInt8.self) }
    @inlinable public var checksum: UInt16 { wireLoad16(base, 10) }
    @inlinable public var source: IPv4Address { IPv4Address(wireLoad32(base, 12)) }
    @inlinable public var destination: IPv4Address { IPv4Address(wireLoad32(base, 16)) }
    /// The option bytes (between the fixed header and the payload), never interpreted.
    @inlinable public var options: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Self.minHeaderLength..<headerLength])
    }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[headerLength...]) }

    /// Writes a 20-byte header (no options) with its checksum at `p`.
    @inlinable
    public static func emit(into p: UnsafeMutableRawPointer, source: IPv4Address, destination: IPv4Address,
                            protocolNumber: UInt8, payloadLength: Int, identification: UInt16,
                            dontFragment: Bool = false, moreFragments: Bool = false,
                            fragmentOffset: Int = 0, ttl: UInt8 = 64, dscpECN: UInt8 = 0) {
        p.storeBytes(of: 0x45, as: UInt8.self)
        p.storeBytes(of: dscpECN, toByteOffset: 1, as: UInt8.self)
        wireStore16(p, 2, UInt16(truncatingIfNeeded: Self.minHeaderLength &+ payloadLength))
        wireStore16(p, 4, identification)
        var ff = UInt16(truncatingIfNeeded: fragmentOffset >> 3) & 0x1FFF
        if dontFragment { ff |= Self.dontFragmentFlag }
        if moreFragments { ff |= Self.moreFragmentsFlag }
        wireStore16(p, 6, ff)
        p.storeBytes(of: ttl, toByteOffset: 8, as: UInt8.self)
        p.storeBytes(of: protocolNumber, toByteOffset: 9, as: UInt8.self)
        wireStore16(p, 10, 0)
        wireStore32(p, 12, source.value)
        wireStore32(p, 16, destination.value)
        wireStore16(p, 10, Checksum.compute(UnsafeRawPointer(p), count: Self.minHeaderLength))
    }
}
