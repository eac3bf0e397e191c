/// Where the stack's outgoing Ethernet frames go (the TAP writer in the daemon, a fake link in
/// tests). Called synchronously from `NetStack.receive`/`poll`/`udpSend`; the buffer is only
/// valid during the call.
public protocol FrameSink: AnyObject {
    func sendFrame(_ frame: UnsafeRawBufferPointer)
    /// What the sink takes besides plain frames (default: nothing). Read when the stack is made
    /// and by `NetStack.refreshOffloads()`.
    var transmitOffloads: TransmitOffloads { get }
    /// One frame as its headers (`head`: Ethernet through L4) and its payload in up to two
    /// pieces, with its offload state. The stack calls it only as `transmitOffloads` allows.
    func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                   offload: FrameOffload)
}

/// The RFC 862/863/864 diagnostic services the stack can answer by itself (benchmark targets).
public enum DiagnosticService: String, Sendable, CaseIterable {
    case echo       // TCP + UDP port 7
    case discard    // TCP port 9
    case chargen    // TCP port 19
}

/// Static configuration of one NetStack interface.
public struct StackConfig: Sendable {
    public static let mtuRange = 1280...65535

    public var mac: MACAddress
    /// IP MTU of the link (bytes of IP datagram per frame), clamped to `mtuRange`.
    public var mtu: Int
    public var addresses: [IPv4CIDR]
    /// Next hop for destinations outside every address's subnet (must be on-link).
    public var gateway: IPv4Address?
    /// IPv6 addresses with their on-link prefixes (the link-local address is added by itself).
    public var addresses6: [IPv6CIDR] = []
    /// IPv6 next hop for destinations off every prefix: link-local or inside a prefix.
    public var gateway6: IPAddress?
    /// Whether the interface has its EUI-64 link-local address (fe80::/64, RFC 4862 §5.3).
    public var linkLocal = true
    /// Duplicate Address Detection (RFC 4862 §5.4): solicitations per address, and the wait
    /// after each; 0 transmissions makes addresses usable at once (Linux's accept_dad=0).
    public var dadTransmits = 1
    public var dadRetransTimer = Duration.seconds(1)
    /// IPv6 fragment reassembly timeout (RFC 8200 §4.5: 60 s).
    public var reassemblyTimeout6 = Duration.seconds(60)
    /// How long a path MTU learned from a packet too big holds (RFC 8201 §4: at least 5 min).
    public var pathMTUTimeout = Duration.seconds(600)
    public var pathMTUMaxEntries = 256
    public var tcp: TCPConfig
    public var services: Set<DiagnosticService>
    /// Ports `bind` and `connect` pick from when asked for port 0 (see `PortTable`).
    public var ephemeralPorts: ClosedRange<UInt16> = PortTable.defaultEphemeral
    /// Per-UDP-socket receive queue bounds.
    public var udpQueueDatagrams = 256
    public var udpQueueBytes = 1 << 20
    /// ARP and Neighbor Discovery alike: how long a confirmed neighbor stays reachable, retry
    /// interval, tries before giving up, cache size.
    public var arpReachableTime = Duration.seconds(60)
    public var arpRetryInterval = Duration.seconds(1)
    public var arpMaxTries = 3
    public var arpMaxEntries = 1024
    /// Frames held while a neighbor resolves: per destination, and in total for both families
    /// (preallocated).
    public var arpQueuePerNeighbor = 64
    public var arpQueueTotal = 64
    /// Fragment reassembly bounds.
    public var reassemblyTimeout = Duration.seconds(30)
    public var reassemblyMaxDatagrams = 8
    public var reassemblyMaxFragments = 128
    /// ICMP error token bucket (Linux defaults: 1000 per second, burst 50).
    public var icmpErrorsPerSecond = 1000
    public var icmpErrorBurst = 50

    public init(mac: MACAddress, mtu: Int = 2800, addresses: [IPv4CIDR], gateway: IPv4Address? = nil,
                tcp: TCPConfig = TCPConfig(), services: Set<DiagnosticService> = []) {
        self.mac = mac
        self.mtu = min(max(mtu, Self.mtuRange.lowerBound), Self.mtuRange.upperBound)
        self.addresses = addresses
        self.gateway = gateway
        self.tcp = tcp
        self.services = services
    }
}

