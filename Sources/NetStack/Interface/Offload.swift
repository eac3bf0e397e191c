/// Offloads between the stack and its link (a TAP with IFF_VNET_HDR): what one frame's checksum
/// and segmentation state is (`FrameOffload`, both ways), and what a sink lets the stack leave
/// to the kernel (`TransmitOffloads`). Without offloads (a plain TAP, NetSim, the fuzzer) every
/// frame is `.none`: checksums complete and verified here, one MTU-sized packet per frame.

/// The offload state of one frame. Plain value, no allocation: it rides along with the frame.
public struct FrameOffload: Hashable, Sendable {
    public enum Segmentation: UInt8, Sendable {
        case none
        /// A TCP/IPv4 super-segment: payload cut into `segmentSize`-byte segments on the wire.
        case tcp4
        /// A UDP super-datagram (USO, either family: the kernel's UDP_L4): payload cut into
        /// `segmentSize`-byte datagrams.
        case udp4
        /// A TCP/IPv6 super-segment.
        case tcp6
    }
    public enum Checksum: UInt8, Sendable {
        /// Nothing is known: verify the L4 checksum (a frame without a virtio header).
        case unverified
        /// The kernel verified the L4 checksum (DATA_VALID).
        case valid
        /// The L4 checksum field holds only the pseudo-header sum; the sum over the bytes from
        /// `checksumStart` belongs at `checksumStart + checksumOffset` (NEEDS_CSUM). From the
        /// kernel this means the frame never left the host: nothing to verify.
        case partial
    }

    public var segmentation: Segmentation
    /// Payload bytes per segment (gso_size); meaningful with `segmentation`.
    public var segmentSize: Int
    public var checksum: Checksum
    /// With `.partial`: offset of the first summed byte from the Ethernet header, and of the
    /// checksum field from there.
    public var checksumStart: Int
    public var checksumOffset: Int

    public init(segmentation: Segmentation = .none, segmentSize: Int = 0, checksum: Checksum = .unverified,
                checksumStart: Int = 0, checksumOffset: Int = 0) {
        self.segmentation = segmentation
        self.segmentSize = segmentSize
        self.checksum = checksum
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// A plain frame: nothing offloaded.
    public static let none = FrameOffload()

    @inlinable public var isNone: Bool { segmentation == .none && checksum == .unverified }

    /// The state a virtio header describes, or nil for one this stack cannot take (UFO, a GSO
    /// type without a segment size): such frames are dropped. The ECN
    /// bit only says the first segment carries CWR, which changes nothing for a receiver.
    @inlinable public init?(virtio h: VirtioNetHeader) {
        var o = FrameOffload()
        switch h.gsoType & ~VirtioNetHeader.gsoECN {
        case VirtioNetHeader.gsoNone: break
        case VirtioNetHeader.gsoTCPv4: o.segmentation = .tcp4
        case VirtioNetHeader.gsoTCPv6: o.segmentation = .tcp6
        case VirtioNetHeader.gsoUDPL4: o.segmentation = .udp4
        default: return nil
        }
        if o.segmentation != .none {
            guard h.gsoSize > 0 else { return nil }
            o.segmentSize = Int(h.gsoSize)
        }
        if h.flags & VirtioNetHeader.flagNeedsChecksum != 0 {
            o.checksum = .partial
            o.checksumStart = Int(h.checksumStart)
            o.checksumOffset = Int(h.checksumOffset)
        } else if h.flags & VirtioNetHeader.flagDataValid != 0 {
            o.checksum = .valid
        }
        self = o
    }

    /// The virtio header for a frame with this state whose headers (through L4) take
    /// `headerLength` bytes.
    @inlinable public func virtioHeader(headerLength: Int) -> VirtioNetHeader {
        var h = VirtioNetHeader()
        switch segmentation {
        case .none: break
        case .tcp4: h.gsoType = VirtioNetHeader.gsoTCPv4
        case .tcp6: h.gsoType = VirtioNetHeader.gsoTCPv6
        case .udp4: h.gsoType = VirtioNetHeader.gsoUDPL4
        }
        if segmentation != .none {
            h.gsoSize = UInt16(clamping: segmentSize)
            h.headerLength = UInt16(clamping: headerLength)
        }
        switch checksum {
        case .partial:
            h.flags = VirtioNetHeader.flagNeedsChecksum
            h.checksumStart = UInt16(clamping: checksumStart)
            h.checksumOffset = UInt16(clamping: checksumOffset)
        case .valid:
            h.flags = VirtioNetHeader.flagDataValid
        case .unverified:
            break
        }
        return h
    }
}

/// What a `FrameSink` takes besides complete, MTU-sized frames in one buffer.
public struct TransmitOffloads: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// `sendFrame(head:payload:offload:)`: headers and payload in separate buffers (writev), so
    /// TCP data goes from the send ring to the link with no copy in between.
    public static let gather = TransmitOffloads(rawValue: 1)
    /// Frames with `.partial` checksums (the kernel's CHECKSUM_PARTIAL). Needs `gather`.
    public static let checksum = TransmitOffloads(rawValue: 2)
    /// TCP super-segments up to 64 KiB, IPv4 and IPv6 (the kernel's TSO/GSO). Needs `checksum`.
    public static let tcpSegmentation = TransmitOffloads(rawValue: 4)

    public static let all: TransmitOffloads = [.gather, .checksum, .tcpSegmentation]
}

extension FrameSink {
    public var transmitOffloads: TransmitOffloads { [] }

    /// Fallback for a sink that lists `.gather` without implementing it: flattens (allocates;
    /// never the data path of a real sink).
    public func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer,
                          _ more: UnsafeRawBufferPointer, offload: FrameOffload) {
        var bytes = [UInt8](head)
        bytes.append(contentsOf: payload)
        bytes.append(contentsOf: more)
        bytes.withUnsafeBytes { sendFrame($0) }
    }
}

/// The largest TCP super-segment (TCP header + payload) the stack builds: what fits an IPv4
/// total length with a 20-byte IP header (used for IPv6 too, whose payload length would allow 20
/// bytes more).
public let maxSegmentationL4 = 65535 &- IPv4HeaderView.minHeaderLength
