/// One TCP connection (a TCB, RFC 9293 §3.3.1) and its state machine.
///
/// Read RFC 9293 §3.10 (event processing), RFC 7323 (window scale, timestamps, PAWS), RFC 2018
/// and RFC 6675 (SACK, loss recovery), RFC 6298 (RTO), RFC 5961 (blind-attack mitigations) first.
///
/// Sans-I/O: every entry point gets `now` and a transmitter from the layer. The connection never
/// allocates per segment: payload is copied straight between the frame and the ring buffers,
/// out-of-order data is written into the receive ring at its offset and tracked as ranges, and
/// the SACK scoreboard is a small array reserved at creation.
///
/// Sequence space bookkeeping (send side): `txBase` is the sequence number of `tx`'s first byte;
/// once the app shuts down writing, the FIN sits at `txBase + tx.count`. `sndNxt` can move back
/// below `sndMax` after a retransmission timeout (go-back-N from `sndUna`).
///
/// Stored properties are `@exclusivity(unchecked)`: the connection is single-threaded and never
/// re-entered while one of its properties is being modified, and the dynamic checks otherwise
/// cost about a third of the per-segment CPU time.
final class TCPConnection {
    unowned(unsafe) let layer: TCPLayer
    let slot: UInt32
    @exclusivity(unchecked) var generation: UInt32
    var handle: SocketHandle { SocketHandle(index: slot, generation: generation) }

    @exclusivity(unchecked) var state: TCPState
    let local: IPv4Endpoint
    let remote: IPv4Endpoint
    let key: TCPConnKey

    // Ownership.
    /// The driver released its handle; the connection finishes on its own.
    @exclusivity(unchecked) var released = false
    /// Passive connection not yet handed out by `accept` (events are held back until then).
    @exclusivity(unchecked) var listener: TCPListener?
    @exclusivity(unchecked) var accepted = true
    /// The app closed the socket (not just shut down writing): arriving data now draws an RST.
    @exclusivity(unchecked) var appClosed = false
    @exclusivity(unchecked) var lingerAbort = false
    /// Counted in the listener's SYN queue (embryonic, SYN-RECEIVED from a passive open).
    @exclusivity(unchecked) var inSynQueue = false
    /// Active open: learn the MSS to advertise from the transmitter at the first output.
    @exclusivity(unchecked) var needsMssFromPath = false

    // Buffers (allocated once when the connection becomes usable).
    @exclusivity(unchecked) var rx: RingBuffer?
    @exclusivity(unchecked) var tx: RingBuffer?
    @exclusivity(unchecked) var rxBufferSize: Int
    @exclusivity(unchecked) var txBufferSize: Int

    // Per-socket options.
    @exclusivity(unchecked) var noDelay: Bool
    @exclusivity(unchecked) var keepAlive: Bool

    // Send sequence variables.
    @exclusivity(unchecked) var iss = SeqNumber(0)
    @exclusivity(unchecked) var sndUna = SeqNumber(0)
    @exclusivity(unchecked) var sndNxt = SeqNumber(0)
    @exclusivity(unchecked) var sndMax = SeqNumber(0)
    @exclusivity(unchecked) var txBase = SeqNumber(0)
    @exclusivity(unchecked) var sndWnd = 0
    @exclusivity(unchecked) var maxSndWnd = 0
    @exclusivity(unchecked) var sndWl1 = SeqNumber(0)
    @exclusivity(unchecked) var sndWl2 = SeqNumber(0)
    @exclusivity(unchecked) var sndShift = 0
    /// Peer's MSS limited by our path: data plus options per segment (RFC 6691).
    @exclusivity(unchecked) var sndMss = 536
    @exclusivity(unchecked) var finQueued = false
    @exclusivity(unchecked) var needSyn = false

    // Receive sequence variables.
    @exclusivity(unchecked) var irs = SeqNumber(0)
    @exclusivity(unchecked) var rcvNxt = SeqNumber(0)
    @exclusivity(unchecked) var rcvShift = 0
    @exclusivity(unchecked) var rcvAdvEdge = SeqNumber(0)
    @exclusivity(unchecked) var finReceived = false
    @exclusivity(unchecked) var pendingFin: SeqNumber?
    /// Out-of-order data ranges above `rcvNxt`, sorted, disjoint.
    @exclusivity(unchecked) var ooo: [(start: SeqNumber, end: SeqNumber)] = []
    @exclusivity(unchecked) var oooLatest = SeqNumber(0)
    @exclusivity(unchecked) var advertisedMss = 536

    // Negotiated options.
    @exclusivity(unchecked) var tsOK = false
    @exclusivity(unchecked) var sackOK = false
    @exclusivity(unchecked) var wsOK = false
    @exclusivity(unchecked) var tsRecent: UInt32 = 0
    @exclusivity(unchecked) var tsOffset: UInt32 = 0
    @exclusivity(unchecked) var lastAckSent = SeqNumber(0)

    // RTT / RTO (RFC 6298), nanoseconds.
    @exclusivity(unchecked) var srtt: UInt64 = 0
    @exclusivity(unchecked) var rttvar: UInt64 = 0
    @exclusivity(unchecked) var hasRTT = false
    @exclusivity(unchecked) var rto: Duration
    @exclusivity(unchecked) var backoff = 0
    @exclusivity(unchecked) var rttSeq: SeqNumber?
    @exclusivity(unchecked) var rttStart = Instant.zero
    @exclusivity(unchecked) var retries = 0

    // Congestion control and loss recovery.
    @exclusivity(unchecked) var cc: CongestionController
    @exclusivity(unchecked) var inRecovery = false
    @exclusivity(unchecked) var recover = SeqNumber(0)
    @exclusivity(unchecked) var dupAcks = 0
    /// Segments in flight with their send times and SACK/lost marks (RACK, RFC 8985).
    @exclusivity(unchecked) var txq = TxQueue()
    /// Bytes of `txq` records SACKed, and marked lost but not yet resent.
    @exclusivity(unchecked) var sackedBytes = 0
    @exclusivity(unchecked) var sackedSegments = 0
    @exclusivity(unchecked) var lostBytes = 0
    /// RACK state: send time and end of the most recently sent segment known delivered, the RTT
    /// it measured, the minimum RTT seen, and whether the path was seen to reorder.
    @exclusivity(unchecked) var rackXmit: UInt64 = 0
    @exclusivity(unchecked) var rackEnd = SeqNumber(0)
    @exclusivity(unchecked) var rackRTT: UInt64 = 0
    @exclusivity(unchecked) var minRTT: UInt64 = .max
    @exclusivity(unchecked) var reorderingSeen = false
    /// Tail loss probes sent since new data was last acknowledged (RFC 8985 §7 allows one; a
    /// second one, later, saves an RTO when the first probe is lost too).
    @exclusivity(unchecked) var tlpProbes = 0
    /// Segments the next output may send beyond the congestion window (a loss probe's new data).
    @exclusivity(unchecked) var probeQuota = 0
    /// Entering recovery resends the first lost segment whatever the pipe (RFC 6675 §5 step 4.2).
    @exclusivity(unchecked) var forceRetransmit = false
    @exclusivity(unchecked) var cwndLimited = false
    /// Set by a retransmission timeout until everything sent before it is acknowledged: the
    /// window was already cut, losses found meanwhile must not cut it again (RFC 6582 §4.1).
    @exclusivity(unchecked) var rtoRecovery = false
    /// End of the last small (sub-MSS) segment sent, for Minshall's Nagle variant.
    @exclusivity(unchecked) var lastSmallEnd = SeqNumber(0)