/// Interface counters (monotonic; read with `NetStack.counters`).
public struct StackCounters: Sendable, Hashable {
    public var framesIn: UInt64 = 0
    public var framesOut: UInt64 = 0
    public var bytesIn: UInt64 = 0
    public var bytesOut: UInt64 = 0
    // Drops on input, by reason.
    public var droppedMalformed: UInt64 = 0     // truncated / bad version / bad lengths
    public var droppedChecksum: UInt64 = 0      // IPv4 header, ICMP or UDP checksum
    public var droppedNotForUs: UInt64 = 0      // other MAC / other IP / unknown EtherType
    public var droppedNoSocket: UInt64 = 0      // UDP to a closed port
    public var droppedUnsupported: UInt64 = 0   // unknown IP protocol, non-Ethernet ARP...
    public var droppedMartian: UInt64 = 0       // impossible source address
    public var droppedUDPQueueFull: UInt64 = 0
    // ARP
    public var arpRequestsSent: UInt64 = 0
    public var arpRepliesSent: UInt64 = 0
    public var arpRequestsReceived: UInt64 = 0
    public var arpRepliesReceived: UInt64 = 0
    public var arpQueued: UInt64 = 0            // frames held while resolving
    public var arpQueueDrops: UInt64 = 0        // queue full
    public var arpUnresolvedDrops: UInt64 = 0   // frames dropped because resolution failed (hostUnreachable)
    public var arpFailures: UInt64 = 0          // resolutions given up
    // IPv4
    public var noRoute: UInt64 = 0
    /// `transmit` calls that asked for more than the MTU and then wrote nothing (lost segments).
    public var oversizeTransmits: UInt64 = 0
    public var fragmentsIn: UInt64 = 0
    public var reassembled: UInt64 = 0
    public var reassemblyOverlaps: UInt64 = 0
    public var reassemblyTimeouts: UInt64 = 0
    public var reassemblyDrops: UInt64 = 0      // invalid fragments, eviction, too many fragments
    public var fragmentsOut: UInt64 = 0
    // ICMP
    public var icmpEchoRequests: UInt64 = 0
    public var icmpEchoReplies: UInt64 = 0
    public var icmpErrorsSent: UInt64 = 0
    public var icmpErrorsRateLimited: UInt64 = 0
    public var icmpErrorsReceived: UInt64 = 0
    // UDP
    public var udpDatagramsIn: UInt64 = 0
    public var udpDatagramsOut: UInt64 = 0
    public var tcpSegmentsIn: UInt64 = 0
    // IPv6 (fragments, reassembly, ICMP errors and echo share the counters above)
    public var ipv6PacketsIn: UInt64 = 0
    /// Parameter problems sent: bad extension headers, unknown next headers and options.
    public var ipv6ParameterProblems: UInt64 = 0
    public var ndSolicitationsSent: UInt64 = 0
    public var ndSolicitationsReceived: UInt64 = 0
    public var ndAdvertisementsSent: UInt64 = 0
    public var ndAdvertisementsReceived: UInt64 = 0
    public var ndQueued: UInt64 = 0
    public var ndQueueDrops: UInt64 = 0
    public var ndUnresolvedDrops: UInt64 = 0
    public var ndFailures: UInt64 = 0
    /// Our addresses found in use by another node (duplicate address detection).
    public var dadConflicts: UInt64 = 0
    public var mldReportsSent: UInt64 = 0
    public var packetTooBigReceived: UInt64 = 0
    // Offloads (see `FrameOffload`)
    /// Super-frames taken whole (TCP) or split into datagrams (UDP) on input.
    public var superFramesIn: UInt64 = 0
    /// TCP super-segments handed to the sink for the kernel to cut up.
    public var superFramesOut: UInt64 = 0

    public init() {}

    /// All input drops together.
    public var dropped: UInt64 {
        droppedMalformed &+ droppedChecksum &+ droppedNotForUs &+ droppedNoSocket &+ droppedUnsupported
            &+ droppedMartian &+ droppedUDPQueueFull
    }
}
