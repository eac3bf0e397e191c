/// One TCP connection (a TCB, RFC 9293 §3.3.1): the state machine and the sequence variables,
/// composed with one value type per concern, each in its own file with its own tests:
///   `rtt` RTTEstimator (RFC 6298 RTO, backoff, Karn, minimum RTT); `recovery` LossRecovery
///   (SACK scoreboard, RACK-TLP, NewReno fallback); `reassembly` ReceiveAssembler (out-of-order
///   ranges, SACK blocks to send); `timers` TCPTimers (the seven deadlines); `acks` AckPolicy
///   (quick, delayed and stretch ACKs, window updates); `cc` CongestionController.
/// This file is segment arrival (RFC 9293 §3.10.7.3/4) and teardown; TCPOutput.swift is what goes
/// out and the timers firing. Read RFC 9293 §3.10, RFC 7323, RFC 2018/6675, RFC 6298 and RFC 5961
/// (blind-attack mitigations) first.
///
/// Sans-I/O: every entry point gets `now` and a transmitter from the layer. Nothing is allocated
/// per segment: payload goes straight between the frame and the ring buffers, out-of-order data
/// into the receive ring at its offset, and the scoreboard and range list are reserved.
///
/// Send-side bookkeeping: `txBase` is the sequence number of `tx`'s first byte; once the app
/// shuts down writing, the FIN sits at `txBase + tx.count`. `sndNxt` can move back below `sndMax`
/// after a retransmission timeout (go-back-N from `sndUna`).
final class TCPConnection {
    unowned(unsafe) let layer: TCPLayer
    let slot: UInt32
    let generation: UInt32
    var handle: SocketHandle { SocketHandle(index: slot, generation: generation) }

    var state: TCPState
    let local: IPEndpoint
    let remote: IPEndpoint
    let key: TCPConnKey
    /// The addresses' share of the checksum pseudo-header (the same both ways).
    let addressSum: UInt64

    // Ownership.
    /// The driver released its handle; the connection finishes on its own.
    var released = false
    /// Passive connection not yet handed out by `accept` (events are held back until then).
    var listener: TCPListener?
    var accepted = true
    /// The app closed the socket (not just shut down writing): arriving data now draws an RST.
    var appClosed = false
    var lingerAbort = false
    /// Counted in the listener's SYN queue (embryonic, SYN-RECEIVED from a passive open).
    var inSynQueue = false
    /// Active open: learn the MSS to advertise from the transmitter at the first output.
    var needsMssFromPath = false
    /// Active open on an ephemeral port: the port table's claim, given back when it closes.
    var ephemeralPort = false

    // Buffers (made when the connection becomes usable; sizes and memory follow the load, see
    // TCPBufferTuning.swift). The sizes are the most the rings may grow to.
    var rx: RingBuffer?
    var tx: RingBuffer?
    var rxBufferSize: Int
    var txBufferSize: Int
    /// SO_RCVBUF/SO_SNDBUF fixed the size: no autotuning.
    var rxLocked = false
    var txLocked = false
    /// Size the receive ring tends to (it shrinks to it only as the advertised window allows).
    var rxTarget = 0
    /// Receive autotuning: start of the current measurement and bytes delivered by then.
    var drsStart: UInt64 = 0
    var drsDelivered: UInt64 = 0

    // Per-socket options.
    var noDelay: Bool
    var keepAlive: Bool
    /// In-order data may skip the receive ring (`TCPLayer.directReceiver`).
    var directReceive = false
    /// Read per segment, checked at run time unless marked (+8% instructions per MiB in
    /// `NetStackBench tcp`); only `setOption` writes it (see "The parts" below).
    @exclusivity(unchecked) var sockopts: TCPSocketOptions
    /// TCP_CORK's limit passed (or TCP_NODELAY was set while corked): the next output sends the
    /// held partial segment.
    var corkFlush = false
    /// A passive open whose bare ACK a deferring listener (TCP_DEFER_ACCEPT) ignored.
    var deferAcked = false