    // Timers.
    @exclusivity(unchecked) var rtoAt: Instant?
    @exclusivity(unchecked) var delAckAt: Instant?
    @exclusivity(unchecked) var persistAt: Instant?
    /// RACK reordering-window timer and tail loss probe timer.
    @exclusivity(unchecked) var rackAt: Instant?
    @exclusivity(unchecked) var tlpAt: Instant?
    @exclusivity(unchecked) var keepAliveAt: Instant?
    @exclusivity(unchecked) var closeAt: Instant?        // TIME-WAIT expiry or orphaned FIN-WAIT-2 timeout
    @exclusivity(unchecked) var persistBackoff = 0
    @exclusivity(unchecked) var keepAliveProbes = 0
    @exclusivity(unchecked) var lastReceive = Instant.zero
    /// Deadline of this connection's live entry in the layer's timer heap.
    @exclusivity(unchecked) var heapDeadline: UInt64?

    // ACK state.
    @exclusivity(unchecked) var ackNow = false
    @exclusivity(unchecked) var ackPending = false
    /// An ACK is owed for two or more full segments: sent by the layer's next `poll` (after the
    /// driver's input batch) rather than per segment, so a burst is acknowledged by one ACK.
    @exclusivity(unchecked) var ackAtPoll = false
    @exclusivity(unchecked) var unackedBytes = 0
    @exclusivity(unchecked) var quickAcks: Int
    @exclusivity(unchecked) var rcvMssEstimate = 536
    @exclusivity(unchecked) var inDirtyList = false

    // Events.
    @exclusivity(unchecked) var readableEpoch: UInt64 = .max
    @exclusivity(unchecked) var wantWritable = false

    // Statistics.
    @exclusivity(unchecked) var bytesReceived: UInt64 = 0
    @exclusivity(unchecked) var bytesSent: UInt64 = 0
    @exclusivity(unchecked) var retransmissions: UInt64 = 0

    init(layer: TCPLayer, slot: UInt32, generation: UInt32, state: TCPState, local: IPv4Endpoint,
         remote: IPv4Endpoint, rxBufferSize: Int, txBufferSize: Int, noDelay: Bool, congestion: CongestionControl) {
        self.layer = layer
        self.slot = slot
        self.generation = generation
        self.state = state
        self.local = local
        self.remote = remote
        key = TCPConnKey(local: local, remote: remote)
        self.rxBufferSize = rxBufferSize
        self.txBufferSize = txBufferSize
        self.noDelay = noDelay
        let cfg = layer.config
        keepAlive = cfg.keepAlive
        rto = cfg.initialRTO
        quickAcks = cfg.quickAckSegments
        cc = CongestionController(algorithm: congestion, mss: 536, initialSegments: cfg.initialWindowSegments)
        ooo.reserveCapacity(cfg.maxOutOfOrderRanges)
        rcvShift = cfg.windowScaling ? Self.shift(for: rxBufferSize) : 0
    }

    /// Smallest shift that lets a 16-bit window field cover `size` (RFC 7323 §2.3, max 14).
    static func shift(for size: Int) -> Int {
        var s = 0
        while s < 14, (size >> s) > 0xFFFF { s &+= 1 }
        return s
    }

    var config: TCPConfig { layer.config }
    var isSynchronized: Bool {
        switch state {
        case .closed, .listen, .synSent, .synReceived: return false
        default: return true
        }
    }
    /// Sequence number of our FIN (meaningful once `finQueued`).
    var finSeq: SeqNumber { txBase + (tx?.count ?? 0) }
    var finAcked: Bool { finQueued && sndUna == finSeq + 1 }
    var effectiveRTO: Duration {
        var ns = rto.nanoseconds
        for _ in 0..<min(backoff, 20) { ns = ns &* 2; if ns >= config.maxRTO.nanoseconds { break } }
        return Duration(nanoseconds: min(ns, config.maxRTO.nanoseconds))
    }
    /// Payload bytes per full segment: MSS minus the options every segment carries.
    var payloadMss: Int { max(sndMss &- (tsOK ? 12 : 0), 1) }
    var userVisible: Bool { !released && accepted }

    func allocateBuffers() {
        if rx == nil { rx = RingBuffer(capacity: rxBufferSize) }
        if tx == nil { tx = RingBuffer(capacity: txBufferSize) }
    }

    // MARK: - Timestamps and RTT

    func tsNow(_ now: Instant) -> UInt32 { UInt32(truncatingIfNeeded: now.nanoseconds / 1_000_000) &+ tsOffset }

    func rttSample(_ r: UInt64) {
        if !hasRTT {
            srtt = r
            rttvar = r / 2
            hasRTT = true
        } else {
            let delta = srtt > r ? srtt - r : r - srtt
            rttvar = (3 &* rttvar &+ delta) / 4
            srtt = (7 &* srtt &+ r) / 8
        }
        let g: UInt64 = 1_000_000   // clock granularity: 1 ms timestamps
        let v = srtt &+ max(g, 4 &* rttvar)
        rto = Duration(nanoseconds: min(max(v, config.minRTO.nanoseconds), config.maxRTO.nanoseconds))
    }

    // MARK: - Receive window

    /// Bytes of receive space right now (window before scaling).
    var receiveSpace: Int { rx?.free ?? rxBufferSize }

    /// The window field to send and the right edge it advertises, never shrinking the edge.
    func windowField(syn: Bool) -> UInt16 {
        if syn { return UInt16(min(receiveSpace, 0xFFFF)) }
        let shift = wsOK ? rcvShift : 0
        var win = receiveSpace
        let prior = rcvAdvEdge - rcvNxt
        if win < prior { win = prior }   // RFC 9293 §3.8.6.2.2: do not shrink the window
        var field = win >> shift
        if field > 0xFFFF { field = 0xFFFF }
        let edge = rcvNxt + (field << shift)
        if rcvAdvEdge < edge { rcvAdvEdge = edge }
        return UInt16(field)
    }

    /// After the app consumed data: is a window update worth a segment? (receiver SWS avoidance,
    /// RFC 9293 §3.8.6.2.2: only when the window grows by at least min(MSS, buffer/2) and doubles).
    func windowUpdateNeeded() -> Bool {
        guard isSynchronized, !finReceived else { return false }
        let old = max(rcvAdvEdge - rcvNxt, 0)
        let new = receiveSpace
        let step = min(rcvMssEstimate, rxBufferSize / 2)
        return new - old >= step && new >= 2 &* old
    }

    // MARK: - Segment arrival

    enum ArrivalResult { case done, reopen }

