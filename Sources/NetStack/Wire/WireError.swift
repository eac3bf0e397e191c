/// Why a wire view refused a buffer. Views throw it from their checked initialisers; after a view
/// has been built, none of its getters can trap.
public enum WireError: Error, Hashable, Sendable {
    /// The buffer holds `available` bytes but the format needs at least `needed`.
    case truncated(needed: Int, available: Int)
    /// Version field is not the one this view parses (IPv4: 4).
    case badVersion(UInt8)
    /// A header-length field is impossible (IPv4 IHL < 5, TCP data offset < 5, or past the buffer).
    case badHeaderLength(Int)
    /// A length field disagrees with the header or the buffer.
    case badLength(field: Int, available: Int)
    /// The checksum does not verify.
    case badChecksum
    /// Well-formed, but a variant we do not speak (e.g. ARP for a non-Ethernet hardware type).
    case unsupported(field: WireField, value: UInt32)
    /// An option is malformed (length 0/1, runs past the header, wrong length for its kind).
    case badOption(kind: UInt8, offset: Int)
}

/// Names the field behind `WireError.unsupported` without allocating a String.
public enum WireField: String, Hashable, Sendable {
    case hardwareType, protocolType, hardwareLength, protocolLength, operation, etherType, ipProtocol, icmpCode,
         ndpTarget
}

@inlinable func wireLoad16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 {
    UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}
@inlinable func wireLoad32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
    UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}
@inlinable func wireStore16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt16) {
    p.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt16.self)
}
@inlinable func wireStore32(_ p: UnsafeMutableRawPointer, _ offset: Int, _ v: UInt32) {
    p.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt32.self)
}
