/// Socket options of TCP sockets (`setOption`) and what a socket reports about itself (`info`):
/// the per-socket settings beyond the layer's `TCPConfig` defaults (keepalive timing, TCP_CORK,
/// TCP_USER_TIMEOUT, TCP_NOTSENT_LOWAT, TCP_DEFER_ACCEPT, TCP_QUICKACK, TCP_WINDOW_CLAMP,
/// TCP_MAXSEG, IP_TTL/IP_TOS, ...) and the counters TCP_INFO is made of. The option semantics
/// follow Linux; the Linux-facing encoding (option numbers, errnos, struct tcp_info) is the
/// intercept hub's, this file only keeps the state and the behaviour hooks.

/// Counters and instants of one connection that only introspection reads (TCP_INFO).
struct TCPConnectionStats {
    var segmentsIn: UInt64 = 0
    var segmentsOut: UInt64 = 0
    var dataSegmentsIn: UInt64 = 0
    var dataSegmentsOut: UInt64 = 0
    var outOfOrderSegmentsIn: UInt64 = 0
    /// Data bytes sent including retransmissions, and retransmitted.
    var bytesSentTotal: UInt64 = 0
    var bytesRetransmitted: UInt64 = 0
    /// Sequence space acknowledged by the peer (SYN and FIN count one, as in Linux).
    var bytesAcked: UInt64 = 0
    var totalTimeouts: UInt64 = 0
    var timeoutRecoveries: UInt64 = 0
    var timeoutRecoveryTime = Duration.zero
    /// Start of the current run of retransmission timeouts.
    var timeoutEpoch: Instant?
    var lastDataSent: Instant?
    var lastDataReceived: Instant?
    var lastAckReceived: Instant?
    /// Delivery rate: bytes acknowledged since `rateStart`, measured once a round trip passed.
    var rateStart: Instant?
    var rateBytes: UInt64 = 0
    var deliveryRate: UInt64 = 0

    /// `bytes` newly acknowledged at `now`; `srtt` in nanoseconds (0 = none yet).
    mutating func acked(bytes: UInt64, now: Instant, srtt: UInt64) {
        bytesAcked &+= bytes
        guard let start = rateStart else {
            rateStart = now
            rateBytes = 0
            return
        }
        rateBytes &+= bytes
        let elapsed = (now - start).nanoseconds
        if srtt > 0, elapsed >= srtt {
            deliveryRate = rateBytes.multipliedReportingOverflow(by: 1_000_000_000).overflow
                ? rateBytes / max(elapsed / 1_000_000_000, 1) : rateBytes &* 1_000_000_000 / elapsed
            rateStart = now
            rateBytes = 0
        }
    }
}

extension TCPConnection {
    /// The largest window `size` bytes of buffer allow, under TCP_WINDOW_CLAMP.
    func windowLimit(_ size: Int) -> Int { sockopts.windowClamp > 0 ? min(size, sockopts.windowClamp) : size }

    /// The MSS to advertise given the path's, under TCP_MAXSEG.
    func limitedMss(_ pathMss: Int) -> Int { sockopts.maxSegment > 0 ? min(pathMss, sockopts.maxSegment) : pathMss }

    /// An orphaned connection in FIN-WAIT-2 ends after TCP_LINGER2 (nil: at once, with an RST).
    func armFinWait2Timeout(now: Instant) {
        timers.close = now + (sockopts.finWait2Timeout ?? .zero)
    }

    /// TCP_DEFER_ACCEPT, like Linux (tcp_check_req): a bare ACK does not complete a passive
    /// handshake while the listener defers; data will, or the ACK answering the SYN-ACK resent
    /// at the end of the deferral. True when this segment is to be ignored.
    func defersBareAck(payloadCount: Int, flags: TCPFlags) -> Bool {
        guard let l = listener, l.options.deferAccept > 0, payloadCount == 0, !flags.contains(.fin),
              retries < l.options.deferAccept else { return false }
        deferAcked = true
        return true
    }

    /// Bytes queued by the app and not sent yet (Linux: write_seq - snd_nxt).
    var notSentBytes: Int {
        guard let tx else { return 0 }
        return max(tx.count &- (sndMax - txBase), 0)
    }

    /// What `send` may take now: the free ring, and under TCP_NOTSENT_LOWAT only up to the mark.
    var sendSpace: Int {
        guard let tx else { return 0 }
        guard let mark = sockopts.notSentLowWater else { return tx.free }
        return min(tx.free, max(mark &- notSentBytes, 0))
    }

