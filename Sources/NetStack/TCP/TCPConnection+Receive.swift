/// The receive side of a connection: in-order data into the ring (or straight to the app),
/// out-of-order data to the ReceiveAssembler, the ACK owed for it (AckPolicy), the peer's FIN,
/// TIME-WAIT, and challenge ACKs for segments outside the window (RFC 5961).
extension TCPConnection {
    /// `precopied`: `copyToRing` already put the payload at the ring's tail.
    func receiveData(_ seg: TCPHeaderView, seq segSeq: SeqNumber, flags: TCPFlags, segmentSize: Int,
                             precopied: Bool, now: Instant) {
        guard let rx else { return }
        var payload = seg.payload
        var seq = segSeq
        var fin = flags.contains(.fin)
        let pre = rcvNxt - seq
        if pre > 0 {
            // Starts before RCV.NXT: drop what we already have.
            acks.immediate = true
            if pre > payload.count {
                return   // everything, FIN included, is old
            }
            payload = UnsafeRawBufferPointer(rebasing: payload[pre...])
            seq = rcvNxt
        }
        let offset = seq - rcvNxt
        let room = rx.free &- offset
        if room <= 0 {
            acks.immediate = true
            return
        }
        if payload.count > room {
            payload = UnsafeRawBufferPointer(start: payload.baseAddress, count: room)
            fin = false
        }
        let n = payload.count
        if n > 0 {
            stats.dataSegmentsIn &+= 1
            stats.lastDataReceived = now
        }
        if offset == 0 {
            var queued = 0   // bytes this segment made readable in the ring
            if n > 0 {
                if precopied && pre <= 0 && n == seg.payload.count {
                    // `copyToRing` already put it at the tail, summing it on the way.
                    rx.commit(n)
                    queued = n
                } else {
                    // Nothing queued before it: the driver may take it straight from the frame,
                    // unless an urgent byte is pending (the ring path splits the stream at it).
                    var taken = 0
                    if directReceive, rx.isEmpty, reassembly.isEmpty, urgentOffset == nil, userVisible,
                       let take = layer.directReceiver {
                        taken = min(max(take(handle, payload), 0), n)
                    }
                    if taken < n {
                        rx.write(at: rx.count, from: payload.baseAddress! + taken, count: n &- taken)
                        rx.commit(n &- taken)
                    }
                    queued = n &- taken
                }
                rcvNxt += n
                bytesReceived &+= UInt64(n)
            }
            if !reassembly.isEmpty {
                acks.immediate = true   // filling a hole: ACK at once (RFC 5681 §4.2)
                let end = reassembly.advance(from: rcvNxt)
                let more = end - rcvNxt
                if more > 0 {
                    rx.commit(more)
                    rcvNxt = end
                    bytesReceived &+= UInt64(more)
                    queued &+= more
                }
            }
            if fin { pendingFin = seq + n }
            if n > 0 && !rxLocked { tuneReceiveBuffer(now: now) }
            if queued == 0 && rx.isEmpty && rx.storageBytes > 0 { receiveRingDrained(now: now) }
            if let pf = pendingFin, pf == rcvNxt {
                pendingFin = nil
                finArrived(now: now)
            } else if n > 0 {
                scheduleAck(bytes: n, segmentSize: segmentSize, now: now)
            }
            if queued > 0 || finReceived { signalReadable() }
        } else {
            // Out of order: park it in the ring at its offset, remember the range, ACK at once
            // (duplicate ACK with SACK blocks).
            acks.immediate = true
            stats.outOfOrderSegmentsIn &+= 1
            if n > 0, reassembly.add(seq, seq + n) {
                rx.write(at: rx.count &+ offset, from: payload.baseAddress!, count: n)
            }
            if fin { pendingFin = seq + n }
        }
    }

    /// RFC 5961 §7: challenge ACKs are rate-limited layer-wide so they cannot be used to
    /// amplify or to probe for the connection's sequence space.
    func challengeAck(now: Instant) {
        if layer.allowChallengeAck(now: now) { acks.immediate = true }
    }

    func scheduleAck(bytes n: Int, segmentSize: Int, now: Instant) {
        switch acks.dataArrived(n, receiveBuffer: rx?.capacity ?? rxBufferSize, segmentSize: segmentSize) {
        case .now, .scheduled: break
        case .atPoll: layer.markDirty(self)
        case .delayed: timers.startIfStopped(.delayedAck, at: now + min(config.delayedAckTimeout, sockopts.delayedAckMax))
        }
    }

    func finArrived(now: Instant) {
        rcvNxt += 1
        finReceived = true
        acks.immediate = true
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

    func enterTimeWait(now: Instant) {
        state = .timeWait
        timers.stopAll()
        timers.close = now + config.timeWait
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
        recovery.releaseStorage()
        reassembly.releaseStorage()
        if !keepUnreadInput || (rx?.isEmpty ?? true) { rx = nil }
    }

    /// Keepalive idles from now (connection established, or SO_KEEPALIVE turned on).
    func startKeepAlive(now: Instant) {
        timers.keepAlive = keepAlive ? now + sockopts.keepAliveIdle : nil
    }
}
