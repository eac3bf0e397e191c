/// ICMPv4 (RFC 792): the 8-byte header common to all messages; echo and destination-unreachable
/// are what the stack generates.
public enum ICMPv4Type {
    public static let echoReply: UInt8 = 0
    public static let destinationUnreachable: UInt8 = 3
    public static let redirect: UInt8 = 5
    public static let echoRequest: UInt8 = 8
    public static let timeExceeded: UInt8 = 11
    public static let parameterProblem: UInt8 = 12
    public static let timestampRequest: UInt8 = 13

    /// Error messages, about which no error may be sent (RFC 1122 §3.2.2).
    @inlinable public static func isError(_ t: UInt8) -> Bool {
        t == destinationUnreachable || t == redirect || t == timeExceeded || t == parameterProblem || t == 4
    }
}

public enum ICMPv4UnreachableCode {
    public static let network: UInt8 = 0
    public static let host: UInt8 = 1
    public static let protocolUnreachable: UInt8 = 2
    public static let port: UInt8 = 3
    public static let fragmentationNeeded: UInt8 = 4
}

/// Non-owning view of an ICMPv4 message (header + body).
public struct ICMPv4View {
    public static let headerLength = 8
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer, verifyChecksum: Bool = true) throws(WireError) {
        guard bytes.count >= Self.headerLength, let p = bytes.baseAddress else {
            throw .truncated(needed: Self.headerLength, available: bytes.count)
        }
        if verifyChecksum, Checksum.compute(p, count: bytes.count) != 0 { throw .badChecksum }
        self.bytes = bytes
    }
    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var type: UInt8 { base.load(as: UInt8.self) }
    @inlinable public var code: UInt8 { base.load(fromByteOffset: 1, as: UInt8.self) }
    @inlinable public var checksum: UInt16 { wireLoad16(base, 2) }
    /// Echo identifier / sequence (meaningful for echo request/reply).
    @inlinable public var identifier: UInt16 { wireLoad16(base, 4) }
    @inlinable public var sequence: UInt16 { wireLoad16(base, 6) }
    /// Next-hop MTU of a fragmentation-needed message (RFC 1191).
    @inlinable public var nextHopMTU: UInt16 { wireLoad16(base, 6) }
    /// Bytes after the 8-byte header: echo data, or the quoted datagram of an error.
    @inlinable public var body: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[Self.headerLength...]) }

    /// Writes an 8-byte header with `rest` as the last 4 bytes and the checksum over
    /// header + the `bodyLength` bytes that must already follow it at `p + 8`.
    @inlinable
    public static func emit(into p: UnsafeMutableRawPointer, type: UInt8, code: UInt8, rest: UInt32, bodyLength: Int) {
        p.storeBytes(of: type, as: UInt8.self)
        p.storeBytes(of: code, toByteOffset: 1, as: UInt8.self)
        wireStore16(p, 2, 0)
        wireStore32(p, 4, rest)
        wireStore16(p, 2, Checksum.compute(UnsafeRawPointer(p), count: Self.headerLength &+ bodyLength))
    }
}
