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
    /// Longest a corked socket (TCP_CORK) holds a partial segment (Linux: 200 ms).
    public var corkLimit = Duration.milliseconds(200)
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
    /// Also on an established connection (Linux reinitialises the algorithm; cwnd stays).
    case congestionControl(CongestionControl)
    /// TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT: this socket's keepalive timing (the layer's
    /// `TCPConfig` values are only the defaults).
    case keepAliveIdle(Duration)
    case keepAliveInterval(Duration)
    case keepAliveCount(Int)
    /// TCP_CORK: hold partial segments until uncorked, at most `TCPConfig.corkLimit`.
    case cork(Bool)
    /// TCP_USER_TIMEOUT: fail with `.timedOut` once sent data stayed unacknowledged (or the
    /// peer's window closed, or keepalives unanswered) this long; `.zero` = off.
    case userTimeout(Duration)
    /// TCP_NOTSENT_LOWAT: writable (and `send` accepting) only while fewer than this many bytes
    /// wait unsent; nil = no limit.
    case notSentLowWater(Int?)
    /// TCP_DEFER_ACCEPT on a listener: a handshake's bare ACK is ignored until this many SYN-ACK
    /// timeouts passed, so the connection is accepted once data arrives (0 = off).
    case deferAccept(retransmissions: Int)
    /// TCP_QUICKACK: true sends a pending ACK now and leaves delayed-ACK ("pingpong") mode,
    /// false enters it (no quick ACKs).
    case quickAck(Bool)
    /// TCP_WINDOW_CLAMP: the largest receive window advertised (0 = none).
    case windowClamp(Int)
    /// TCP_MAXSEG: the MSS advertised and sent with at most (0 = the path's).
    case maxSegment(Int)
    /// IP_TTL and IP_TOS of the segments sent (TOS: DSCP bits; ECN is the stack's).
    case timeToLive(UInt8)
    case typeOfService(UInt8)
    /// IPV6_UNICAST_HOPS and IPV6_TCLASS of the segments sent over IPv6.
    case hopLimit(UInt8)
    case trafficClass(UInt8)
    /// TCP_SYNCNT: SYN (or SYN-ACK) retransmissions before giving up.
    case synRetries(Int)
    /// TCP_LINGER2: how long an orphaned connection stays in FIN-WAIT-2; nil = reset at once.
    case finWait2Timeout(Duration?)
    /// TCP_RTO_MIN_US / TCP_RTO_MAX_MS: this socket's RTO bounds.
    case minRTO(Duration)
    case maxRTO(Duration)
    /// TCP_DELACK_MAX_US: the longest an ACK is delayed.
    case delayedAckMax(Duration)
}

/// The per-socket settings a listener hands to the connections it accepts (beyond the older
/// fields of `TCPListener`/`TCPConnection`), defaults from `TCPConfig`.
public struct TCPSocketOptions: Sendable, Hashable {
    public var keepAliveIdle: Duration
    public var keepAliveInterval: Duration
    public var keepAliveCount: Int
    public var cork = false
    public var userTimeout = Duration.zero
    public var notSentLowWater: Int?
    public var windowClamp = 0
    public var maxSegment = 0
    public var timeToLive: UInt8 = 64
    public var typeOfService: UInt8 = 0
    public var hopLimit: UInt8 = 64
    public var trafficClass: UInt8 = 0
    public var synRetries: Int
    public var finWait2Timeout: Duration?
    public var delayedAckMax: Duration
    public var minRTO: Duration
    public var maxRTO: Duration
    /// Listeners only.
    public var deferAccept = 0

    public init(_ c: TCPConfig) {
        keepAliveIdle = c.keepAliveIdle
        keepAliveInterval = c.keepAliveInterval
        keepAliveCount = c.keepAliveCount
        synRetries = c.synRetries
        finWait2Timeout = c.finTimeout
        delayedAckMax = .milliseconds(200)   // Linux's TCP_DELACK_MAX: a cap; the delay itself is the config's
        minRTO = c.minRTO
        maxRTO = c.maxRTO
    }
}