    /// Whether a writer may be woken: room for at least the low-water mark of the ring, and under
    /// TCP_NOTSENT_LOWAT less than half the mark unsent (Linux's tcp_stream_memory_free with
    /// wake = 1, which poll() and the write-space wake-up use).
    var isWritable: Bool {
        guard let tx, tx.free >= lowWater else { return false }
        guard let mark = sockopts.notSentLowWater else { return true }
        return notSentBytes &<< 1 < mark
    }
}

extension TCPLayer {
    /// What `send` would take now (free ring space, limited by TCP_NOTSENT_LOWAT); 0 for an
    /// unknown handle. A driver that writes into `sendBuffer` directly should stay within it.
    public func sendSpace(_ h: SocketHandle) -> Int { connection(h)?.sendSpace ?? 0 }

    public func setOption(_ h: SocketHandle, _ o: TCPOption, now: Instant) throws(SocketError) {
        if let l = listener(h) {
            switch o {
            case .noDelay(let v): l.noDelay = v
            case .keepAlive(let v): l.keepAlive = v
            case .linger(let d): l.lingerAbort = d == .zero
            case .receiveBufferSize(let n):
                guard n > 0 else { throw .invalidState }
                l.rxBufferSize = n
                l.rxLocked = true
            case .sendBufferSize(let n):
                guard n > 0 else { throw .invalidState }
                l.txBufferSize = n
                l.txLocked = true
            case .congestionControl(let a): l.congestion = a
            case .deferAccept(let n): l.options.deferAccept = max(n, 0)
            case .quickAck: break   // a listener has nothing to acknowledge
            default: try Self.apply(o, to: &l.options)
            }
            return
        }
        guard let c = connection(h) else { throw .invalidHandle }
        switch o {
        case .noDelay(let v):
            c.noDelay = v
            if v {
                // Linux pushes what waits, a corked partial segment included (TCP_NAGLE_PUSH).
                if c.sockopts.cork { c.corkFlush = true }
                markDirty(c)
            }
        case .keepAlive(let v):
            c.keepAlive = v
            if c.state == .established || c.state == .closeWait { c.startKeepAlive(now: now); schedule(c) }
        case .linger(let d):
            c.lingerAbort = d == .zero
        case .receiveBufferSize(let n):
            // The size is fixed from now on (no autotuning, as on Linux); the ring can only be
            // resized while it holds nothing.
            guard n > 0 else { throw .invalidState }
            guard c.rx == nil || (c.rx!.isEmpty && c.reassembly.isEmpty) else { throw .invalidState }
            c.givesUpTunedGrowth(receive: true)
            c.rxBufferSize = n
            c.rxLocked = true
            c.rxTarget = n
            if let rx = c.rx { rx.resize(to: n, keeping: 0) }
            // The shift is fixed once our SYN is out (RFC 7323 §2.2).
            if config.windowScaling && c.state == .synSent && c.sndNxt == c.iss {
                c.rcvShift = TCPConnection.shift(for: c.windowLimit(n))
            }
        case .sendBufferSize(let n):
            guard n > 0 else { throw .invalidState }
            guard c.tx == nil || c.tx!.isEmpty else { throw .invalidState }
            c.givesUpTunedGrowth(receive: false)
            c.txBufferSize = n
            c.txLocked = true
            if let tx = c.tx { tx.resize(to: n, keeping: 0) }
        case .congestionControl(let a):
            // Like tcp_reinit_congestion_control: the window and threshold stay, the
            // algorithm's own state starts over.
            guard a != c.cc.algorithm else { return }
            let (cwnd, ssthresh) = (c.cc.cwnd, c.cc.ssthresh)
            c.cc = CongestionController(algorithm: a, mss: c.payloadMss, initialSegments: config.initialWindowSegments)
            if c.isSynchronized {
                c.cc.cwnd = cwnd
                c.cc.ssthresh = ssthresh
            }
        case .keepAliveIdle(let d):
            c.sockopts.keepAliveIdle = d
            // Re-armed from the last segment received, as tcp_sock_set_keepidle does.
            if c.keepAlive, c.keepAliveProbes == 0, c.state == .established || c.state == .closeWait {
                c.timers.keepAlive = c.lastReceive + d
                schedule(c)
            }
        case .cork(let v):
            // Bytes already committed were written before the cork (the daemon reads the app's
            // writes before applying it): they go out under the old rules, as on Linux.
            if v && !c.sockopts.cork && c.notSentBytes > 0 {
                c.corkFlush = true
                markDirty(c)
            }
            c.sockopts.cork = v
            if !v {
                c.timers.cork = nil
                markDirty(c)
            }
        case .quickAck(let v):
            if v {
                if c.acks.quickAckRequested() { markDirty(c) }
            } else {
                c.acks.pingpong = true
            }
        case .windowClamp(let n):
            c.sockopts.windowClamp = max(n, 0)
            if config.windowScaling && c.state == .synSent && c.sndNxt == c.iss {
                c.rcvShift = TCPConnection.shift(for: c.windowLimit(c.rxBufferSize))
            }
        case .notSentLowWater(let n):
            c.sockopts.notSentLowWater = n
            if c.wantWritable, c.isWritable {
                c.wantWritable = false
                if c.userVisible { post(.writable(c.handle)) }
            } else if !c.isWritable {
                c.wantWritable = true
            }
        case .maxSegment(let n):
            c.sockopts.maxSegment = max(n, 0)
            // Before the SYN is out it also lowers what we advertise; afterwards it is only
            // remembered (Linux fixes the MSS clamp at the handshake).
            if c.state == .synSent && c.sndNxt == c.iss && !c.needsMssFromPath { c.advertisedMss = c.limitedMss(c.advertisedMss) }
        case .minRTO(let d):
            c.sockopts.minRTO = d
            c.rtt.minRTO = d
        case .maxRTO(let d):
            c.sockopts.maxRTO = d
            c.rtt.maxRTO = d
        case .deferAccept:
            break   // listeners only; Linux accepts it on any TCP socket
        default:
            try Self.apply(o, to: &c.sockopts)
        }
    }

