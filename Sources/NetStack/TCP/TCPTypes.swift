/// Public configuration and introspection types of the TCP layer.

/// Congestion control algorithm of a connection. CUBIC (RFC 9438) is the default; NewReno
/// (RFC 5681/6582) is kept for comparison and for peers on short paths.
public enum CongestionControl: Sendable, Hashable { case newReno, cubic }

/// Layer-wide TCP defaults. Durations are stack-clock durations.
public struct TCPConfig: Sendable {
    /// The most a connection's receive/send ring grows to (TCPBufferTuning.swift).
    public var receiveBufferSize = 4 << 20
    public var sendBufferSize = 4 << 20
    /// Where the rings start (the receive one at least 64 KiB: a SYN advertises up to 65535).
    public var initialReceiveBuffer = 64 << 10
    public var initialSendBuffer = 64 << 10
    /// How long a ring grown past 64 KiB stays empty before its memory goes back.
    public var ringIdleRelease = Duration.seconds(1)
    /// MSS assumed when the peer sends none (RFC 9293 §3.7.1).
    public var mssDefault = 536
    public var congestionControl: CongestionControl = .cubic
    public var noDelay = false
    public var delayedAckTimeout = Duration.milliseconds(40)
    /// Lower bound of the retransmission timeout. RFC 6298 says 1 s; like Linux we use 200 ms,
    /// which suits today's paths and recovers from tail losses much faster.
    public var minRTO = Duration.milliseconds(200)
    public var maxRTO = Duration.seconds(60)
    public var initialRTO = Duration.seconds(1)
    /// Data retransmissions of one segment before the connection fails with `.timedOut`.
    public var maxRetransmissions = 15
    /// SYN / SYN-ACK retransmissions before giving up.
    public var synRetries = 6
    /// 2*MSL: how long TIME-WAIT lasts.
    public var timeWait = Duration.seconds(60)
    /// An outgoing connection may take over a TIME-WAIT of its 4-tuple that used timestamps
    /// once this long passed since its last segment (Linux's tcp_tw_reuse, RFC 6191).
    public var timeWaitReuse = true
    public var timeWaitReuseDelay = Duration.seconds(1)
    /// How long an orphaned connection may sit in FIN-WAIT-2.
    public var finTimeout = Duration.seconds(60)
    /// Whether new sockets start with keepalive on (SO_KEEPALIVE; per socket via `setOption`).
    public var keepAlive = false
    public var keepAliveIdle = Duration.seconds(7200)
    public var keepAliveInterval = Duration.seconds(75)
    public var keepAliveCount = 9
    /// Embryonic (SYN-RECEIVED) connections per listener before SYN cookies take over.
    public var maxSynQueue = 1024
    public var maxConnections = 65536
    /// Whether SYN cookies answer SYNs once the SYN queue is full (otherwise they are dropped).
    public var synCookies = true
    public var windowScaling = true
    public var timestamps = true
    public var sack = true
    /// Out-of-order ranges kept per connection; more holes than this and later segments are dropped.
    public var maxOutOfOrderRanges = 32
    /// Segments acknowledged immediately at the start of a connection (quick-ack).
    public var quickAckSegments = 16
    /// Initial congestion window in segments (RFC 6928).
    public var initialWindowSegments = 10
    public init() {}
}

/// Connection states, named after RFC 9293 §3.3.2.
public enum TCPState: String, Sendable, Hashable {
    case closed, listen, synSent, synReceived, established, finWait1, finWait2, closeWait, closing, lastAck, timeWait

    /// The RFC's spelling (`SYN-SENT`, `TIME-WAIT`), as `ss` and `ztctl connections` show it.
    public var displayName: String {
        switch self {
        case .closed: "CLOSED"
        case .listen: "LISTEN"
        case .synSent: "SYN-SENT"
        case .synReceived: "SYN-RECEIVED"
        case .established: "ESTABLISHED"
        case .finWait1: "FIN-WAIT-1"
        case .finWait2: "FIN-WAIT-2"
        case .closeWait: "CLOSE-WAIT"
        case .closing: "CLOSING"
        case .lastAck: "LAST-ACK"
        case .timeWait: "TIME-WAIT"
        }
    }
}

/// Per-socket options.
public enum TCPOption: Sendable, Hashable {
    case noDelay(Bool)
    case keepAlive(Bool)
    /// nil = default graceful close; .zero = close aborts with RST; other values are accepted
    /// and behave like the default (the layer never blocks).
    case linger(Duration?)
    /// Only before the buffers exist (listener or not yet connected) or while they are empty.
    case receiveBufferSize(Int)
    case sendBufferSize(Int)
    case congestionControl(CongestionControl)
}

/// A snapshot of one connection for `ztctl connections` and tests.
public struct TCPSocketInfo: Sendable, Hashable {
    public var state: TCPState
    public var local: IPv4Endpoint
    public var remote: IPv4Endpoint?
    public var bytesReceived: UInt64
    public var bytesSent: UInt64
    public var srtt: Duration?
    public var rto: Duration
    public var cwnd: Int
    public var ssthresh: Int
    public var retransmissions: UInt64
    public var sendQueue: Int
    public var receiveQueue: Int
    public var peerWindow: Int
    /// Negotiated send MSS (payload bytes per segment before options).
    public var mss: Int = 0
    public var windowScaling: Bool = false
    public var timestamps: Bool = false
    public var sack: Bool = false
    public var congestionControl: CongestionControl = .cubic
}
