/// Ethernet II framing: 14-byte header (destination, source, EtherType), no 802.1Q, no FCS
/// (the TAP device strips it). Payload may carry trailing padding up to the 60-byte minimum;
/// upper layers trim by their own length fields.
public enum EtherType {
    public static let ipv4: UInt16 = 0x0800
    public static let arp: UInt16 = 0x0806
    public static let ipv6: UInt16 = 0x86DD
}

/// Non-owning view of an Ethernet II frame. After the checked init no getter can trap.
public struct EthernetHeaderView {
    public static let headerLength = 14
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength, bytes.baseAddress != nil else {
            throw .truncated(needed: Self.headerLength, available: bytes.count)
        }
        self.bytes = bytes
    }
    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var destination: MACAddress { MACAddress(loadingFrom: base) }
    @inlinable public var source: MACAddress { MACAddress(loadingFrom: base + 6) }
    @inlinable public var etherType: UInt16 { wireLoad16(base, 12) }
    @inlinable public var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Self.headerLength...])
    }

    /// Writes the 14-byte header at `p`.
    @inlinable
    public static func emit(into p: UnsafeMutableRawPointer, destination: MACAddress, source: MACAddress,
                            etherType: UInt16) {
        destination.store(to: p)
        source.store(to: p + 6)
        wireStore16(p, 12, etherType)
    }
}
