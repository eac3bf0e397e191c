/// Buffers that follow the load, as Linux's autotuning does. `rxBufferSize`/`txBufferSize` are
/// the most a connection's rings may grow to (the config's TCPReceiveBuffer/TCPSendBuffer, or
/// SO_RCVBUF/SO_SNDBUF, which fix the size as they do on Linux: "locked"). The rings start at
/// `initialReceiveBuffer`/`initialSendBuffer` and:
///
/// - Receive: grow once per round trip when the app took more than half the ring in that round
///   (Linux's dynamic right-sizing, tcp_rcv_space_adjust: the window becomes twice what was
///   consumed per RTT plus 16 segments). The window scale is chosen for the maximum at the SYN
///   (RFC 7323 §2.2), so growing only widens what we advertise. Shrinking never takes back
///   what was advertised (RFC 7323 §2.4, RFC 9293 §3.8.6.2.2): after an idle spell the target
///   drops to the initial size, the right edge stops moving past it, and the ring takes the
///   smaller size only once it is empty and the advertised window fits in it.
/// - Send: grows to twice the window the connection can use, min(cwnd, the peer's largest
///   window), when the app fills it (Linux's tcp_sndbuf_expand).
/// - Memory: a ring holds memory only while it holds bytes. Small rings give their chunk back
///   as soon as they drain; rings grown past `RingMemory.smallLimit` keep it while busy and give
///   it back after `ringIdleRelease` empty (the `.rings` timer), so a bulk transfer does not
///   unmap and fault in megabytes at every pause.
/// - Budget: the owner pays for the initial (or SO_RCVBUF/SO_SNDBUF) sizes when it makes the
///   socket; what autotuning adds to a ring's capacity (what it may come to hold) asks the
///   layer's `RingBudget` first, and a refusal keeps the ring as it is, as Linux stops growing
///   buffers under memory pressure. Shrinking, and fixing a size with SO_RCVBUF/SO_SNDBUF, give
///   the growth back.
extension TCPConnection {
    var initialReceiveCapacity: Int { rxLocked ? rxBufferSize : min(rxBufferSize, config.initialReceiveBuffer) }
    var initialSendCapacity: Int { txLocked ? txBufferSize : min(txBufferSize, config.initialSendBuffer) }

    /// Bytes stored in the receive ring from its head: readable ones and out-of-order ones parked
    /// past them.
    var receiveExtent: Int {
        guard let rx else { return 0 }
        if let end = reassembly.highestEnd { return max(rx.count, rx.count &+ (end - rcvNxt)) }
        return rx.count
    }

    // MARK: - Receive

    /// In-order data arrived (`rcvNxt` moved): once per round trip, measure what the app took.
    func tuneReceiveBuffer(now: Instant) {
        guard !rxLocked, let rx else { return }
        let delivered = bytesReceived &- UInt64(rx.count)
        let period = max(rtt.smoothed?.nanoseconds ?? 1_000_000, 20_000)
        guard now.nanoseconds &- drsStart >= period else { return }
        let copied = Int(truncatingIfNeeded: delivered &- drsDelivered)
        drsStart = now.nanoseconds
        drsDelivered = delivered
        guard rx.capacity < rxBufferSize else { return }
        let want = 2 &* copied &+ 16 &* advertisedMss
        guard want > rx.capacity else { return }
        var size = rx.capacity
        while size < want { size &<<= 1 }
        size = min(size, rxBufferSize)
        guard mayGrowRings(by: size &- rx.capacity) else { return }
        rxTarget = size
        rx.resize(to: size, keeping: receiveExtent)
        if rx.storageBytes > RingMemory.smallLimit { armRingIdle(now: now) }
    }

    /// Bytes left the receive ring: give its memory back or note it for the idle timer.
    func receiveRingDrained(now: Instant) {
        guard let rx, rx.isEmpty, reassembly.isEmpty else { return }
        shrinkReceiveRingIfAllowed()
        guard rx.storageBytes > 0 else { return }
        // Closed (the app read what was left after the end): nothing more will arrive.
        if rx.storageBytes <= RingMemory.smallLimit || state == .closed {
            rx.releaseStorage()
        } else {
            armRingIdle(now: now)
        }
    }

    /// The ring takes `rxTarget` once it is empty and no advertised byte lies beyond it.
    func shrinkReceiveRingIfAllowed() {
        guard let rx, rx.capacity > rxTarget, rx.isEmpty, reassembly.isEmpty,
              !(rcvNxt + rxTarget < rcvAdvEdge) else { return }
        ringsShrank(by: rx.capacity &- rxTarget)
        rx.resize(to: rxTarget, keeping: 0)
    }

    /// Receive space to advertise: the ring's free space, but past a lowered target only what
    /// keeps the right edge where it is (`windowField` never moves it back).
    var advertisableSpace: Int {
        guard let rx else { return initialReceiveCapacity }
        if rx.capacity <= rxTarget { return rx.free }
        return max(min(rx.free, rxTarget &- rx.count), 0)
    }