    // Send sequence variables.
    var iss = SeqNumber(0)
    var sndUna = SeqNumber(0)
    var sndNxt = SeqNumber(0)
    var sndMax = SeqNumber(0)
    var txBase = SeqNumber(0)
    var sndWnd = 0
    var maxSndWnd = 0
    var sndWl1 = SeqNumber(0)
    var sndWl2 = SeqNumber(0)
    var sndShift = 0
    /// Peer's MSS limited by our path: data plus options per segment (RFC 6691).
    var sndMss = 536
    var finQueued = false
    var needSyn = false
    /// End of the last small (sub-MSS) segment sent, for Minshall's Nagle variant.
    var lastSmallEnd = SeqNumber(0)
    /// The last output stopped at the congestion window (CUBIC/NewReno grow only then).
    var cwndLimited = false

    // Receive sequence variables.
    var irs = SeqNumber(0)
    var rcvNxt = SeqNumber(0)
    var rcvShift = 0
    var rcvAdvEdge = SeqNumber(0)
    var finReceived = false
    var pendingFin: SeqNumber?
    /// Stream offset of the received urgent byte still ahead of the app (TCPUrgent.swift).
    var urgentMark: UInt64?
    /// SND.UP: the sequence number after the app's last urgent byte, while unacknowledged.
    var sndUp: SeqNumber?
    var advertisedMss = 536

    // Negotiated options.
    var tsOK = false
    var sackOK = false
    var wsOK = false
    var tsRecent: UInt32 = 0
    var tsOffset: UInt32 = 0
    var lastAckSent = SeqNumber(0)

    // The parts. No property needs `@exclusivity(unchecked)` for its own sake: the optimizer
    // proves an access static when nothing called during it can reach the property, which
    // holds for every scalar and for `rtt`, `timers` and `acks` (never passed `inout`). These
    // three are modified by calls into Array code (or libm) it cannot see through, so without
    // the attribute every access pays a runtime check. The connection is single-threaded and
    // never re-entered. Cost of the checks (callgrind, `NetStackBench tcp` / `sim`, instructions
    // per MiB moved): cc +1.6% / +0.8%, recovery +8.1% / +3.6%, reassembly +5.0% / +2.1%.
    var rtt: RTTEstimator
    @exclusivity(unchecked) var cc: CongestionController
    @exclusivity(unchecked) var recovery = LossRecovery()
    @exclusivity(unchecked) var reassembly: ReceiveAssembler
    var timers = TCPTimers()
    var acks: AckPolicy

    // Timer state.
    /// Retransmission timeouts in a row (SYN or data) before giving up.
    var retries = 0
    var persistBackoff = 0
    var keepAliveProbes = 0
    /// When the last segment arrived: keepalive measures idleness from it.
    var lastReceive: Instant
    /// Last forward progress of the send side: the oldest unacknowledged data was sent (or
    /// acknowledged data made room) then. TCP_USER_TIMEOUT measures from it.
    var lastProgress: Instant
    /// Deadline of this connection's live entry in the layer's timer heap.
    var heapDeadline: UInt64?
    var inDirtyList = false

    // Events.
    var readableEpoch: UInt64 = .max
    var wantWritable = false

    // Statistics.
    var bytesReceived: UInt64 = 0
    var bytesSent: UInt64 = 0
    var retransmissions: UInt64 = 0
    var stats = TCPConnectionStats()

