/// ICMPv6 (RFC 4443) message types and codes, and the 8-byte header every message starts with.
/// The checksum covers the IPv6 pseudo-header (RFC 4443 §2.3), so it is verified by the input
/// path, which knows the addresses, not by the view.
public enum ICMPv6Type {
    public static let destinationUnreachable: UInt8 = 1
    public static let packetTooBig: UInt8 = 2
    public static let timeExceeded: UInt8 = 3
    public static let parameterProblem: UInt8 = 4
    public static let echoRequest: UInt8 = 128
    public static let echoReply: UInt8 = 129
    public static let mldQuery: UInt8 = 130
    public static let mldv2Report: UInt8 = 143
    public static let routerSolicitation: UInt8 = 133
    public static let routerAdvertisement: UInt8 = 134
    public static let neighborSolicitation: UInt8 = 135
    public static let neighborAdvertisement: UInt8 = 136
    public static let redirect: UInt8 = 137

    /// Error messages have the high bit clear (RFC 4443 §2.1); no error is sent about one.
    @inlinable public static func isError(_ t: UInt8) -> Bool { t < 128 }
}

public enum ICMPv6UnreachableCode {
    public static let noRoute: UInt8 = 0
    public static let prohibited: UInt8 = 1
    public static let beyondScope: UInt8 = 2
    public static let address: UInt8 = 3
    public static let port: UInt8 = 4
}

public enum ICMPv6ParameterProblemCode {
    public static let erroneousHeader: UInt8 = 0
    public static let unrecognizedNextHeader: UInt8 = 1
    public static let unrecognizedOption: UInt8 = 2
}

/// Non-owning view of an ICMPv6 message (header + body); checksum not verified here.
public struct ICMPv6View {
    public static let headerLength = 8
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength, bytes.baseAddress != nil else {
            throw .truncated(needed: Self.headerLength, available: bytes.count)
        }
        self.bytes = bytes
    }
    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var type: UInt8 { base.load(as: UInt8.self) }
    @inlinable public var code: UInt8 { base.load(fromByteOffset: 1, as: UInt8.self) }
    @inlinable public var checksum: UInt16 { wireLoad16(base, 2) }
    /// The 4 bytes after the checksum: echo identifier and sequence, the MTU of a packet too big,
    /// the pointer of a parameter problem, the flags of a neighbor advertisement.
    @inlinable public var rest: UInt32 { wireLoad32(base, 4) }
    @inlinable public var identifier: UInt16 { wireLoad16(base, 4) }
    @inlinable public var sequence: UInt16 { wireLoad16(base, 6) }
    @inlinable public var body: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[Self.headerLength...]) }

    /// Whether the checksum verifies over the pseudo-header from `src` to `dst`.
    @inlinable public func checksumValid(source: IPAddress, destination: IPAddress) -> Bool {
        let s = Checksum.pseudoHeader(src: source, dst: destination, proto: IPProtocol.icmpv6, length: bytes.count)
        return Checksum.finish(Checksum.partial(base, count: bytes.count, initial: s)) == 0
    }
}