    /// Processes one segment for this connection (RFC 9293 §3.10.7.3/4). Output (ACKs, data
    /// that the ACK allowed) is sent before returning.
    func segmentArrived(_ seg: TCPHeaderView, options: TCPSegmentOptions, now: Instant,
                        tx out: some IPv4Transmitter) -> ArrivalResult {
        lastReceive = now
        keepAliveProbes = 0
        let flags = seg.flags
        if state == .synSent {
            synSentArrived(seg, flags: flags, options: options, now: now, tx: out)
            output(now: now, tx: out)
            return .done
        }
        let seq = seg.sequenceNumber
        let payloadCount = seg.payload.count

        // A new SYN for a connection in TIME-WAIT may start a new incarnation (RFC 9293 §3.10.7.4 note, RFC 6191).
        if state == .timeWait, flags.contains(.syn), !flags.contains(.ack), !flags.contains(.rst), rcvNxt < seq {
            return .reopen
        }

        // Simultaneous open: the peer's SYN-ACK repeats its SYN (seq = IRS) but acknowledges ours.
        if state == .synReceived, flags.contains([.syn, .ack]), !flags.contains(.rst), seq == irs {
            let ack = seg.ackNumber
            if sndUna < ack, !(sndMax < ack), becomeEstablishedPassive(now: now) {
                sndUna = ack
                sndWnd = Int(seg.window)
                sndWl1 = seq
                sndWl2 = ack
                ackNow = true
            }
            output(now: now, tx: out)
            return .done
        }

        // A retransmitted SYN in SYN-RECEIVED: our SYN-ACK was lost, send it again now.
        if state == .synReceived, flags.contains(.syn), !flags.contains(.ack), !flags.contains(.rst), seq == irs {
            needSyn = true
            output(now: now, tx: out)
            return .done
        }

        // PAWS (RFC 7323 §5): drop segments whose timestamp is older than the last one seen.
        if tsOK, !flags.contains(.rst), let ts = options.timestamp {
            if Int32(bitPattern: ts.value &- tsRecent) < 0 {
                ackNow = true
                output(now: now, tx: out)
                return .done
            }
        }

        // Sequence number acceptability (RFC 9293 §3.10.7.4 first check).
        let segLen = seg.segmentLength
        let wnd = max(max(rcvAdvEdge - rcvNxt, 0), receiveSpace)
        // Like Linux (tcp_sequence), the right edge itself is acceptable: a peer that filled our
        // window exactly sends its pure ACKs at SEG.SEQ = RCV.NXT + RCV.WND, and RFC 9293's strict
        // test would throw away every ACK (and SACK) it sends until the window opens again.
        let acceptable: Bool
        if segLen == 0 {
            acceptable = !(seq < rcvNxt) && !(rcvNxt + wnd < seq)
        } else {
            let last = seq + (segLen &- 1)
            acceptable = !(last < rcvNxt) && !(rcvNxt + wnd < seq)
        }
        if !acceptable {
            if !flags.contains(.rst) {
                ackNow = true
                output(now: now, tx: out)
            }
            return .done
        }

        // RST (RFC 5961 §3): exact match resets, anything else in the window draws a challenge ACK.
        if flags.contains(.rst) {
            if seq == rcvNxt {
                resetReceived(now: now)
            } else {
                challengeAck(now: now)
                output(now: now, tx: out)
            }
            return .done
        }

        // SYN in a synchronized state (RFC 5961 §4): challenge ACK.
        if flags.contains(.syn) {
            challengeAck(now: now)
            output(now: now, tx: out)
            return .done
        }

        guard flags.contains(.ack) else { return .done }

        // Timestamp bookkeeping (RFC 7323 §4.3): remember the peer's clock for segments at the left edge.
        if tsOK, let ts = options.timestamp, !(lastAckSent < seq) {
            tsRecent = ts.value
        }

        let ack = seg.ackNumber
        if state == .synReceived {
            guard sndUna < ack, !(sndMax < ack) else {
                layer.sendReset(to: remote, from: local, seq: ack, ack: nil, tx: out)
                return .done
            }
            guard becomeEstablishedPassive(now: now) else { return .done }
        }

        if !processAck(seg, ack: ack, flags: flags, options: options, payloadCount: payloadCount, now: now) {
            output(now: now, tx: out)
            return .done
        }
        if state == .closed { return .done }

        // Data and FIN.
        if payloadCount > 0 || flags.contains(.fin) {
            switch state {
            case .established, .finWait1, .finWait2:
                if appClosed && payloadCount > 0 {
                    // Nobody will read it (RFC 9293 §3.10.7 close, Linux behaviour): reset.
                    layer.sendReset(to: remote, from: local, seq: sndNxt, ack: rcvNxt, tx: out)
                    terminate(error: nil, now: now)
                    return .done
                }
                receiveData(seg, seq: seq, flags: flags, now: now)
            case .closeWait, .closing, .lastAck, .timeWait:
                // Peer already sent FIN: anything new is a retransmission; re-ACK it.
                if flags.contains(.fin) || payloadCount > 0 {
                    ackNow = true
                    if state == .timeWait { closeAt = now + config.timeWait }
                }
            default: break
            }
        }
        if state == .closed { return .done }
        output(now: now, tx: out)
        return .done
    }

    private func synSentArrived(_ seg: TCPHeaderView, flags: TCPFlags, options: TCPSegmentOptions, now: Instant,
                                tx out: some IPv4Transmitter) {
        let ack = seg.ackNumber
        var ackOK = false
        if flags.contains(.ack) {
            if !(iss < ack) || sndMax < ack {
                if !flags.contains(.rst) { layer.sendReset(to: remote, from: local, seq: ack, ack: nil, tx: out) }
                return
            }
            ackOK = true
        }
        if flags.contains(.rst) {
            if ackOK { terminate(error: .connectionRefused, now: now) }
            return
        }
        guard flags.contains(.syn) else { return }
        irs = seg.sequenceNumber
        rcvNxt = irs + 1
        rcvAdvEdge = rcvNxt
        negotiate(options, synOptionsSent: true)
        if let ts = options.timestamp, tsOK { tsRecent = ts.value }
        if ackOK {
            sndUna = ack
            if sndNxt < sndUna { sndNxt = sndUna }
            sndWnd = Int(seg.window)    // never scaled in a SYN (RFC 7323 §2.2)
            maxSndWnd = max(maxSndWnd, sndWnd)
            sndWl1 = seg.sequenceNumber
            sndWl2 = ack
            rtoAt = nil
            retries = 0
            backoff = 0
            if tsOK, let ts = options.timestamp, ts.echoReply != 0 {
                rttSample(UInt64(tsNow(now) &- ts.echoReply) &* 1_000_000)
            } else if let rs = rttSeq, rs < ack || rs == ack {
                rttSample((now - rttStart).nanoseconds)
            }
            rttSeq = nil
            state = finQueued ? .finWait1 : .established
            startKeepAlive(now: now)
            ackNow = true
            if userVisible { layer.post(.connected(handle)) }
        } else {
            // Simultaneous open (RFC 9293 §3.5 figure 7).
            state = .synReceived
            sndWnd = Int(seg.window)
            sndWl1 = seg.sequenceNumber
            sndWl2 = ack
            needSyn = true
        }
    }

    /// Applies the peer's SYN options (ours were all sent if enabled).
    func negotiate(_ o: TCPSegmentOptions, synOptionsSent: Bool) {
        let cfg = config
        let ourLimit = advertisedMss
        if let m = o.maxSegmentSize, m > 0 {
            sndMss = max(min(Int(m), ourLimit), 64)
        } else {
            sndMss = min(cfg.mssDefault, ourLimit)
        }
        wsOK = cfg.windowScaling && o.windowScale != nil
        sndShift = wsOK ? Int(o.windowScale!) : 0
        if !wsOK { rcvShift = 0 }
        tsOK = cfg.timestamps && o.timestamp != nil
        sackOK = cfg.sack && o.sackPermitted
        cc.cwnd = payloadMss &* cfg.initialWindowSegments
    }

    /// SYN-RECEIVED → ESTABLISHED on a passive open; false if the accept queue is full (the ACK
    /// is then ignored and the peer retransmits, like Linux with tcp_abort_on_overflow=0).
    private func becomeEstablishedPassive(now: Instant) -> Bool {
        if let l = listener {
            guard l.acceptQueue.count < l.backlog else { return false }
            if inSynQueue { l.synQueue &-= 1; inSynQueue = false }
            l.acceptQueue.append(self)
            accepted = false
            if l.acceptQueue.count == 1, !l.released { layer.post(.acceptable(l.handle)) }
        }
        allocateBuffers()
        state = finQueued ? .finWait1 : .established
        rtoAt = nil
        retries = 0
        backoff = 0
        needSyn = false
        startKeepAlive(now: now)
        if listener == nil, userVisible { layer.post(.connected(handle)) }   // simultaneous open
        return true
    }