/// Where the sender is in loss recovery (Linux's tcp_ca_state, as TCP_INFO reports it).
public enum TCPRecoveryState: UInt8, Sendable, Hashable {
    case open = 0, disorder = 1, cwr = 2, recovery = 3, loss = 4
}

/// A snapshot of one connection for `ztctl connections` and tests.
public struct TCPSocketInfo: Sendable, Hashable {
    public var state: TCPState
    public var local: IPEndpoint
    public var remote: IPEndpoint?
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

    // What TCP_INFO and `ztctl connections` show beyond the above. Durations are nil until
    // known; counts of segments are Linux's "packets".
    /// RTT variation (RFC 6298 RTTVAR) and the smallest RTT seen.
    public var rttVariance: Duration?
    public var minRTT: Duration?
    /// Bytes sent and not yet acknowledged (SND.MAX - SND.UNA) and queued but not sent yet.
    public var bytesInFlight: Int = 0
    public var notSentBytes: Int = 0
    public var recoveryState: TCPRecoveryState = .open
    /// Retransmission timeouts in a row (tcpi_retransmits) and the RTO backoff (tcpi_backoff).
    public var consecutiveTimeouts: Int = 0
    public var backoff: Int = 0
    /// Keepalive or zero-window probes sent without an answer.
    public var probes: Int = 0
    public var sendWindowShift: Int = 0
    public var receiveWindowShift: Int = 0
    /// MSS we advertised and the largest segment the peer sent.
    public var advertisedMss: Int = 0
    public var receiveMss: Int = 0
    public var pathMTU: Int = 0
    public var delayedAckTimeout: Duration = .zero
    /// Segments in flight, SACKed, marked lost, and retransmitted still in flight.
    public var unackedSegments: Int = 0
    public var sackedSegments: Int = 0
    public var lostSegments: Int = 0
    public var retransmittedSegments: Int = 0
    /// Time since the last data sent, data received and ACK received.
    public var sinceDataSent: Duration?
    public var sinceDataReceived: Duration?
    public var sinceAckReceived: Duration?
    /// The receive window last advertised and the space there is.
    public var receiveWindow: Int = 0
    public var receiveSpace: Int = 0
    /// Bytes acknowledged by the peer, sent (retransmissions included) and retransmitted.
    public var bytesAcked: UInt64 = 0
    public var bytesSentTotal: UInt64 = 0
    public var bytesRetransmitted: UInt64 = 0
    public var segmentsOut: UInt64 = 0
    public var segmentsIn: UInt64 = 0
    public var dataSegmentsOut: UInt64 = 0
    public var dataSegmentsIn: UInt64 = 0
    public var outOfOrderSegmentsIn: UInt64 = 0
    /// Segments delivered to the peer (acknowledged or SACKed).
    public var deliveredSegments: UInt64 = 0
    /// Bytes per second acknowledged over the last round trip (0 until measured).
    public var deliveryRate: UInt64 = 0
    public var reorderingSeen: Bool = false
    /// Retransmission timeouts in total, recoveries they started, and the time spent in them.
    public var totalTimeouts: UInt64 = 0
    public var timeoutRecoveries: UInt64 = 0
    public var timeoutRecoveryTime: Duration = .zero

    public init(state: TCPState, local: IPEndpoint, remote: IPEndpoint?, bytesReceived: UInt64, bytesSent: UInt64,
                srtt: Duration?, rto: Duration, cwnd: Int, ssthresh: Int, retransmissions: UInt64, sendQueue: Int,
                receiveQueue: Int, peerWindow: Int) {
        self.state = state
        self.local = local
        self.remote = remote
        self.bytesReceived = bytesReceived
        self.bytesSent = bytesSent
        self.srtt = srtt
        self.rto = rto
        self.cwnd = cwnd
        self.ssthresh = ssthresh
        self.retransmissions = retransmissions
        self.sendQueue = sendQueue
        self.receiveQueue = receiveQueue
        self.peerWindow = peerWindow
    }
}
