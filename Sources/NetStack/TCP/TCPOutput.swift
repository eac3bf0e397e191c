/// What a connection sends, and its timers firing: `output` (SYN/SYN-ACK, resends of segments
/// loss recovery marked lost, new data under the peer's and the congestion window with Nagle and
/// sender SWS avoidance, FIN, bare ACKs), loss and window probes, keepalives, the RTO, the
/// receive window we advertise, and `sendSegment`, which builds each segment straight into the
/// outgoing frame.
extension TCPConnection {
    // MARK: - Timers

    func timersFired(now: Instant, tx out: some IPTransmitter) {
        if timers.fire(.close, now: now) {
            if state == .finWait2 && sockopts.finWait2Timeout == nil {
                layer.sendReset(to: remote, from: local, seq: acceptableSeq(sndNxt), ack: rcvNxt, tx: out)   // TCP_LINGER2 < 0
            }
            terminate(error: nil, now: now)
            return
        }
        if timers.fire(.rto, now: now) {
            retransmitTimeout(now: now)
            if state == .closed { return }
        }
        if timers.fire(.rack, now: now) { detectLosses(now: now) }
        if timers.fire(.tlp, now: now) { sendLossProbe(now: now) }
        if timers.fire(.persist, now: now) { sendWindowProbe(now: now, tx: out) }
        if timers.fire(.delayedAck, now: now) { acks.delayedAckExpired() }
        if timers.fire(.keepAlive, now: now) {
            keepAliveTimer(now: now, tx: out)
            if state == .closed { return }
        }
        if timers.fire(.cork, now: now) { corkFlush = true }
        if timers.fire(.rings, now: now) { ringIdleFired(now: now) }
        output(now: now, tx: out)
    }

    private func retransmitTimeout(now: Instant) {
        retries &+= 1
        switch state {
        case .synSent, .synReceived:
            // Linux's syn_ack_recalc for a deferring listener (TCP_DEFER_ACCEPT): once the peer
            // ACKed, no SYN-ACK is resent until the last timeout of the deferral, and the
            // embryo lives until the deferral is over.
            let timeouts = retries &- 1
            // TCP_USER_TIMEOUT bounds a connect too, counted from the first SYN once one was
            // resent (Linux's retransmits_timed_out): ETIMEDOUT at the first timeout past it.
            if state == .synSent && sockopts.userTimeout > .zero && timeouts >= 1 && now - lastProgress >= sockopts.userTimeout {
                terminate(error: .timedOut, now: now)
                return
            }
            let deferring = deferAcked ? (listener?.options.deferAccept ?? 0) : 0
            if timeouts >= sockopts.synRetries && (deferring == 0 || timeouts >= deferring) {
                terminate(error: listener != nil && state == .synReceived ? nil : .timedOut, now: now)
                return
            }
            rtt.backoff &+= 1
            rtt.cancelTiming()
            if deferring > 0 && timeouts < deferring &- 1 {
                timers.rto = now + rtt.effectiveRTO
                return
            }
            needSyn = true
            retransmissions &+= 1
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
            timers.persist = now
            return
        }
        if sockopts.userTimeout > .zero {
            // TCP_USER_TIMEOUT replaces the retransmission count (retransmits_timed_out).
            if now - lastProgress >= sockopts.userTimeout {
                terminate(error: .timedOut, now: now)
                return
            }
        } else if retries > config.maxRetransmissions {
            terminate(error: .timedOut, now: now)
            return
        }
        stats.totalTimeouts &+= 1
        if retries == 1 {
            stats.timeoutRecoveries &+= 1
            stats.timeoutEpoch = now
        }
        cc.onTimeout(flight: sndMax - sndUna, mss: payloadMss)
        let tracked = recovery.covers(sndUna, sndMax) && sndNxt == sndMax
        recovery.retransmissionTimeout(sndMax: sndMax, tracked: tracked, backoff: rtt.backoff)
        timers.tlp = nil
        rtt.cancelTiming()
        if tracked { timers.rack = nil } else { goBackN() }
        rtt.backoff &+= 1
        if sockopts.userTimeout > .zero {
            // The next timeout comes no later than the user timeout (tcp_clamp_rto_to_user_timeout).
            timers.rto = min(now + rtt.effectiveRTO, lastProgress + sockopts.userTimeout)
        }
    }