    /// The options that are plain values on both listeners and connections.
    private static func apply(_ o: TCPOption, to s: inout TCPSocketOptions) throws(SocketError) {
        switch o {
        case .keepAliveIdle(let d): s.keepAliveIdle = d
        case .keepAliveInterval(let d): s.keepAliveInterval = d
        case .keepAliveCount(let n): guard n > 0 else { throw .invalidState }; s.keepAliveCount = n
        case .cork(let v): s.cork = v
        case .userTimeout(let d): s.userTimeout = d
        case .notSentLowWater(let n): s.notSentLowWater = n
        case .windowClamp(let n): s.windowClamp = max(n, 0)
        case .maxSegment(let n): s.maxSegment = max(n, 0)
        case .timeToLive(let t): s.timeToLive = t
        case .typeOfService(let t): s.typeOfService = t
        case .hopLimit(let h): s.hopLimit = h
        case .trafficClass(let t): s.trafficClass = t
        case .synRetries(let n): guard n > 0 else { throw .invalidState }; s.synRetries = n
        case .finWait2Timeout(let d): s.finWait2Timeout = d
        case .minRTO(let d): s.minRTO = d
        case .maxRTO(let d): s.maxRTO = d
        case .delayedAckMax(let d): s.delayedAckMax = d
        case .deferAccept(let n): s.deferAccept = max(n, 0)
        case .noDelay, .keepAlive, .linger, .receiveBufferSize, .sendBufferSize, .congestionControl, .quickAck:
            break
        }
    }

    /// The socket's own options (defaults from `config` until set).
    public func socketOptions(_ h: SocketHandle) -> TCPSocketOptions? {
        if let l = listener(h) { return l.options }
        return connection(h)?.sockopts
    }

    public func info(_ h: SocketHandle) -> TCPSocketInfo? {
        if let l = listener(h) {
            var i = TCPSocketInfo(state: l.closed ? .closed : .listen, local: l.local, remote: nil, bytesReceived: 0,
                                  bytesSent: 0, srtt: nil, rto: config.initialRTO, cwnd: 0, ssthresh: 0,
                                  retransmissions: 0, sendQueue: l.backlog, receiveQueue: l.acceptQueue.count,
                                  peerWindow: 0)
            i.congestionControl = l.congestion
            i.delayedAckTimeout = min(config.delayedAckTimeout, l.options.delayedAckMax)
            return i
        }
        return connection(h).map(info(of:))
    }