    // MARK: - Send

    /// The app filled the send ring: grow it if the connection could use more in flight.
    /// Returns true if it grew.
    @discardableResult
    func growSendBuffer(now: Instant) -> Bool {
        guard !txLocked, let tx, tx.capacity < txBufferSize else { return false }
        let usable = min(cc.cwnd, max(maxSndWnd, payloadMss))
        let want = 2 &* usable
        guard want > tx.capacity else { return false }
        var size = tx.capacity
        while size < want { size &<<= 1 }
        size = min(size, txBufferSize)
        guard mayGrowRings(by: size &- tx.capacity) else { return false }
        tx.resize(to: size, keeping: tx.count)
        if tx.storageBytes > RingMemory.smallLimit { armRingIdle(now: now) }
        return true
    }

    /// The app closed with `pending` more bytes written (still in the driver's hands): the ring
    /// grows to take them, up to its maximum and as the budget allows, as a kernel socket's send
    /// queue holds what was written before close() and the FIN follows it. Returns true if it grew.
    func growSendBuffer(toTake pending: Int, now: Instant) -> Bool {
        guard !txLocked, let tx, tx.capacity < txBufferSize, pending > 0 else { return false }
        let want = tx.count &+ pending
        guard want > tx.capacity else { return false }
        var size = tx.capacity
        while size < want { size &<<= 1 }
        size = min(size, txBufferSize)
        guard mayGrowRings(by: size &- tx.capacity) else { return false }
        tx.resize(to: size, keeping: tx.count)
        if tx.storageBytes > RingMemory.smallLimit { armRingIdle(now: now) }
        return true
    }

    /// Acknowledged bytes left the send ring.
    func sendRingDrained(now: Instant) {
        guard let tx, tx.isEmpty, tx.storageBytes > 0 else { return }
        if tx.storageBytes <= RingMemory.smallLimit { tx.releaseStorage() } else { armRingIdle(now: now) }
    }

    // MARK: - Idle

    func armRingIdle(now: Instant) {
        // A closed connection keeps no timer (its heap entry would fire again and again).
        guard state != .closed else { return }
        if timers.rings == nil {
            timers.rings = now + config.ringIdleRelease
            layer.schedule(self)
        }
    }

    /// The `.rings` timer: big rings empty now give their memory back (busy ones are looked at
    /// again later), and once no data arrived for `ringIdleRelease` the receive ring's target
    /// drops to the initial size.
    func ringIdleFired(now: Instant) {
        let idle = config.ringIdleRelease
        var again: Instant?
        if let tx, tx.storageBytes > RingMemory.smallLimit {
            if tx.isEmpty {
                tx.releaseStorage()
                if !txLocked && tx.capacity > initialSendCapacity {
                    ringsShrank(by: tx.capacity &- initialSendCapacity)
                    tx.resize(to: initialSendCapacity, keeping: 0)
                }
            } else {
                again = now + idle
            }
        }
        if let rx {
            if rx.storageBytes > RingMemory.smallLimit {
                if rx.isEmpty && reassembly.isEmpty { rx.releaseStorage() } else { again = now + idle }
            }
            if !rxLocked && rxTarget > initialReceiveCapacity {
                let quietSince = Instant(nanoseconds: drsStart)
                if now - quietSince >= idle {
                    rxTarget = initialReceiveCapacity
                    shrinkReceiveRingIfAllowed()
                } else {
                    let t = quietSince + idle
                    again = again.map { min($0, t) } ?? t
                }
            }
        }
        if let again { timers.rings = again }
    }

    // MARK: - Budget

    /// SO_RCVBUF/SO_SNDBUF is about to fix a ring's size: what autotuning added goes back to the
    /// budget (the owner pays for the fixed size itself).
    func givesUpTunedGrowth(receive: Bool) {
        if receive {
            if !rxLocked, let rx { ringsShrank(by: rx.capacity &- initialReceiveCapacity) }
        } else {
            if !txLocked, let tx { ringsShrank(by: tx.capacity &- initialSendCapacity) }
        }
    }

    func mayGrowRings(by bytes: Int) -> Bool {
        guard bytes > 0, let b = layer.ringBudget else { return true }
        return b.ringsMayGrow(handle, by: bytes)
    }

    func ringsShrank(by bytes: Int) {
        guard bytes > 0, let b = layer.ringBudget else { return }
        b.ringsShrank(handle, by: bytes)
    }
}

/// Whoever pays for a connection's rings: asked before they grow (their capacity, what they may
/// come to hold), told when they shrink. Called on the layer's thread, at most once per ring
/// doubling or idle shrink, never per packet.
public protocol RingBudget: AnyObject {
    /// May `handle`'s rings take `bytes` more capacity? False keeps them as they are.
    func ringsMayGrow(_ handle: SocketHandle, by bytes: Int) -> Bool
    /// `handle`'s rings gave up `bytes` of capacity.
    func ringsShrank(_ handle: SocketHandle, by bytes: Int)
}