    /// The probe timer fired: see `LossRecovery.probeFired`; the output that follows sends it.
    private func sendLossProbe(now: Instant) {
        guard isSynchronized, sndUna < sndMax, sndWnd > 0, sndNxt == sndMax else { return }
        recovery.probeFired()
    }

    private func keepAliveTimer(now: Instant, tx out: some IPTransmitter) {
        guard keepAlive, state == .established || state == .closeWait else { return }
        let idle = now - lastReceive
        if keepAliveProbes == 0 && idle < sockopts.keepAliveIdle {
            timers.keepAlive = lastReceive + sockopts.keepAliveIdle
            return
        }
        // With TCP_USER_TIMEOUT the silence since the last segment decides, not the count.
        let expired = sockopts.userTimeout > .zero
            ? keepAliveProbes > 0 && idle >= sockopts.userTimeout
            : keepAliveProbes >= sockopts.keepAliveCount
        if expired {
            terminate(error: .timedOut, now: now)
            return
        }
        keepAliveProbes &+= 1
        // A probe is an ACK one byte left of SND.UNA: the peer must answer with an ACK.
        sendSegment(seq: sndUna - 1, flags: .ack, dataOffset: 0, dataCount: 0, now: now, tx: out)
        timers.keepAlive = now + sockopts.keepAliveInterval
    }

    /// The sequence number a segment without data carries (an ACK, a reset; Linux's
    /// tcp_acceptable_seq): `seq`, but not past the right edge of the peer's window, SND.UNA +
    /// SND.WND. A byte sent beyond that edge, a zero-window probe the peer did not take, would
    /// put the segment outside the peer's window, and the peer would drop it together with the
    /// window update it carries: with both windows closed and each side waiting for the other's
    /// update, the connection would stall for good.
    func acceptableSeq(_ seq: SeqNumber) -> SeqNumber {
        SeqNumber.min(seq, sndUna + sndWnd)
    }

    private func sendWindowProbe(now: Instant, tx out: some IPTransmitter) {
        guard isSynchronized, let tx else { return }
        let unsent = tx.count &- (sndUna - txBase)
        if sndWnd == 0 && unsent > 0 {
            if sockopts.userTimeout > .zero && now - lastProgress >= sockopts.userTimeout {
                terminate(error: .timedOut, now: now)
                return
            }
            // Zero-window probe carrying one byte (RFC 9293 §3.8.6.1).
            let off = sndUna - txBase
            sendSegment(seq: sndUna, flags: .ack, dataOffset: off, dataCount: 1, now: now, tx: out)
            if sndNxt == sndUna { recovery.recordSent(sndUna, sndUna + 1, retransmission: false, sndUna: sndUna, now: now) }
            if sndNxt < sndUna + 1 { sndNxt = sndUna + 1 }
            if sndMax < sndNxt { sndMax = sndNxt }
            persistBackoff &+= 1
            let maxRTO = config.maxRTO.nanoseconds
            var d = max(rtt.rto.nanoseconds, config.minRTO.nanoseconds)
            for _ in 0..<min(persistBackoff, 20) { d = d &* 2; if d >= maxRTO { break } }
            timers.persist = now + Duration(nanoseconds: min(d, maxRTO))
        }
    }

    // MARK: - Loss recovery (the decisions are LossRecovery's)

    /// Forgets the per-segment state and resends from SND.UNA (after a closed window reopens,
    /// or an RTO when the queue is not usable).
    func goBackN() {
        sndNxt = sndUna
        recovery.forgetQueue()
        timers.rack = nil
    }

    func detectLosses(now: Instant) {
        let r = recovery.detectLosses(now: now, rtt: rtt)
        timers.rack = r.timer
        if r.enterRecovery { enterRecovery() }
    }

