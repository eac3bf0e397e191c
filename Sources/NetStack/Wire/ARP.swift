/// ARP for Ethernet/IPv4 only (RFC 826): 28-byte packets, request and reply.
public enum ARPOperation {
    public static let request: UInt16 = 1
    public static let reply: UInt16 = 2
}

/// Non-owning view of an Ethernet/IPv4 ARP packet. The checked init rejects other hardware or
/// protocol types, so the addresses are always 6 and 4 bytes at fixed offsets.
public struct ARPPacketView {
    public static let length = 28
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.length, let p = bytes.baseAddress else {
            throw .truncated(needed: Self.length, available: bytes.count)
        }
        let htype = wireLoad16(p, 0), ptype = wireLoad16(p, 2)
        guard htype == 1 else { throw .unsupported(field: .hardwareType, value: UInt32(htype)) }
        guard ptype == EtherType.ipv4 else { throw .unsupported(field: .protocolType, value: UInt32(ptype)) }
        let hlen = p.load(fromByteOffset: 4, as: UInt8.self), plen = p.load(fromByteOffset: 5, as: UInt8.self)
        guard hlen == 6 else { throw .unsupported(field: .hardwareLength, value: UInt32(hlen)) }
        guard plen == 4 else { throw .unsupported(field: .protocolLength, value: UInt32(plen)) }
        self.bytes = bytes
    }
    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var operation: UInt16 { wireLoad16(base, 6) }
    @inlinable public var senderHardwareAddress: MACAddress { MACAddress(loadingFrom: base + 8) }
    @inlinable public var senderProtocolAddress: IPv4Address { IPv4Address(wireLoad32(base, 14)) }
    @inlinable public var targetHardwareAddress: MACAddress { MACAddress(loadingFrom: base + 18) }
    @inlinable public var targetProtocolAddress: IPv4Address { IPv4Address(wireLoad32(base, 24)) }

    /// Writes a 28-byte Ethernet/IPv4 ARP packet at `p`.
    @inlinable
    public static func emit(into p: UnsafeMutableRawPointer, operation: UInt16,
                            senderMAC: MACAddress, senderIP: IPv4Address,
                            targetMAC: MACAddress, targetIP: IPv4Address) {
        wireStore16(p, 0, 1)
        wireStore16(p, 2, EtherType.ipv4)
        p.storeBytes(of: 6, toByteOffset: 4, as: UInt8.self)
        p.storeBytes(of: 4, toByteOffset: 5, as: UInt8.self)
        wireStore16(p, 6, operation)
        senderMAC.store(to: p + 8)
        wireStore32(p, 14, senderIP.value)
        targetMAC.store(to: p + 18)
        wireStore32(p, 24, targetIP.value)
    }
}