    init(layer: TCPLayer, slot: UInt32, generation: UInt32, state: TCPState, local: IPEndpoint,
         remote: IPEndpoint, rxBufferSize: Int, txBufferSize: Int, noDelay: Bool, congestion: CongestionControl,
         options: TCPSocketOptions? = nil, now: Instant) {
        self.layer = layer
        self.slot = slot
        self.generation = generation
        self.state = state
        self.local = local
        self.remote = remote
        key = TCPConnKey(local: local, remote: remote)
        addressSum = Checksum.addressSum(local.address, remote.address)
        self.rxBufferSize = rxBufferSize
        self.txBufferSize = txBufferSize
        self.noDelay = noDelay
        lastReceive = now
        lastProgress = now
        let cfg = layer.config
        keepAlive = cfg.keepAlive
        let o = options ?? TCPSocketOptions(cfg)
        sockopts = o
        rtt = RTTEstimator(initialRTO: cfg.initialRTO, minRTO: o.minRTO, maxRTO: o.maxRTO)
        acks = AckPolicy(quickAcks: cfg.quickAckSegments)
        cc = CongestionController(algorithm: congestion, mss: 536, initialSegments: cfg.initialWindowSegments)
        reassembly = ReceiveAssembler(capacity: cfg.maxOutOfOrderRanges)
        rcvShift = cfg.windowScaling ? Self.shift(for: windowLimit(rxBufferSize)) : 0
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
    /// Payload bytes per full segment: MSS minus the options every segment carries.
    var payloadMss: Int { max(sndMss &- (tsOK ? 12 : 0), 1) }
    var userVisible: Bool { !released && accepted }
    var lowWater: Int { min((tx?.capacity ?? txBufferSize) / 2, 256 << 10) }

    /// The rings, at their initial sizes and without memory until bytes arrive.
    func allocateBuffers() {
        if rx == nil {
            rxTarget = initialReceiveCapacity
            rx = RingBuffer(capacity: rxTarget, memory: layer.ringMemory)
        }
        if tx == nil { tx = RingBuffer(capacity: initialSendCapacity, memory: layer.ringMemory) }
    }

    /// Our timestamp clock (RFC 7323 §5.4): milliseconds plus a per-connection offset.
    func tsNow(_ now: Instant) -> UInt32 { UInt32(truncatingIfNeeded: now.nanoseconds / 1_000_000) &+ tsOffset }

    // MARK: - Segment arrival

    enum ArrivalResult { case done, reopen }

    /// Processes one segment for this connection (RFC 9293 §3.10.7.3/4). Output (ACKs, data
    /// that the ACK allowed) is sent before returning. `segmentSize` > 0: a super-segment of
    /// pieces that size (see `TCPLayer.receive`).
    func segmentArrived(_ seg: TCPHeaderView, options: TCPSegmentOptions, segmentSize: Int = 0, precopied: Bool = false,
                        now: Instant, tx out: some IPTransmitter) -> ArrivalResult {
        lastReceive = now
        keepAliveProbes = 0
        let flags = seg.flags
        stats.segmentsIn &+= 1
        if flags.contains(.ack) { stats.lastAckReceived = now }
        if state == .synSent {
            synSentArrived(seg, flags: flags, options: options, now: now, tx: out)
            output(now: now, tx: out)
            return .done
        }
        let seq = seg.sequenceNumber
        let payloadCount = seg.payload.count

        // A new SYN for a connection in TIME-WAIT may start a new incarnation (RFC 9293 §3.10.7.4
        // note): its sequence number is above RCV.NXT, or, with timestamps, its TSval is newer
        // than the last one seen (RFC 6191); never one PAWS would reject. Linux's
        // tcp_timewait_state_process applies the same two tests.
        if state == .timeWait, flags.contains(.syn), !flags.contains(.ack), !flags.contains(.rst) {
            let tsNewer = tsOK ? options.timestamp.map { Int32(bitPattern: $0.value &- tsRecent) } : nil
            if tsNewer.map({ $0 >= 0 }) ?? true, rcvNxt < seq || (tsNewer ?? 0) > 0 {
                return .reopen
            }
        }

        // Simultaneous open: the peer's SYN-ACK repeats its SYN (seq = IRS) but acknowledges ours.
        if state == .synReceived, flags.contains([.syn, .ack]), !flags.contains(.rst), seq == irs {
            let ack = seg.ackNumber
            if sndUna < ack, !(sndMax < ack), becomeEstablishedPassive(now: now) {
                sndUna = ack
                sndWnd = Int(seg.window)
                sndWl1 = seq
                sndWl2 = ack
                acks.immediate = true
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
                acks.immediate = true
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
                acks.immediate = true
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
            if defersBareAck(payloadCount: payloadCount, flags: flags) { return .done }
            guard becomeEstablishedPassive(now: now) else { return .done }
        }

        if !processAck(seg, ack: ack, flags: flags, options: options, payloadCount: payloadCount, now: now) {
            output(now: now, tx: out)
            return .done
        }
        if state == .closed { return .done }

        if flags.contains(.urg), state == .established || state == .finWait1 || state == .finWait2 {
            urgentArrived(seg, seq: seq)
        }

        // Data and FIN.
        if payloadCount > 0 || flags.contains(.fin) {
            switch state {
            case .established, .finWait1, .finWait2:
                if appClosed && payloadCount > 0 {
                    // Nobody will read it (RFC 9293 §3.10.7 close, Linux behaviour): reset.
                    layer.sendReset(to: remote, from: local, seq: acceptableSeq(sndNxt), ack: rcvNxt, tx: out)
                    terminate(error: nil, now: now)
                    return .done
                }
                receiveData(seg, seq: seq, flags: flags, segmentSize: segmentSize, precopied: precopied, now: now)
            case .closeWait, .closing, .lastAck, .timeWait:
                // Peer already sent FIN: anything new is a retransmission; re-ACK it.
                if flags.contains(.fin) || payloadCount > 0 {
                    acks.immediate = true
                    if state == .timeWait { timers.close = now + config.timeWait }
                }
            default: break
            }
        }
        if state == .closed { return .done }
        output(now: now, tx: out)
        return .done
    }

    private func synSentArrived(_ seg: TCPHeaderView, flags: TCPFlags, options: TCPSegmentOptions, now: Instant,
                                tx out: some IPTransmitter) {
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
            timers.rto = nil
            retries = 0
            rtt.backoff = 0
            // The SYN's own timing (full clock resolution: a LAN's RTT is well below the 1 ms
            // timestamp tick) unless it was resent (Karn); else the echoed timestamp, unless
            // implausibly old (bogus, or from an earlier incarnation).
            if !rtt.timedSegmentAcked(ack, now: now), tsOK, let ts = options.timestamp, ts.echoReply != 0 {
                rtt.timestampSample(nowTicks: tsNow(now), echo: ts.echoReply)
            }
            rtt.cancelTiming()
            stats.bytesAcked = 1   // our SYN, as Linux counts it
            lastProgress = now
            state = finQueued ? .finWait1 : .established
            startKeepAlive(now: now)
            acks.immediate = true
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
            guard !l.acceptQueueFull else { return false }
            if inSynQueue { l.synQueue &-= 1; inSynQueue = false }
            l.acceptQueue.append(self)
            accepted = false
            if l.acceptQueue.count == 1, !l.released { layer.post(.acceptable(l.handle)) }
        }
        allocateBuffers()
        state = finQueued ? .finWait1 : .established
        timers.rto = nil
        retries = 0
        rtt.backoff = 0
        needSyn = false
        startKeepAlive(now: now)
        if listener == nil, userVisible { layer.post(.connected(handle)) }   // simultaneous open
        return true
    }

    /// ACK processing (RFC 9293 §3.10.7.4 fifth check). Returns false to drop the segment.
    private func processAck(_ seg: TCPHeaderView, ack: SeqNumber, flags: TCPFlags, options: TCPSegmentOptions,
                            payloadCount: Int, now: Instant) -> Bool {
        if sndMax < ack {
            acks.immediate = true   // acks something never sent
            return false
        }
        if ack < sndUna - maxSndWnd {
            challengeAck(now: now)   // RFC 5961 §5: too old
            return false
        }
        let seq = seg.sequenceNumber
        let window = Int(seg.window) << sndShift
        let flight = sndMax - sndUna
        let prevRackEnd = recovery.rackEnd

        if sndUna < ack {
            newAck(ack, options: options, prevRackEnd: prevRackEnd, now: now)
        } else if ack == sndUna, payloadCount == 0, !flags.contains(.syn), !flags.contains(.fin), flight > 0,
                  window == sndWnd, window > 0 {
            if recovery.duplicateAck(sackOK: sackOK) { enterRecovery() }
        }
        // SACK blocks ride on data segments too (the echo case): use them from every ACK.
        if sackOK, options.sackBlocks.count > 0 {
            let m = recovery.sackReceived(options.sackBlocks, sndUna: sndUna, sndMax: sndMax,
                                          prevRackEnd: prevRackEnd, now: now, minRTT: rtt.minRTT)
            rtt.delivered(rtt: m)
        }
        if !recovery.isEmpty { detectLosses(now: now) }

        // Window update (RFC 9293 §3.10.7.4: only from newer segments).
        if sndWl1 < seq || (sndWl1 == seq && !(ack < sndWl2)) {
            let wasZero = sndWnd == 0
            sndWnd = window
            if sndWnd > maxSndWnd { maxSndWnd = sndWnd }
            sndWl1 = seq
            sndWl2 = ack
            if wasZero && sndWnd > 0 {
                timers.persist = nil
                persistBackoff = 0
                // Resend the probe byte (and anything else sent into the closed window).
                if !recovery.inRecovery { goBackN() }
            }
        }

        // State transitions driven by our FIN being acknowledged.
        switch state {
        case .finWait1:
            if finAcked {
                state = .finWait2
                if released || appClosed { armFinWait2Timeout(now: now) }
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
            if tx.isEmpty { sendRingDrained(now: now) }
            if wantWritable, isWritable { wantWritable = false; if userVisible { layer.post(.writable(handle)) } }
        }
        lastProgress = now
        // Linux counts our SYN in bytes_acked only on active opens (a passive open's SYN-ACK
        // belongs to the request socket).
        let synAck = sndUna == iss && listener != nil ? 1 : 0
        stats.acked(bytes: UInt64(acked &- synAck), now: now, srtt: rtt.srtt)
        if retries > 0, let start = stats.timeoutEpoch {
            stats.timeoutRecoveryTime = stats.timeoutRecoveryTime + (now - start)
            stats.timeoutEpoch = nil
        }
        sndUna = ack
        if sndNxt < sndUna { sndNxt = sndUna }
        // Keep the Nagle marker inside the live window so sequence wrap can never revive it.
        if lastSmallEnd < sndUna { lastSmallEnd = sndUna }
        let (newest, minRTT) = recovery.cumulativeAck(sndUna: sndUna, prevRackEnd: prevRackEnd, now: now,
                                                      minRTT: rtt.minRTT)
        rtt.delivered(rtt: minRTT)
        if recovery.isEmpty { timers.rack = nil }

        // RTT sample: the send time of the newest segment this ACK covers when it was sent only
        // once (Karn), at full clock resolution; else timestamps (RFC 7323 §4.1, 1 ms ticks);
        // else the timed segment.
        if newest > 0 {
            rtt.sample(now.nanoseconds &- newest)
            rtt.cancelTiming()
        } else if rtt.timedSegmentAcked(ack, now: now) {
            // A timed SYN-ACK (with timestamps only the handshake is timed): full resolution.
        } else if tsOK, let ts = options.timestamp, ts.echoReply != 0 {
            rtt.timestampSample(nowTicks: tsNow(now), echo: ts.echoReply)
        } else {
            rtt.timedSegmentAcked(ack, now: now)
        }
        retries = 0
        rtt.backoff = 0

        switch recovery.newDataAcked(ack, sackOK: sackOK) {
        case .recoveryEnded:
            // Like Linux, not RFC 6582's min(ssthresh, FlightSize + SMSS): when the ACK
            // ending recovery leaves little in flight that collapses cwnd to one segment,
            // and a lone segment then waits for the peer's delayed ACK.
            cc.cwnd = max(cc.ssthresh, 2 &* payloadMss)
        case .partialAck:
            break
        case .notRecovering:
            cc.onAck(acked: acked, mss: payloadMss, now: now, srtt: Duration(nanoseconds: rtt.srtt),
                     cwndLimited: wasCwndLimited)
        }
        cwndLimited = false
        timers.rto = sndUna == sndMax ? nil : now + rtt.effectiveRTO
        timers.tlp = probeTimeout(now: now)
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

    /// Ends the connection: reports it (failure, or close unless already reported by TIME-WAIT)
    /// and lets the layer drop it.
    func terminate(error: SocketError?, now: Instant) {
        let wasTimeWait = state == .timeWait
        state = .closed
        timers.stopAll()
        acks.immediate = false
        needSyn = false
        // Nothing will be sent or arrive any more: the memory goes now (the app may still
        // read what is left, and a handle may stay open long after).
        releaseBuffers(keepUnreadInput: userVisible)
        if userVisible {
            if let error { layer.post(.failed(handle, error)) } else if !wasTimeWait { layer.post(.closed(handle)) }
        }
        layer.connectionClosed(self)
    }
}