    /// ACK processing (RFC 9293 §3.10.7.4 fifth check). Returns false to drop the segment.
    private func processAck(_ seg: TCPHeaderView, ack: SeqNumber, flags: TCPFlags, options: TCPSegmentOptions,
                            payloadCount: Int, now: Instant) -> Bool {
        if sndMax < ack {
            ackNow = true   // acks something never sent
            return false
        }
        if ack < sndUna - maxSndWnd {
            challengeAck(now: now)   // RFC 5961 §5: too old
            return false
        }
        let seq = seg.sequenceNumber
        let window = Int(seg.window) << sndShift
        let flight = sndMax - sndUna
        let prevRackEnd = rackEnd

        if sndUna < ack {
            newAck(ack, options: options, prevRackEnd: prevRackEnd, now: now)
        } else if ack == sndUna, payloadCount == 0, !flags.contains(.syn), !flags.contains(.fin), flight > 0,
                  window == sndWnd, window > 0 {
            dupAcks &+= 1
            // Without SACK (or with segments RACK cannot see) three duplicate ACKs mean the
            // first segment is lost (RFC 5681 §3.2).
            if dupAcks == 3, !inRecovery, !rtoRecovery, !sackOK || sackedSegments == 0 {
                markHeadLost()
                enterRecovery()
            }
        }
        // SACK blocks ride on data segments too (the echo case): use them from every ACK.
        if sackOK, options.sackBlocks.count > 0 { applySack(options.sackBlocks, prevRackEnd: prevRackEnd, now: now) }
        if !txq.isEmpty { detectLosses(now: now) }

        // Window update (RFC 9293 §3.10.7.4: only from newer segments).
        if sndWl1 < seq || (sndWl1 == seq && !(ack < sndWl2)) {
            let wasZero = sndWnd == 0
            sndWnd = window
            if sndWnd > maxSndWnd { maxSndWnd = sndWnd }
            sndWl1 = seq
            sndWl2 = ack
            if wasZero && sndWnd > 0 {
                persistAt = nil
                persistBackoff = 0
                // Resend the probe byte (and anything else sent into the closed window).
                if !inRecovery { goBackN() }
            }
        }

        // State transitions driven by our FIN being acknowledged.
        switch state {
        case .finWait1:
            if finAcked {
                state = .finWait2
                if released || appClosed { closeAt = now + config.finTimeout }
            }
        case .closing:
            if finAcked { enterTimeWait(now: now) }
        case .lastAck:
            if finAcked {
                terminate(error: nil, now: now)
                return false
            }
        default: break
        }
        return true
    }

    private func newAck(_ ack: SeqNumber, options: TCPSegmentOptions, prevRackEnd: SeqNumber, now: Instant) {
        let acked = ack - sndUna
        let wasCwndLimited = cwndLimited || (sndMax - sndUna) &* 2 >= cc.cwnd
        if let tx, txBase < ack {
            let data = min(ack - txBase, tx.count)
            tx.discard(data)
            txBase = txBase + data
            bytesSent &+= UInt64(data)
            if wantWritable, tx.free >= lowWater { wantWritable = false; if userVisible { layer.post(.writable(handle)) } }
        }
        sndUna = ack
        if sndNxt < sndUna { sndNxt = sndUna }
        // Keep the Nagle marker inside the live window so sequence wrap can never revive it.
        if lastSmallEnd < sndUna { lastSmallEnd = sndUna }
        let newest = popAcked(prevRackEnd: prevRackEnd, now: now)

        // RTT sample: the send time of the newest segment this ACK covers when it was sent only
        // once (Karn), at full clock resolution; else timestamps (RFC 7323 §4.1, 1 ms ticks);
        // else the timed segment.
        if newest > 0 {
            rttSample(now.nanoseconds &- newest)
            rttSeq = nil
        } else if tsOK, let ts = options.timestamp, ts.echoReply != 0 {
            let r = tsNow(now) &- ts.echoReply
            if r < 60_000 { rttSample(UInt64(r) &* 1_000_000) }
        } else if let rs = rttSeq, !(ack < rs) {
            rttSample((now - rttStart).nanoseconds)
            rttSeq = nil
        }
        retries = 0
        backoff = 0
        dupAcks = 0
        tlpProbes = 0
        if rtoRecovery && !(ack < recover) { rtoRecovery = false }

        if inRecovery {
            if !(ack < recover) {
                inRecovery = false
                forceRetransmit = false
                // Like Linux, not RFC 6582's min(ssthresh, FlightSize + SMSS): when the ACK
                // ending recovery leaves little in flight that collapses cwnd to one segment,
                // and a lone segment then waits for the peer's delayed ACK.
                cc.cwnd = max(cc.ssthresh, 2 &* payloadMss)
            } else if !sackOK {
                // Partial ACK (RFC 6582 §3.2): the next hole is lost too.
                markHeadLost()
            }
        } else {
            cc.onAck(acked: acked, mss: payloadMss, now: now, srtt: Duration(nanoseconds: srtt),
                     cwndLimited: wasCwndLimited)
        }
        cwndLimited = false
        rtoAt = sndUna == sndMax ? nil : now + effectiveRTO
        tlpAt = probeTimeout(now: now)
    }

    var lowWater: Int { min(txBufferSize / 2, 256 << 10) }

    // MARK: - Loss detection (RACK-TLP, RFC 8985, with RFC 6675 accounting)

    /// Records a segment just sent at SND.NXT (new data, or data resent after a go-back-N).
    @inline(__always)
    func recordSent(_ start: SeqNumber, _ end: SeqNumber, retransmission: Bool, now: Instant) {
        // Only a contiguous queue starting at SND.UNA is useful; anything else (which the
        // go-back-N paths prevent) is simply left untracked and the RTO covers it.
        if let l = txq.last {
            guard l.end == start else { return }
        } else {
            guard start == sndUna else { return }
        }
        txq.append(TxRecord(start: start, end: end, sentAt: now.nanoseconds,
                            flags: retransmission ? TxRecord.retransmitted : 0))
    }

    /// Forgets the per-segment state and resends from SND.UNA (after a closed window reopens,
    /// or an RTO when the queue is not usable).
    func goBackN() {
        sndNxt = sndUna
        txq.removeAll()
        sackedBytes = 0
        sackedSegments = 0
        lostBytes = 0
        rackAt = nil
    }

    /// Drops records below SND.UNA; returns the send time of the newest one that was sent once
    /// and not SACKed before (an RTT sample), or 0.
    private func popAcked(prevRackEnd: SeqNumber, now: Instant) -> UInt64 {
        var newest: UInt64 = 0
        while var r = txq.first, r.start < sndUna {
            if !(sndUna < r.end) {
                txq.removeFirst()
                if r.isSacked {
                    sackedBytes &-= r.length
                    sackedSegments &-= 1
                } else {
                    if r.isLost { lostBytes &-= r.length }
                    delivered(r, prevRackEnd: prevRackEnd, now: now)
                    if !r.isRetransmitted && r.sentAt > newest { newest = r.sentAt }
                }
                continue
            }
            // The ACK ends inside this record (odd peer, or resegmented data): trim it.
            let cut = sndUna - r.start
            if r.isSacked { sackedBytes &-= cut } else if r.isLost { lostBytes &-= cut }
            r.start = sndUna
            txq[0] = r
            break
        }
        if txq.isEmpty {
            // Nothing tracked is left: the counters must agree.
            sackedBytes = 0; sackedSegments = 0; lostBytes = 0; rackAt = nil
        }
        return newest
    }