    func info(of c: TCPConnection) -> TCPSocketInfo {
        var i = TCPSocketInfo(state: c.state, local: c.local, remote: c.remote, bytesReceived: c.bytesReceived,
                              bytesSent: c.bytesSent, srtt: c.rtt.smoothed,
                              rto: c.rtt.effectiveRTO, cwnd: c.cc.cwnd, ssthresh: min(c.cc.ssthresh, Int(Int32.max)),
                              retransmissions: c.retransmissions, sendQueue: c.tx?.count ?? 0,
                              receiveQueue: c.rx?.count ?? 0, peerWindow: c.sndWnd)
        i.mss = c.payloadMss
        i.windowScaling = c.wsOK
        i.timestamps = c.tsOK
        i.sack = c.sackOK
        i.congestionControl = c.cc.algorithm
        i.rttVariance = c.rtt.smoothed != nil ? Duration(nanoseconds: c.rtt.rttvar) : nil
        i.minRTT = c.rtt.minRTT != .max ? Duration(nanoseconds: c.rtt.minRTT) : nil
        i.bytesInFlight = max(c.sndMax - c.sndUna, 0)
        i.notSentBytes = c.notSentBytes
        if c.recovery.inRecovery {
            i.recoveryState = .recovery
        } else if c.recovery.rtoRecovery || c.retries > 0 {
            i.recoveryState = .loss
        } else if c.recovery.dupAcks > 0 || c.recovery.sackedBytes > 0 {
            i.recoveryState = .disorder
        }
        i.consecutiveTimeouts = c.retries
        i.backoff = c.rtt.backoff
        i.probes = max(c.keepAliveProbes, c.persistBackoff)
        i.sendWindowShift = c.wsOK ? c.sndShift : 0
        i.receiveWindowShift = c.wsOK ? c.rcvShift : 0
        i.advertisedMss = c.advertisedMss &- (c.tsOK ? 12 : 0)
        i.receiveMss = c.acks.mssEstimate
        let ipHeader = c.remote.address.isV4 ? 20 : IPv6HeaderView.headerLength
        i.pathMTU = c.advertisedMss &+ TCPHeaderView.minimumHeaderLength &+ ipHeader
        i.delayedAckTimeout = min(config.delayedAckTimeout, c.sockopts.delayedAckMax)
        var lost = 0, retrans = 0
        let q = c.recovery.queue
        for k in 0..<q.count {
            let r = q[k]
            if r.isLost { lost &+= 1 }
            if r.isRetransmitted && !r.isSacked { retrans &+= 1 }
        }
        i.unackedSegments = q.count
        i.sackedSegments = c.recovery.sackedSegments
        i.lostSegments = lost
        i.retransmittedSegments = retrans
        let now = lastNow
        i.sinceDataSent = c.stats.lastDataSent.map { now - $0 }
        i.sinceDataReceived = c.stats.lastDataReceived.map { now - $0 }
        i.sinceAckReceived = c.stats.lastAckReceived.map { now - $0 }
        i.receiveWindow = c.isSynchronized ? max(c.rcvAdvEdge - c.rcvNxt, 0) : 0
        i.receiveSpace = c.receiveSpace
        i.bytesAcked = c.stats.bytesAcked
        i.bytesSentTotal = c.stats.bytesSentTotal
        i.bytesRetransmitted = c.stats.bytesRetransmitted
        i.segmentsOut = c.stats.segmentsOut
        i.segmentsIn = c.stats.segmentsIn
        i.dataSegmentsOut = c.stats.dataSegmentsOut
        i.dataSegmentsIn = c.stats.dataSegmentsIn
        i.outOfOrderSegmentsIn = c.stats.outOfOrderSegmentsIn
        // Linux counts delivered packets; whole segments of the send MSS are our nearest.
        let mss = UInt64(max(c.payloadMss, 1))
        i.deliveredSegments = (c.bytesSent &+ mss &- 1) / mss &+ (c.isSynchronized || c.state == .closed ? 1 : 0)
        i.deliveryRate = c.stats.deliveryRate
        i.reorderingSeen = c.recovery.reorderingSeen
        i.totalTimeouts = c.stats.totalTimeouts
        i.timeoutRecoveries = c.stats.timeoutRecoveries
        var t = c.stats.timeoutRecoveryTime
        if let start = c.stats.timeoutEpoch { t = t + (now - start) }
        i.timeoutRecoveryTime = t
        return i
    }
}
