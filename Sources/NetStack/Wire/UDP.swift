/// UDP (RFC 768): the 8-byte header; the checksum covers the IPv4 or IPv6 pseudo-header. Over
/// IPv4 it is optional (0 = not computed) on receive; over IPv6 it is mandatory (RFC 8200 §8.1:
/// a zero checksum is dropped). We always compute it when sending.
public struct UDPHeaderView {
    public static let headerLength = 8
    public let bytes: UnsafeRawBufferPointer   // exactly `length` bytes

    @inlinable public init(_ buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= Self.headerLength, let p = buffer.baseAddress else {
            throw .truncated(needed: Self.headerLength, available: buffer.count)
        }
        let length = Int(wireLoad16(p, 4))
        guard length >= Self.headerLength, length <= buffer.count else {
            throw .badLength(field: length, available: buffer.count)
        }
        bytes = UnsafeRawBufferPointer(start: p, count: length)
    }
    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var sourcePort: UInt16 { wireLoad16(base, 0) }
    @inlinable public var destinationPort: UInt16 { wireLoad16(base, 2) }
    @inlinable public var length: Int { bytes.count }
    @inlinable public var checksum: UInt16 { wireLoad16(base, 6) }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[Self.headerLength...]) }

    /// True if the checksum is absent (0) or verifies against the pseudo-header.
    @inlinable public func checksumValid(source: IPAddress, destination: IPAddress) -> Bool {
        if checksum == 0 { return source.isV4 }
        let s = Checksum.pseudoHeader(src: source, dst: destination, proto: IPProtocol.udp, length: bytes.count)
        return Checksum.finish(Checksum.partial(base, count: bytes.count, initial: s)) == 0
    }

    /// Writes the header at `p`; `checksum` is the final value (see `checksum(...)`).
    @inlinable
    public static func emit(into p: UnsafeMutableRawPointer, sourcePort: UInt16, destinationPort: UInt16,
                            payloadLength: Int, checksum: UInt16 = 0) {
        wireStore16(p, 0, sourcePort)
        wireStore16(p, 2, destinationPort)
        wireStore16(p, 4, UInt16(truncatingIfNeeded: Self.headerLength &+ payloadLength))
        wireStore16(p, 6, checksum)
    }

    /// The checksum of a datagram whose header (with checksum field 0) is at `header` and whose
    /// payload is at `payload` (they need not be contiguous, so fragmented sends need no copy).
    /// A computed 0 is sent as 0xFFFF (RFC 768).
    @inlinable
    public static func checksum(source: IPAddress, destination: IPAddress,
                                header: UnsafeRawPointer, payload: UnsafeRawBufferPointer) -> UInt16 {
        var s = Checksum.pseudoHeader(src: source, dst: destination, proto: IPProtocol.udp,
                                      length: Self.headerLength &+ payload.count)
        s = Checksum.partial(header, count: Self.headerLength, initial: s)
        if let pp = payload.baseAddress { s = Checksum.partial(pp, count: payload.count, initial: s) }
        let c = Checksum.finish(s)
        return c == 0 ? 0xFFFF : c
    }
}