    private func applySack(_ blocks: TCPSackBlocks, prevRackEnd: SeqNumber, now: Instant) {
        for b in 0..<blocks.count {
            let (s, e) = blocks[b]
            if !(sndUna < e) || sndMax < e || !(s < e) { continue }   // D-SACK, stale or bogus
            guard var i = txq.index(containing: SeqNumber.max(s, sndUna)) else { continue }
            // Only whole records count: the peer SACKs the segments it got.
            if txq[i].start < s { i &+= 1 }
            while i < txq.count {
                var r = txq[i]
                if e < r.end { break }
                if !r.isSacked {
                    if r.isLost { lostBytes &-= r.length }
                    r.flags = (r.flags | TxRecord.sacked) & ~TxRecord.lost
                    txq[i] = r
                    sackedBytes &+= r.length
                    sackedSegments &+= 1
                    delivered(r, prevRackEnd: prevRackEnd, now: now)
                }
                i &+= 1
            }
        }
    }

    /// RACK_update (RFC 8985 §6.2 step 2): remember the most recently sent delivered segment.
    private func delivered(_ r: TxRecord, prevRackEnd: SeqNumber, now: Instant) {
        let rtt = now.nanoseconds &- r.sentAt
        // A retransmission acknowledged sooner than the path can answer was the original's ACK.
        if r.isRetransmitted && rtt < minRTT { return }
        if !r.isRetransmitted {
            // Zero means sent and acknowledged within one input batch (one clock reading).
            if rtt > 0 && rtt < minRTT { minRTT = rtt }
            // Sent once, delivered after something sent later: the path reorders.
            if r.end < prevRackEnd { reorderingSeen = true }
        }
        rackRTT = rtt
        if r.sentAt > rackXmit || (r.sentAt == rackXmit && rackEnd < r.end) {
            rackXmit = r.sentAt
            rackEnd = r.end
        }
    }

    /// Reordering window (RFC 8985 §6.2 step 4): none once the loss is certain, else a quarter
    /// of the minimum RTT (a whole one once the path was seen reordering), at most SRTT. Usually
    /// the next ACK, not the timer, finds the window elapsed.
    private var reorderWindow: UInt64 {
        if !reorderingSeen && (inRecovery || rtoRecovery || sackedSegments >= 3) { return 0 }
        let m = minRTT == .max ? srtt : minRTT
        return min(reorderingSeen ? m : m / 4, srtt)
    }

    /// RACK_detect_loss (RFC 8985 §6.2 step 5): a segment sent before the newest delivered one is
    /// lost once it has had an RTT plus the reordering window to arrive.
    private func detectLosses(now: Instant) {
        // Steady state without loss: the head was sent after everything delivered, so the scan
        // stops at once.
        guard rackXmit > 0 else { return }
        let reo = reorderWindow
        var timeout: UInt64 = .max
        var marked = false
        var i = 0
        while i < txq.count {
            var r = txq[i]
            i &+= 1
            if r.isSacked || r.isLost { continue }
            // Same instant: originals go in sequence order; a resend cannot be judged yet.
            let before = r.sentAt < rackXmit || (r.sentAt == rackXmit && r.end < rackEnd && !r.isRetransmitted)
            if !before {
                // Originals are in send order: none further on was sent earlier.
                if r.isRetransmitted { continue } else { break }
            }
            let deadline = r.sentAt &+ rackRTT &+ reo
            if deadline <= now.nanoseconds {
                r.flags |= TxRecord.lost
                txq[i &- 1] = r
                lostBytes &+= r.length
                marked = true
            } else if deadline < timeout {
                timeout = deadline
            }
        }
        rackAt = timeout == .max ? nil : Instant(nanoseconds: timeout)
        if marked && !inRecovery && !rtoRecovery { enterRecovery() }
    }

    /// NewReno-style loss: the first unacknowledged segment.
    private func markHeadLost() {
        guard var r = txq.first, !r.isSacked, !r.isLost else { return }
        r.flags |= TxRecord.lost
        txq[0] = r
        lostBytes &+= r.length
    }

    private func enterRecovery() {
        inRecovery = true
        recover = sndMax
        cc.onLoss(flight: sndMax - sndUna, mss: payloadMss)
        forceRetransmit = true
    }

    /// Bytes in the network (RFC 6675 pipe): sent, not SACKed, not deemed lost unless resent.
    private var pipe: Int {
        let flight = sndNxt - sndUna
        var sacked = sackedBytes
        if inRecovery && !sackOK { sacked = min(dupAcks &* payloadMss, flight) }   // NewReno inflation
        return max(flight &- sacked &- lostBytes, 0)
    }

    static let maxLossProbes = 5

    /// Probe timeout (RFC 8985 §7.2): two RTTs, plus room for the peer's delayed ACK when a
    /// single segment is out; nil when the RTO would come first anyway. Unlike RFC 8985 it also
    /// runs during recovery, once nothing is waiting to be resent: a lost retransmission is only
    /// seen when something sent after it is delivered, and this is what gets it delivered.
    private func probeTimeout(now: Instant) -> Instant? {
        guard sackOK, tlpProbes < Self.maxLossProbes, hasRTT, sndUna < sndMax, !txq.isEmpty,
              sndWnd > 0, sndNxt == sndMax else {
            return nil
        }
        let base = 2 &* srtt &+ (txq.count == 1 ? Self.probeDelayedAck : 200_000)
        let pto = base << UInt64(tlpProbes)
        if pto >= effectiveRTO.nanoseconds { return nil }
        if let r = rtoAt, r.nanoseconds <= now.nanoseconds &+ pto { return nil }
        return now + Duration(nanoseconds: pto)
    }

    /// Worst-case delayed ACK assumed for a lone segment (Linux acks within 40 ms, usually at once).
    static let probeDelayedAck: UInt64 = 5_000_000

    /// Tail loss probe: the first segment waiting to be resent if the window holds it back,
    /// else one new segment (beyond cwnd), else the highest segment not SACKed, so that the
    /// peer's ACK reveals what was lost without an RTO. The output that follows sends it.
    private func sendLossProbe(now: Instant) {
        guard isSynchronized, sndUna < sndMax, tlpProbes < Self.maxLossProbes, sndWnd > 0, sndNxt == sndMax else {
            return
        }
        tlpProbes &+= 1
        if lostBytes > 0 { forceRetransmit = true } else { probeQuota = 1 }
    }

    /// Resends the highest segment not SACKed (a probe when there is no new data to send).
    private func probeLastSegment(now: Instant, tx out: some IPv4Transmitter) {
        var i = txq.count &- 1
        while i >= 0 && txq[i].isSacked { i &-= 1 }
        guard i >= 0 else { return }
        var r = txq[i]
        if r.isLost { lostBytes &-= r.length }
        transmitRecord(r, now: now, tx: out)
        r.sentAt = now.nanoseconds
        r.flags = (r.flags | TxRecord.retransmitted) & ~TxRecord.lost
        txq[i] = r
        if rtoAt == nil { rtoAt = now + effectiveRTO }
    }

