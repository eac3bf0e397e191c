/// Neighbor Discovery messages (RFC 4861 §4.3, §4.4) and their options (§4.6), and the MLDv2
/// report (RFC 3810 §5.2) the stack sends for its solicited-node groups.
///
/// A Neighbor Solicitation or Advertisement is the ICMPv6 header (type, code, checksum, 4 bytes:
/// reserved or the R/S/O flags), the 16-byte target address, then options: type, length in units
/// of 8 bytes (0 is invalid), data. The link-layer address options carry a 6-byte MAC.
public enum NDPOption {
    public static let sourceLinkLayerAddress: UInt8 = 1
    public static let targetLinkLayerAddress: UInt8 = 2
}

public enum NDPFlag {
    public static let router: UInt32 = 0x8000_0000
    public static let solicited: UInt32 = 0x4000_0000
    public static let override: UInt32 = 0x2000_0000
}

/// A received NS or NA (after the ICMPv6 checksum was verified): target and the one link-layer
/// address option that matters. The checked init rejects what RFC 4861 §7.1 says to discard:
/// code not 0, shorter than 24 bytes, a multicast target, an option of length 0 or running past
/// the end.
public struct NDPMessageView {
    public static let minLength = 24
    public let bytes: UnsafeRawBufferPointer
    /// The source (NS) or target (NA) link-layer address option, if present.
    public let linkLayerAddress: MACAddress?

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.minLength, let p = bytes.baseAddress else {
            throw .truncated(needed: Self.minLength, available: bytes.count)
        }
        guard p.load(fromByteOffset: 1, as: UInt8.self) == 0 else { throw .unsupported(field: .icmpCode, value: 1) }
        let type = p.load(as: UInt8.self)
        let want = type == ICMPv6Type.neighborSolicitation ? NDPOption.sourceLinkLayerAddress : NDPOption.targetLinkLayerAddress
        var lla: MACAddress?
        var off = Self.minLength
        while off < bytes.count {
            guard off &+ 2 <= bytes.count else { throw .badOption(kind: 0, offset: off) }
            let kind = p.load(fromByteOffset: off, as: UInt8.self)
            let len = Int(p.load(fromByteOffset: off &+ 1, as: UInt8.self)) &* 8
            guard len > 0, off &+ len <= bytes.count else { throw .badOption(kind: kind, offset: off) }
            if kind == want && len >= 8 { lla = MACAddress(loadingFrom: p + (off &+ 2)) }
            off &+= len
        }
        self.bytes = bytes
        linkLayerAddress = lla
        guard !target.isMulticast else { throw .unsupported(field: .ndpTarget, value: UInt32(target.hi >> 32)) }
    }
    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var type: UInt8 { base.load(as: UInt8.self) }
    @inlinable public var flags: UInt32 { wireLoad32(base, 4) }
    @inlinable public var target: IPAddress { IPAddress(loadingFrom: base + 8) }

    /// Writes an NS or NA (24 bytes, plus 8 for a link-layer address option when `mac` is given)
    /// at `p`, checksum zero; returns the length.
    @inlinable
    public static func emit(into p: UnsafeMutableRawPointer, type: UInt8, flags: UInt32, target: IPAddress,
                            option: UInt8, mac: MACAddress?) -> Int {
        p.storeBytes(of: type, as: UInt8.self)
        p.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
        wireStore16(p, 2, 0)
        wireStore32(p, 4, flags)
        target.store(to: p + 8)
        guard let mac else { return minLength }
        p.storeBytes(of: option, toByteOffset: 24, as: UInt8.self)
        p.storeBytes(of: 1, toByteOffset: 25, as: UInt8.self)
        mac.store(to: p + 26)
        return minLength &+ 8
    }
}

/// MLDv2 (RFC 3810): the query's maximum response delay, and the report.
public enum MLDv2 {
    /// ff02::16, where reports go.
    public static let allRouters = IPAddress(hi: 0xFF02_0000_0000_0000, lo: 0x16)
    /// Record types: a group's state (answering a query) and a change to it (joining).
    public static let modeIsExclude: UInt8 = 2
    public static let changeToExclude: UInt8 = 4

    /// Maximum response delay of a query (MLDv1 or v2 format), in milliseconds.
    @inlinable public static func maxResponseDelay(_ icmp: UnsafeRawBufferPointer) -> Int {
        guard icmp.count >= 24, let p = icmp.baseAddress else { return 0 }
        let code = Int(wireLoad16(p, 4))
        if icmp.count == 24 || code < 32768 { return code }
        // RFC 3810 §5.1.3: floating point form.
        let exp = (code >> 12) & 7, mant = code & 0xFFF
        return (mant | 0x1000) << (exp &+ 3)
    }
}
