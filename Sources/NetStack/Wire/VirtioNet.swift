/// `struct virtio_net_hdr` (linux/virtio_net.h): the 10 bytes a TAP opened with IFF_VNET_HDR puts
/// before every frame, both ways. It says how a frame's checksum and segmentation stand:
///
/// - `flags`: NEEDS_CSUM — the L4 checksum is not computed: the field holds the pseudo-header sum
///   only, and the sum over [csum_start, end) goes at csum_start + csum_offset (the kernel leaves
///   it so for frames its own stack sent, which never cross a wire); DATA_VALID — the kernel
///   already verified it.
/// - `gso_type` (TCPV4, TCPV6, UDP_L4, plus the ECN bit) with `gso_size`: the frame is a
///   super-frame of up to 64 KiB whose payload is cut into `gso_size`-byte pieces on a real link
///   (the headers are repeated, lengths, sequence numbers and checksums fixed per piece).
/// - `hdr_len`: how many bytes are headers (a hint).
///
/// Fields are little-endian: a TAP uses the host's order unless TUNSETVNETBE is set, and every
/// platform ztap runs on is little-endian. `num_buffers` (12-byte header) only exists with
/// mergeable receive buffers, which a TAP never uses.
public struct VirtioNetHeader: Hashable, Sendable {
    public static let length = 10

    public static let flagNeedsChecksum: UInt8 = 1
    public static let flagDataValid: UInt8 = 2

    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3        // UFO (whole datagrams fragmented): never offered
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoUDPL4: UInt8 = 5      // USO: UDP_SEGMENT, one datagram per piece
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8
    public var gsoType: UInt8
    public var headerLength: UInt16
    public var gsoSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads the 10 bytes at `p` (every bit pattern is a header; meaning is checked by
    /// `FrameOffload(virtio:)`).
    @inlinable public init(loading p: UnsafeRawPointer) {
        flags = p.load(as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    /// Writes the 10 bytes at `p`.
    @inlinable public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }
}