    /// Sends the bytes (and FIN) of one record again, in MSS-sized pieces.
    private func transmitRecord(_ r: TxRecord, now: Instant, tx out: some IPv4Transmitter) {
        let mss = max(sndMss &- optionLength(ack: true), 1)
        let dataEnd = txBase + (tx?.count ?? 0)
        var s = r.start
        while s < r.end {
            let dataLen = min(r.end - s, mss, max(dataEnd - s, 0))
            let fin = finQueued && s + dataLen == dataEnd && dataEnd < r.end
            if dataLen == 0 && !fin { break }
            var f: TCPFlags = .ack
            if fin { f.insert(.fin) }
            sendSegment(seq: s, flags: f, dataOffset: s - txBase, dataCount: dataLen, now: now, tx: out)
            retransmissions &+= 1
            s = s + (dataLen &+ (fin ? 1 : 0))
        }
    }

    // MARK: - Receiving data

    private func receiveData(_ seg: TCPHeaderView, seq segSeq: SeqNumber, flags: TCPFlags, now: Instant) {
        guard let rx else { return }
        var payload = seg.payload
        var seq = segSeq
        var fin = flags.contains(.fin)
        let pre = rcvNxt - seq
        if pre > 0 {
            // Starts before RCV.NXT: drop what we already have.
            ackNow = true
            if pre > payload.count {
                return   // everything, FIN included, is old
            }
            payload = UnsafeRawBufferPointer(rebasing: payload[pre...])
            seq = rcvNxt
        }
        let offset = seq - rcvNxt
        let room = rx.free &- offset
        if room <= 0 {
            ackNow = true
            return
        }
        if payload.count > room {
            payload = UnsafeRawBufferPointer(start: payload.baseAddress, count: room)
            fin = false
        }
        let n = payload.count
        if offset == 0 {
            if n > 0 {
                rx.write(at: rx.count, from: payload.baseAddress!, count: n)
                rx.commit(n)
                rcvNxt += n
                bytesReceived &+= UInt64(n)
            }
            if !ooo.isEmpty {
                ackNow = true   // filling a hole: ACK at once (RFC 5681 §4.2)
                while let first = ooo.first, !(rcvNxt < first.start) {
                    if rcvNxt < first.end {
                        let more = first.end - rcvNxt
                        rx.commit(more)
                        rcvNxt = first.end
                        bytesReceived &+= UInt64(more)
                    }
                    ooo.removeFirst()
                }
            }
            if fin { pendingFin = seq + n }
            if let pf = pendingFin, pf == rcvNxt {
                pendingFin = nil
                finArrived(now: now)
            } else if n > 0 {
                scheduleAck(bytes: n, now: now)
            }
            if n > 0 || finReceived { signalReadable() }
        } else {
            // Out of order: park it in the ring at its offset, remember the range, ACK at once
            // (duplicate ACK with SACK blocks).
            ackNow = true
            if n > 0 {
                if insertRange(&ooo, seq, seq + n, capacity: config.maxOutOfOrderRanges) {
                    rx.write(at: rx.count &+ offset, from: payload.baseAddress!, count: n)
                    oooLatest = seq
                }
            }
            if fin { pendingFin = seq + n }
        }
    }

    /// RFC 5961 §7: challenge ACKs are rate-limited layer-wide so they cannot be used to
    /// amplify or to probe for the connection's sequence space.
    private func challengeAck(now: Instant) {
        if layer.allowChallengeAck(now: now) { ackNow = true }
    }

    /// Unacknowledged bytes after which an ACK goes at once, batch or not.
    var stretchAckLimit: Int { max(2 &* rcvMssEstimate, min(64 << 10, rxBufferSize / 8)) }

    private func scheduleAck(bytes n: Int, now: Instant) {
        ackPending = true
        unackedBytes &+= n
        if n > rcvMssEstimate { rcvMssEstimate = n }
        if quickAcks > 0 {
            quickAcks &-= 1
            ackNow = true
        } else if unackedBytes >= stretchAckLimit {
            ackNow = true
        } else if unackedBytes >= 2 &* rcvMssEstimate {
            // RFC 5681 asks for an ACK every second full segment; like Linux with GRO we let one
            // input batch share it (up to `stretchAckLimit`). Every ACK written to a TAP costs a
            // syscall plus the kernel's ACK processing, which is most of a bulk receiver's CPU.
            if !ackAtPoll { ackAtPoll = true; layer.markDirty(self) }
        } else if delAckAt == nil {
            delAckAt = now + config.delayedAckTimeout
        }
    }

    private func finArrived(now: Instant) {
        rcvNxt += 1
        finReceived = true
        ackNow = true
        signalReadable()
        switch state {
        case .established: state = .closeWait
        case .finWait1:
            if finAcked { enterTimeWait(now: now) } else { state = .closing }
        case .finWait2: enterTimeWait(now: now)
        default: break
        }
    }

    func signalReadable() {
        guard userVisible, readableEpoch != layer.epoch else { return }
        readableEpoch = layer.epoch
        layer.post(.readable(handle))
    }

    private func enterTimeWait(now: Instant) {
        state = .timeWait
        rtoAt = nil
        rackAt = nil
        tlpAt = nil
        persistAt = nil
        keepAliveAt = nil
        delAckAt = nil
        closeAt = now + config.timeWait
        // TIME-WAIT only answers retransmitted FINs: everything we sent is acknowledged, so
        // the send side's memory goes now (thousands of closed connections may sit here), and
        // the receive ring too unless the app still has bytes to read from it.
        releaseBuffers(keepUnreadInput: userVisible)
        layer.enteredTimeWait(self)
        if userVisible { layer.post(.closed(handle)) }
    }

    /// Frees the send ring, its segment records and the reassembly list, and the receive ring
    /// unless it holds bytes the app may still read.
    func releaseBuffers(keepUnreadInput: Bool) {
        tx = nil
        txq.releaseStorage()
        ooo = []
        if !keepUnreadInput || (rx?.isEmpty ?? true) { rx = nil }
    }

    func startKeepAlive(now: Instant) {
        keepAliveAt = keepAlive ? lastReceive + config.keepAliveIdle : nil
    }

    // MARK: - Teardown

    private func resetReceived(now: Instant) {
        switch state {
        case .synReceived where listener != nil:
            terminate(error: nil, now: now)   // back to LISTEN: just forget the embryo
        case .synReceived, .synSent:
            terminate(error: .connectionRefused, now: now)
        case .closing, .lastAck, .timeWait:
            terminate(error: nil, now: now)
        default:
            terminate(error: .connectionReset, now: now)
        }
    }

    /// Ends the connection: reports it (failure or close) and lets the layer drop it.
    func terminate(error: SocketError?, now: Instant) {
        let wasTimeWait = state == .timeWait
        state = .closed
        rtoAt = nil; delAckAt = nil; persistAt = nil; keepAliveAt = nil; closeAt = nil; rackAt = nil; tlpAt = nil
        ackNow = false
        needSyn = false
        if userVisible {
            if let error { layer.post(.failed(handle, error)) } else if !wasTimeWait { layer.post(.closed(handle)) }
        }
        layer.connectionClosed(self)
    }

    // MARK: - Timers

    var nextDeadline: Instant? {
        earliest(earliest(earliest(earliest(rtoAt, delAckAt), earliest(persistAt, keepAliveAt)), closeAt),
                 earliest(rackAt, tlpAt))
    }