    func enterRecovery() {
        recovery.enterRecovery(sndMax: sndMax)
        cc.onLoss(flight: sndMax - sndUna, mss: payloadMss)
    }

    func probeTimeout(now: Instant) -> Instant? {
        recovery.probeTimeout(now: now, canProbe: sackOK && sndUna < sndMax && sndWnd > 0 && sndNxt == sndMax,
                              rtt: rtt, rtoDeadline: timers.rto)
    }

    // MARK: - Output

    /// Sends whatever is due: SYN/SYN-ACK, retransmissions, new data, FIN, ACKs.
    func output(now: Instant, tx out: some IPTransmitter) {
        switch state {
        case .closed, .listen:
            return
        case .synSent, .synReceived:
            if needsMssFromPath {
                needsMssFromPath = false
                advertisedMss = limitedMss(max(out.maxPayload(to: remote.address) &- TCPHeaderView.minimumHeaderLength, 64))
            }
            if needSyn {
                needSyn = false
                let flags: TCPFlags = state == .synSent ? .syn : [.syn, .ack]
                sendSegment(seq: iss, flags: flags, dataOffset: 0, dataCount: 0, now: now, tx: out)
                if sndNxt == iss { sndNxt = iss + 1 }
                if sndMax < sndNxt { sndMax = sndNxt }
                if retries == 0 { rtt.startTiming(end: iss + 1, at: now) }
                timers.rto = now + rtt.effectiveRTO
                if state == .synSent && retries > 0 && sockopts.userTimeout > .zero {
                    // No later than the user timeout (tcp_clamp_rto_to_user_timeout).
                    timers.rto = min(now + rtt.effectiveRTO, lastProgress + sockopts.userTimeout)
                }
            } else if acks.immediate && state == .synReceived {
                sendSegment(seq: sndNxt, flags: .ack, dataOffset: 0, dataCount: 0, now: now, tx: out)
            }
            return
        case .timeWait:
            if acks.immediate { sendSegment(seq: acceptableSeq(sndMax), flags: .ack, dataOffset: 0, dataCount: 0, now: now, tx: out) }
            return
        default:
            break
        }
        guard let tx else { return }
        var sent = false
        var corked = false
        var pipe = recovery.pipe(flight: sndNxt - sndUna, sackOK: sackOK, mss: payloadMss)
        let cwnd = cc.cwnd
        // Data per segment: the MSS minus the options this segment carries (RFC 6691), SACK
        // blocks included, so a full segment never exceeds the path MTU.
        let mss = max(sndMss &- optionLength(ack: true), 1)
        let dataEnd = txBase + tx.count
        // With segmentation offload (TSO), new data leaves as super-segments of whole MSS-sized
        // pieces that the link cuts up; everything else about them (windows, scoreboard, ACK
        // clock) stays per MSS.
        let urgent = urgentMode
        let maxLen = urgent ? mss : superSegmentLength(mss: mss, limit: out.segmentationLimit(to: remote.address))

        // 1. Loss recovery: resend segments marked lost first (RFC 6675 §5 NextSeg rule 1).
        var i = 0
        while pipe < cwnd || recovery.forceRetransmit, let j = recovery.nextLost(from: i) {
            recovery.forceRetransmit = false
            let r = recovery.resend(at: j, now: now)
            transmitRecord(r, now: now, tx: out)
            i = j &+ 1
            pipe &+= r.length
            sent = true
            if timers.rto == nil { timers.rto = now + rtt.effectiveRTO }
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
                    recovery.recordSent(sndNxt, sndNxt + 1, retransmission: sndNxt < sndMax, sndUna: sndUna, now: now)
                    sndNxt += 1
                    if sndMax < sndNxt { sndMax = sndNxt }
                    if timers.rto == nil { timers.rto = now + rtt.effectiveRTO }
                    sent = true
                }
                break
            }
            let usable = (sndUna + sndWnd) - sndNxt
            if usable <= 0 {
                if sndWnd == 0 && sndUna == sndMax && timers.persist == nil {
                    timers.persist = now + rtt.effectiveRTO
                }
                break
            }
            let cwndRoom = cwnd &- pipe
            var len = min(avail, maxLen, usable)
            if cwndRoom < len {
                // Do not split segments for the congestion window unless nothing is in flight.
                if recovery.probeQuota > 0 {
                    // A loss probe may exceed cwnd by one segment.
                    len = min(len, mss)
                } else if len > mss && cwndRoom >= mss {
                    // A super-segment: as many whole segments as the window holds.
                    len = cwndRoom / mss &* mss
                    cwndLimited = true
                } else if pipe > 0 {
                    cwndLimited = true
                    break
                } else {
                    len = max(cwndRoom, min(len, mss))
                }
            }
            let fin = finAfter && len == avail
            let retrans = sndNxt < sndMax
            if len < mss && !fin && !retrans && !urgent {
                if len < avail {
                    // Window-limited fragment (sender SWS avoidance, RFC 9293 §3.8.6.2.1).
                    if sndUna < sndMax && len < maxSndWnd / 2 { break }
                } else if sockopts.cork && !corkFlush {
                    // TCP_CORK: the partial segment waits for more data, uncorking, or the limit.
                    corked = true
                    break
                } else if corkFlush {
                    // The cork's time limit (or TCP_NODELAY) pushes the partial segment now.
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
            sendSegment(seq: sndNxt, flags: f, dataOffset: offset, dataCount: len, segmentSize: len > mss ? mss : 0,
                        now: now, tx: out)
            recovery.probeQuota = 0
            recordSegments(from: sndNxt, length: len, fin: fin, mss: mss, retransmission: retrans, now: now)
            if retrans { retransmissions &+= 1 } else if !tsOK { rtt.startTiming(end: sndNxt + len, at: now) }
            sndNxt += len &+ (fin ? 1 : 0)
            if sndMax < sndNxt { sndMax = sndNxt }
            pipe &+= len
            sent = true
            if timers.rto == nil { timers.rto = now + rtt.effectiveRTO }
            if fin { break }
        }

        if corked {
            timers.startIfStopped(.cork, at: now + config.corkLimit)
        } else {
            timers.cork = nil
            corkFlush = false
        }
        if wantWritable, isWritable { wantWritable = false; if userVisible { layer.post(.writable(handle)) } }

        // 3. A bare ACK if one is owed and nothing carried it. It carries SND.MAX, not SND.NXT:
        // after a go-back-N rewind SND.NXT can lie below what the peer already has, and the peer
        // would drop the ACK as out of window (both sides doing so deadlocks the connection);
        // but never past the peer's window (`acceptableSeq`).
        if !sent && acks.immediate {
            sendSegment(seq: acceptableSeq(sndMax), flags: .ack, dataOffset: 0, dataCount: 0, now: now, tx: out)
        }
        // Anything outstanding must be covered by a timer, or the connection could stall.
        if sndUna < sndMax && timers.rto == nil && timers.persist == nil { timers.rto = now + rtt.effectiveRTO }
        if recovery.probeQuota > 0 {
            // The probe found no new data it could send: resend the last segment instead.
            recovery.probeQuota = 0
            if let r = recovery.takeProbeSegment(now: now) {
                transmitRecord(r, now: now, tx: out)
                if timers.rto == nil { timers.rto = now + rtt.effectiveRTO }
            }
            sent = true
        }
        if sent || timers.tlp == nil { timers.tlp = probeTimeout(now: now) }
    }