    func timersFired(now: Instant, tx out: some IPv4Transmitter) {
        if let t = closeAt, t <= now {
            closeAt = nil
            terminate(error: nil, now: now)
            return
        }
        if let t = rtoAt, t <= now {
            rtoAt = nil
            retransmitTimeout(now: now)
            if state == .closed { return }
        }
        if let t = rackAt, t <= now {
            rackAt = nil
            detectLosses(now: now)
        }
        if let t = tlpAt, t <= now {
            tlpAt = nil
            sendLossProbe(now: now)
        }
        if let t = persistAt, t <= now {
            persistAt = nil
            sendWindowProbe(now: now, tx: out)
        }
        if let t = delAckAt, t <= now {
            delAckAt = nil
            if ackPending { ackNow = true }
        }
        if let t = keepAliveAt, t <= now {
            keepAliveAt = nil
            keepAliveTimer(now: now, tx: out)
            if state == .closed { return }
        }
        output(now: now, tx: out)
    }

    private func retransmitTimeout(now: Instant) {
        retries &+= 1
        switch state {
        case .synSent, .synReceived:
            if retries > config.synRetries {
                if listener != nil, state == .synReceived { terminate(error: nil, now: now) } else { terminate(error: .timedOut, now: now) }
                return
            }
            backoff &+= 1
            needSyn = true
            retransmissions &+= 1
            rttSeq = nil
            return
        case .closed, .listen, .timeWait:
            return
        default:
            break
        }
        if sndWnd == 0 {
            // The peer's window is closed: probing it is the persist timer's job, and an
            // unanswered probe is not a reason to give up (the peer keeps ACKing).
            retries &-= 1
            goBackN()
            persistAt = now
            return
        }
        if retries > config.maxRetransmissions {
            terminate(error: .timedOut, now: now)
            return
        }
        cc.onTimeout(flight: sndMax - sndUna, mss: payloadMss)
        inRecovery = false
        dupAcks = 0
        recover = sndMax
        rtoRecovery = true
        forceRetransmit = false
        tlpAt = nil
        tlpProbes = 0
        rttSeq = nil
        // Everything not SACKed is lost (RFC 8985 §6.3); it is resent as the window allows,
        // SACKed segments are not. A second timeout in a row may mean the peer reneged on its
        // SACKs (RFC 2018 §8): then resend everything.
        let tracked = txq.first?.start == sndUna && txq.last?.end == sndMax && sndNxt == sndMax
        if tracked {
            let forgetSacks = backoff > 0
            lostBytes = 0
            for i in 0..<txq.count {
                var r = txq[i]
                if forgetSacks { r.flags &= ~TxRecord.sacked }
                if !r.isSacked {
                    r.flags |= TxRecord.lost
                    lostBytes &+= r.length
                }
                txq[i] = r
            }
            if forgetSacks { sackedBytes = 0; sackedSegments = 0 }
            rackAt = nil
        } else {
            goBackN()
        }
        backoff &+= 1
    }

    private func keepAliveTimer(now: Instant, tx out: some IPv4Transmitter) {
        guard keepAlive, state == .established || state == .closeWait else { return }
        let idle = now - lastReceive
        if keepAliveProbes == 0 && idle < config.keepAliveIdle {
            keepAliveAt = lastReceive + config.keepAliveIdle
            return
        }
        if keepAliveProbes >= config.keepAliveCount {
            terminate(error: .timedOut, now: now)
            return
        }
        keepAliveProbes &+= 1
        // A probe is an ACK one byte left of SND.UNA: the peer must answer with an ACK.
        sendSegment(seq: sndUna - 1, flags: .ack, dataOffset: 0, dataCount: 0, now: now, tx: out)
        keepAliveAt = now + config.keepAliveInterval
    }

    private func sendWindowProbe(now: Instant, tx out: some IPv4Transmitter) {
        guard isSynchronized, let tx else { return }
        let unsent = tx.count &- (sndUna - txBase)
        if sndWnd == 0 && unsent > 0 {
            // Zero-window probe carrying one byte (RFC 9293 §3.8.6.1).
            let off = sndUna - txBase
            sendSegment(seq: sndUna, flags: .ack, dataOffset: off, dataCount: 1, now: now, tx: out)
            if sndNxt == sndUna { recordSent(sndUna, sndUna + 1, retransmission: false, now: now) }
            if sndNxt < sndUna + 1 { sndNxt = sndUna + 1 }
            if sndMax < sndNxt { sndMax = sndNxt }
            persistBackoff &+= 1
            let base = max(rto.nanoseconds, config.minRTO.nanoseconds)
            var d = base
            for _ in 0..<min(persistBackoff, 20) { d = d &* 2; if d >= config.maxRTO.nanoseconds { break } }
            persistAt = now + Duration(nanoseconds: min(d, config.maxRTO.nanoseconds))
        }
    }

    // MARK: - Output

    /// Sends whatever is due: SYN/SYN-ACK, retransmissions, new data, FIN, ACKs.
    func output(now: Instant, tx out: some IPv4Transmitter) {
        switch state {
        case .closed, .listen:
            return
        case .synSent, .synReceived:
            if needsMssFromPath {
                needsMssFromPath = false
                advertisedMss = max(out.maxPayload(to: remote.address) &- TCPHeaderView.minimumHeaderLength, 64)
            }
            if needSyn {
                needSyn = false
                let flags: TCPFlags = state == .synSent ? .syn : [.syn, .ack]
                sendSegment(seq: iss, flags: flags, dataOffset: 0, dataCount: 0, now: now, tx: out)
                if sndNxt == iss { sndNxt = iss + 1 }
                if sndMax < sndNxt { sndMax = sndNxt }
                if rttSeq == nil && retries == 0 { rttSeq = iss + 1; rttStart = now }
                rtoAt = now + effectiveRTO
            } else if ackNow && state == .synReceived {
                sendSegment(seq: sndNxt, flags: .ack, dataOffset: 0, dataCount: 0, now: now, tx: out)
            }
            return
        case .timeWait:
            if ackNow { sendSegment(seq: sndMax, flags: .ack, dataOffset: 0, dataCount: 0, now: now, tx: out) }
            return
        default:
            break
        }
        guard let tx else { return }
        var sent = false
        var pipe = self.pipe
        let cwnd = cc.cwnd
        // Data per segment: the MSS minus the options this segment carries (RFC 6691), SACK
        // blocks included, so a full segment never exceeds the path MTU.
        let mss = max(sndMss &- optionLength(ack: true), 1)
        let dataEnd = txBase + tx.count

        // 1. Loss recovery: resend segments marked lost first (RFC 6675 §5 NextSeg rule 1).
        if lostBytes > 0 {
            var i = 0
            while (pipe < cwnd || forceRetransmit) && i < txq.count {
                var r = txq[i]
                i &+= 1
                if !r.isLost { continue }
                forceRetransmit = false
                transmitRecord(r, now: now, tx: out)
                r.sentAt = now.nanoseconds
                r.flags = (r.flags | TxRecord.retransmitted) & ~TxRecord.lost
                txq[i &- 1] = r
                lostBytes &-= r.length
                pipe &+= r.length
                sent = true
                if rtoAt == nil { rtoAt = now + effectiveRTO }
            }
        }

        // 2. New data (or data after a timeout's go-back-N), then FIN.
        while true {
            let offset = sndNxt - txBase
            let avail = tx.count &- offset
            if avail < 0 { break }          // FIN already beyond this point
            let finAfter = finQueued
            if avail == 0 {
                // Only a FIN can go: the first time, or again after a timeout's go-back-N.
                if finAfter && sndNxt == dataEnd {
                    sendSegment(seq: sndNxt, flags: [.ack, .fin], dataOffset: offset, dataCount: 0, now: now, tx: out)
                    if sndNxt < sndMax { retransmissions &+= 1 }
                    recordSent(sndNxt, sndNxt + 1, retransmission: sndNxt < sndMax, now: now)
                    sndNxt += 1
                    if sndMax < sndNxt { sndMax = sndNxt }
                    if rtoAt == nil { rtoAt = now + effectiveRTO }
                    sent = true
                }
                break
            }
            let usable = (sndUna + sndWnd) - sndNxt
            if usable <= 0 {
                if sndWnd == 0 && sndUna == sndMax && persistAt == nil {
                    persistAt = now + effectiveRTO
                }
                break
            }
            let cwndRoom = cwnd &- pipe
            var len = min(avail, mss, usable)
            if cwndRoom < len {
                // Do not split segments for the congestion window unless nothing is in flight.
                if probeQuota > 0 {
                    // A loss probe may exceed cwnd by one segment.
                } else if pipe > 0 {
                    cwndLimited = true
                    break
                } else {
                    len = max(cwndRoom, min(len, mss))
                }
            }
            let fin = finAfter && len == avail
            let retrans = sndNxt < sndMax
            if len < mss && !fin && !retrans {
                if len < avail {
                    // Window-limited fragment (sender SWS avoidance, RFC 9293 §3.8.6.2.1).
                    if sndUna < sndMax && len < maxSndWnd / 2 { break }
                } else if !noDelay && sndUna < lastSmallEnd && !(sndMax < lastSmallEnd) {
                    // Nagle (RFC 896) in Minshall's form, like Linux: hold a small segment only
                    // while an earlier small segment is unacknowledged. The end must lie in
                    // (SND.UNA, SND.MAX]: a stale or never-set value (0 compares "after" any
                    // ISS in the upper half of the sequence space) would hold data forever.
                    break
                }
            }
            var f: TCPFlags = .ack
            if fin { f.insert(.fin) }
            if len == avail { f.insert(.psh) }
            if len < mss { lastSmallEnd = sndNxt + len }
            sendSegment(seq: sndNxt, flags: f, dataOffset: offset, dataCount: len, now: now, tx: out)
            probeQuota = 0
            recordSent(sndNxt, sndNxt + (len &+ (fin ? 1 : 0)), retransmission: retrans, now: now)
            if retrans { retransmissions &+= 1 } else if rttSeq == nil && !tsOK {
                rttSeq = sndNxt + len
                rttStart = now
            }
            sndNxt += len &+ (fin ? 1 : 0)
            if sndMax < sndNxt { sndMax = sndNxt }
            pipe &+= len
            sent = true
            if rtoAt == nil { rtoAt = now + effectiveRTO }
            if fin { break }
        }

        // 3. A bare ACK if one is owed and nothing carried it. It carries SND.MAX, not SND.NXT:
        // after a go-back-N rewind SND.NXT can lie below what the peer already has, and the peer
        // would drop the ACK as out of window (both sides doing so deadlocks the connection).
        if !sent && ackNow {
            sendSegment(seq: sndMax, flags: .ack, dataOffset: 0, dataCount: 0, now: now, tx: out)
        }
        // Anything outstanding must be covered by a timer, or the connection could stall.
        if sndUna < sndMax && rtoAt == nil && persistAt == nil { rtoAt = now + effectiveRTO }
        if probeQuota > 0 {
            // The probe found no new data it could send: resend the last segment instead.
            probeQuota = 0
            probeLastSegment(now: now, tx: out)
            sent = true
        }
        if sent || tlpAt == nil { tlpAt = probeTimeout(now: now) }
    }

    /// Option bytes on a non-SYN segment (layout of `sendSegment`).
    func optionLength(ack: Bool) -> Int {
        var n = tsOK ? 12 : 0
        if sackOK && ack && !ooo.isEmpty { n &+= 4 &+ 8 &* min(ooo.count, tsOK ? 3 : 4) }
        return n
    }

    /// Builds one segment straight into the outgoing frame: header, options, payload from `tx`
    /// at `dataOffset`, checksum in place. Clears the pending-ACK state (every segment ACKs).
    func sendSegment(seq: SeqNumber, flags: TCPFlags, dataOffset: Int, dataCount: Int, now: Instant,
                     tx out: some IPv4Transmitter) {
        let syn = flags.contains(.syn)
        var hdr = TCPHeaderRepr(sourcePort: local.port, destinationPort: remote.port, sequenceNumber: seq,
                                ackNumber: flags.contains(.ack) ? rcvNxt : SeqNumber(0), flags: flags,
                                window: windowField(syn: syn))
        let cfg = config
        if syn {
            hdr.options.maxSegmentSize = UInt16(clamping: advertisedMss)
            let ackOfSyn = flags.contains(.ack)
            if cfg.windowScaling && (!ackOfSyn || wsOK) { hdr.options.windowScale = UInt8(rcvShift) }
            if cfg.sack && (!ackOfSyn || sackOK) { hdr.options.sackPermitted = true }
            if cfg.timestamps && (!ackOfSyn || tsOK) {
                hdr.options.timestamp = (tsNow(now), ackOfSyn ? tsRecent : 0)
            }
        } else {
            if tsOK { hdr.options.timestamp = (tsNow(now), tsRecent) }
            if sackOK && !ooo.isEmpty && flags.contains(.ack) {
                let maxBlocks = tsOK ? 3 : 4
                // First block: the range holding the latest out-of-order arrival (RFC 2018 §4).
                var first = -1
                for i in 0..<ooo.count where !(oooLatest < ooo[i].start) && oooLatest < ooo[i].end { first = i }
                if first >= 0 { hdr.options.sackBlocks.append(start: ooo[first].start, end: ooo[first].end) }
                var i = ooo.count &- 1
                while i >= 0 && hdr.options.sackBlocks.count < maxBlocks {
                    if i != first { hdr.options.sackBlocks.append(start: ooo[i].start, end: ooo[i].end) }
                    i &-= 1
                }
            }
        }
        let hl = hdr.headerLength
        let total = hl &+ dataCount
        let src = local.address
        let dst = remote.address
        let txbuf = self.tx
        out.transmit(src: src, dst: dst, proto: IPProtocol.tcp, capacity: total) { buf in
            guard buf.count >= total, let p = buf.baseAddress else { return 0 }
            hdr.emit(into: p)
            if dataCount > 0, let txbuf {
                txbuf.peek(at: dataOffset, into: p + hl, count: dataCount)
            }
            TCPHeaderRepr.fillChecksum(p, length: total, source: src, destination: dst)
            return total
        }
        if flags.contains(.ack) {
            lastAckSent = rcvNxt
            ackNow = false
            ackPending = false
            ackAtPoll = false
            unackedBytes = 0
            delAckAt = nil
        }
    }
}

/// Inserts [s, e) into a sorted list of disjoint ranges, merging neighbours. Returns false if the
/// range would need a new entry and the list is at capacity (the caller then drops the data).
@discardableResult
func insertRange(_ list: inout [(start: SeqNumber, end: SeqNumber)], _ s: SeqNumber, _ e: SeqNumber,
                 capacity: Int) -> Bool {
    var i = 0
    while i < list.count && list[i].end < s { i &+= 1 }
    // Now list[i].end >= s (or i == count).
    if i == list.count || e < list[i].start {
        guard list.count < capacity else { return false }
        list.insert((s, e), at: i)
        return true
    }
    // Overlaps or touches list[i]: merge, then swallow following ranges it reaches.
    if s < list[i].start { list[i].start = s }
    if list[i].end < e { list[i].end = e }
    while i &+ 1 < list.count && !(list[i].end < list[i &+ 1].start) {
        if list[i].end < list[i &+ 1].end { list[i].end = list[i &+ 1].end }
        list.remove(at: i &+ 1)
    }
    return true
}