    /// Longest segment `output` builds: one MSS, or with a `limit` (the transmitter's
    /// segmentation limit, header included) as many whole MSS-sized pieces as fit it.
    func superSegmentLength(mss: Int, limit: Int) -> Int {
        let room = limit &- TCPHeaderView.minimumHeaderLength &- optionLength(ack: true)
        return room >= 2 &* mss ? room / mss &* mss : mss
    }

    /// Records a segment just sent at SND.NXT in the scoreboard: a super-segment as one record
    /// per MSS-sized piece, the pieces the peer receives, acknowledges and SACKs.
    private func recordSegments(from start: SeqNumber, length len: Int, fin: Bool, mss: Int, retransmission: Bool,
                                now: Instant) {
        var s = start
        var left = len
        while left > mss {
            recovery.recordSent(s, s + mss, retransmission: retransmission, sndUna: sndUna, now: now)
            s = s + mss
            left &-= mss
        }
        recovery.recordSent(s, s + (left &+ (fin ? 1 : 0)), retransmission: retransmission, sndUna: sndUna, now: now)
    }

    /// Sends the bytes (and FIN) of one record again, in MSS-sized pieces.
    private func transmitRecord(_ r: TxRecord, now: Instant, tx out: some IPTransmitter) {
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

    /// Option bytes on a non-SYN segment (layout of `sendSegment`).
    func optionLength(ack: Bool) -> Int {
        var n = tsOK ? 12 : 0
        if sackOK && ack && !reassembly.isEmpty { n &+= 4 &+ 8 &* reassembly.blockCount(max: tsOK ? 3 : 4) }
        return n
    }

    // MARK: - Receive window

    /// Bytes of receive space to advertise right now (window before scaling).
    var receiveSpace: Int { windowLimit(advertisableSpace) }

    /// After the app consumed data: is a window update worth a segment?
    func windowUpdateNeeded() -> Bool {
        guard isSynchronized, !finReceived else { return false }
        return acks.windowUpdateNeeded(advertised: rcvAdvEdge - rcvNxt, space: receiveSpace,
                                       receiveBuffer: rx?.capacity ?? rxBufferSize)
    }

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

    /// Sends one segment: header and options, and the payload from `tx` at `dataOffset`, which
    /// the transmitter gathers from the ring (`segmentSize` > 0: a super-segment it cuts into
    /// pieces of that many bytes). Every segment with ACK set acknowledges everything received,
    /// so it settles the ACK owed and stops the delayed-ACK timer.
    func sendSegment(seq: SeqNumber, flags: TCPFlags, dataOffset: Int, dataCount: Int, segmentSize: Int = 0,
                     now: Instant, tx out: some IPTransmitter) {
        let syn = flags.contains(.syn)
        var hdr = TCPHeaderRepr(sourcePort: local.port, destinationPort: remote.port, sequenceNumber: seq,
                                ackNumber: flags.contains(.ack) ? rcvNxt : SeqNumber(0), flags: flags,
                                window: windowField(syn: syn))
        if let up = urgentField(seq: seq) {
            hdr.flags.insert(.urg)
            hdr.urgentPointer = up
        }
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
            if sackOK && !reassembly.isEmpty && flags.contains(.ack) {
                hdr.options.sackBlocks = reassembly.sackBlocks(max: tsOK ? 3 : 4)
            }
        }
        if !(syn && flags.contains(.ack)) { stats.segmentsOut &+= 1 }   // Linux: SYN-ACKs are the request's
        if dataCount > 0 {
            stats.dataSegmentsOut &+= 1
            stats.bytesSentTotal &+= UInt64(dataCount)
            if seq < sndMax { stats.bytesRetransmitted &+= UInt64(dataCount) }
            stats.lastDataSent = now
        }
        if sndUna == sndMax && (dataCount > 0 || flags.contains(.fin) || syn) { lastProgress = now }
        let ip = IPSendOptions(timeToLive: sockopts.timeToLive, typeOfService: sockopts.typeOfService,
                               hopLimit: sockopts.hopLimit, trafficClass: sockopts.trafficClass)
        var data = (UnsafeRawBufferPointer(start: nil, count: 0), UnsafeRawBufferPointer(start: nil, count: 0))
        if dataCount > 0, let txbuf = self.tx { data = txbuf.readableRegions(from: dataOffset, max: dataCount) }
        out.transmitTCP(src: local.address, dst: remote.address, header: hdr, payload: data.0, data.1,
                        segmentSize: segmentSize, options: ip)
        if flags.contains(.ack) {
            lastAckSent = rcvNxt
            acks.ackSent()
            timers.delayedAck = nil
        }
    }
}
