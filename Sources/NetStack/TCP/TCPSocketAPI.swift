/// The socket API of `TCPLayer`, as the driver (ztapd's RPC server and the stack's services)
/// uses it. Every call that changes a socket takes `now`: the ones that start a timer (close,
/// release, setOption's keepalive) use it, and no call ever stands in a stale instant for the
/// clock. Calls never transmit: they mark the connection dirty and the next `poll` sends.
extension TCPLayer {
    /// Binds `local` in the port table and listens there; closing the listener gives the port
    /// back. Throws `.addressInUse` when the port table refuses the port (see `PortTable`), and
    /// `.addressNotAvailable` for port 0.
    public func listen(local: IPEndpoint, backlog: Int, now: Instant) throws(SocketError) -> SocketHandle {
        guard local.port != 0 else { throw .addressNotAvailable }
        let b = try ports.bind(.tcp, local)
        do throws(SocketError) {
            return try makeListener(b, ownsBinding: true, backlog: backlog)
        } catch {
            ports.release(b)
            throw error
        }
    }

    /// Listens on a port the caller bound in `ports` (the intercept hub's bind()). The binding
    /// is marked listening (which may fail with `.addressInUse`, see `PortTable.listen`) and
    /// stays the caller's: closing the listener only stops it listening. Listeners on one address
    /// and port whose bindings the table lets share it (SO_REUSEPORT, same uid) form a group that
    /// new connections are spread over by a hash of their 4-tuple, as on Linux.
    public func listen(binding b: PortTable.Binding, backlog: Int, now: Instant) throws(SocketError) -> SocketHandle {
        guard b.proto == .tcp, b.local.port != 0, ports.isBound(b) else { throw .invalidState }
        return try makeListener(b, ownsBinding: false, backlog: backlog)
    }

    private func makeListener(_ b: PortTable.Binding, ownsBinding: Bool, backlog: Int) throws(SocketError) -> SocketHandle {
        try ports.listen(b)
        let s = allocateSlot()
        let l = TCPListener(binding: b, ownsBinding: ownsBinding, slot: s, generation: generations[Int(s)],
                            backlog: max(backlog, 0), config: config)
        slots[Int(s)] = .listener(l)
        listeners[b.local, default: []].append(l)
        return l.handle
    }

    /// listen() again on a listener: only its backlog changes (as on Linux).
    public func setBacklog(_ h: SocketHandle, _ backlog: Int) {
        listener(h)?.backlog = max(backlog, 0)
    }

    /// Tells the listener how many of the connections the driver accepted from it its app has
    /// not accepted yet (asked when a SYN or a handshake's last ACK arrives): like Linux's accept
    /// queue, the listener then holds at most backlog + 1 established connections in all. The
    /// closure gets the most that would still leave room: it may answer any bound it knows that
    /// is no more than that (counting exactly may cost it a system call), else the count.
    public func setHeldByDriver(_ h: SocketHandle, _ count: ((_ room: Int) -> Int)?) {
        listener(h)?.heldByDriver = count
    }

    /// Active open. `local.address` may be `.any` (then `sourceAddressResolver` picks it) and
    /// `local.port` 0 (an ephemeral port). The SYN goes out on the next `poll`.
    public func connect(local requested: IPEndpoint, remote: IPEndpoint, now: Instant) throws(SocketError) -> SocketHandle {
        var local = requested
        // A wildcard reaches its family (`::` both), an address its own.
        guard local.address.isUnspecified ? (local.address == .v6Any || remote.address.isV4)
                : local.address.isV4 == remote.address.isV4 else { throw .addressNotAvailable }
        if local.address.isUnspecified {
            guard let a = sourceAddressResolver?(remote.address), !a.isUnspecified else { throw .networkUnreachable }
            local.address = a
        }
        guard remote.port != 0, !remote.address.isUnspecified, !remote.address.isBroadcast,
              !remote.address.isMulticast else { throw .networkUnreachable }
        guard roomForConnection(now: now) else { throw .noBufferSpace }
        var port = local.port
        if port == 0 {
            // An ephemeral port: only the 4-tuple must be unique (one O(1) lookup per candidate),
            // and a TIME-WAIT that timestamps make safe to take over does not count.
            let a = local.address
            port = try ports.claimForConnect(address: local.address, remote: remote) { p in
                guard let old = connections[TCPConnKey(localAddress: a, remoteAddress: remote.address,
                                                        localPort: p, remotePort: remote.port)] else { return true }
                return canReuseTimeWait(old, now: now)
            }
        }
        let l = IPEndpoint(local.address, port)
        let key = TCPConnKey(local: l, remote: remote)
        // The TIME-WAIT this connection takes over: it goes, and the new ISS starts above
        // everything it sent (Linux: tw_snd_nxt + 65535 + 2).
        var issFloor: SeqNumber?
        if let old = connections[key] {
            guard canReuseTimeWait(old, now: now) else { throw .addressInUse }
            issFloor = old.sndMax + 65537
            old.terminate(error: nil, now: now)
            timeWaitReused &+= 1
        }
        let s = allocateSlot()
        let c = TCPConnection(layer: self, slot: s, generation: generations[Int(s)], state: .synSent, local: l,
                              remote: remote, rxBufferSize: config.receiveBufferSize,
                              txBufferSize: config.sendBufferSize, noDelay: config.noDelay,
                              congestion: config.congestionControl, now: now)
        c.iss = issFloor ?? makeISN(key, now: now)
        c.sndUna = c.iss
        c.sndNxt = c.iss
        c.sndMax = c.iss
        c.lastSmallEnd = c.iss
        c.txBase = c.iss + 1
        c.tsOffset = UInt32(truncatingIfNeeded: tupleHash(key, salt: 1))
        c.needSyn = true
        c.advertisedMss = 1460   // refined from the transmitter at the first poll
        c.needsMssFromPath = true
        c.ephemeralPort = local.port == 0
        c.allocateBuffers()
        slots[Int(s)] = .connection(c)
        connections[key] = c
        markDirty(c)
        return c.handle
    }

    public func accept(_ listener: SocketHandle, now: Instant) throws(SocketError) -> SocketHandle? {
        guard let l = self.listener(listener) else { throw .invalidHandle }
        while !l.acceptQueue.isEmpty {
            let c = l.acceptQueue.removeFirst()
            c.listener = nil
            guard c.state != .closed else { continue }
            c.accepted = true
            if (c.rx?.count ?? 0) > 0 || c.finReceived { post(.readable(c.handle)) }
            return c.handle
        }
        return nil
    }

    public func send(_ h: SocketHandle, _ bytes: UnsafeRawBufferPointer, now: Instant) throws(SocketError) -> Int {
        guard let c = connection(h) else { throw .invalidHandle }
        switch c.state {
        case .synSent, .synReceived, .established, .closeWait:
            break
        case .closed:
            throw .notConnected
        default:
            throw .invalidState   // EPIPE: writing after shutdown
        }
        guard !c.finQueued, let tx = c.tx else { throw .invalidState }
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        var n = tx.enqueue(base, count: min(bytes.count, c.sendSpace))
        if n < bytes.count && c.growSendBuffer(now: now) {
            n &+= tx.enqueue(base + n, count: min(bytes.count &- n, c.sendSpace))
        }
        if n < bytes.count || !c.isWritable { c.wantWritable = true }
        if n > 0 { markDirty(c) }
        return n
    }

    public func receive(_ h: SocketHandle, into: UnsafeMutableRawBufferPointer, now: Instant) throws(SocketError) -> Int {
        guard let c = connection(h) else { throw .invalidHandle }
        guard let rx = c.rx, let base = into.baseAddress else { return 0 }
        let n = rx.dequeue(into: base, count: into.count)
        if rx.isEmpty { c.receiveRingDrained(now: now) }
        if n > 0 && c.windowUpdateNeeded() { c.acks.immediate = true; markDirty(c) }
        return n
    }

    /// The send ring, for drivers that fill it in place and `commitSend`; with TCP_NOTSENT_LOWAT
    /// they should commit at most `sendSpace` bytes.
    public func sendBuffer(_ h: SocketHandle) -> RingBuffer? { connection(h)?.tx }

    public func commitSend(_ h: SocketHandle, _ n: Int, now: Instant) {
        guard let c = connection(h), let tx = c.tx, !c.finQueued, n > 0 else { return }
        tx.commit(n)
        // Full: grow if the connection can use more, and then the writer may go on at once.
        if tx.free == 0 && c.growSendBuffer(now: now) && c.userVisible { post(.writable(h)) }
        if !c.isWritable { c.wantWritable = true }
        markDirty(c)
    }

    public func receiveBuffer(_ h: SocketHandle) -> RingBuffer? { connection(h)?.rx }

    /// The app is gone and its driver still holds `pending` bytes it wrote (or at least that
    /// many: a driver that cannot tell asks again): the send ring grows to take them, up to
    /// its maximum, so the FIN can follow them as it would on Linux. True if it grew.
    public func growSendBufferForClose(_ h: SocketHandle, pending: Int, now: Instant) -> Bool {
        guard let c = connection(h), !c.finQueued else { return false }
        return c.growSendBuffer(toTake: pending, now: now)
    }

    public func consume(_ h: SocketHandle, _ n: Int, now: Instant) {
        guard let c = connection(h), let rx = c.rx, n > 0 else { return }
        rx.discard(n)
        if rx.isEmpty { c.receiveRingDrained(now: now) }
        if c.windowUpdateNeeded() { c.acks.immediate = true; markDirty(c) }
    }

    public func isPeerClosed(_ h: SocketHandle) -> Bool {
        guard let c = connection(h) else { return true }
        return c.finReceived && (c.rx?.count ?? 0) == 0
    }

    public func shutdownWrite(_ h: SocketHandle, now: Instant) throws(SocketError) {
        guard let c = connection(h) else { throw .invalidHandle }
        switch c.state {
        case .synSent, .synReceived:
            // FIN follows the handshake (state changes to FIN-WAIT-1 once established).
            c.finQueued = true
        case .established:
            c.finQueued = true
            c.state = .finWait1
            markDirty(c)
        case .closeWait:
            c.finQueued = true
            c.state = .lastAck
            markDirty(c)
        case .finWait1, .finWait2, .closing, .lastAck, .timeWait:
            return
        case .closed, .listen:
            throw .notConnected
        }
    }

    public func close(_ h: SocketHandle, now: Instant) {
        if let l = listener(h) {
            closeListener(l, now: now)
            return
        }
        guard let c = connection(h) else { return }
        c.appClosed = true
        if c.state == .synSent {
            c.terminate(error: nil, now: now)   // nothing to tell the peer yet
            return
        }
        if c.lingerAbort || (c.rx?.count ?? 0) > 0 {
            // Unread data (or SO_LINGER 0): RST instead of FIN, like Linux (RFC 2525 §2.17).
            abortConnection(c, now: now)
            return
        }
        try? shutdownWrite(h, now: now)
        if c.state == .finWait2 { c.armFinWait2Timeout(now: now); schedule(c) }
    }

    public func abort(_ h: SocketHandle, now: Instant) {
        if let l = listener(h) {
            closeListener(l, now: now)
            release(h, now: now)
            return
        }
        guard let c = connection(h) else { return }
        abortConnection(c, now: now)
        release(h, now: now)
    }

    /// RST now (if synchronized) and drop the connection; the handle stays until released.
    func abortConnection(_ c: TCPConnection, now: Instant) {
        switch c.state {
        case .synReceived, .established, .finWait1, .finWait2, .closeWait:
            pendingResets.append((c.remote, c.local, c.acceptableSeq(c.sndNxt)))
        default:
            break
        }
        c.released = true   // no events for an abort the app asked for (terminate frees the slot)
        c.terminate(error: nil, now: now)
    }

    public func release(_ h: SocketHandle, now: Instant) {
        let i = Int(h.index)
        guard i < slots.count, generations[i] == h.generation else { return }
        switch slots[i] {
        case .listener(let l):
            closeListener(l, now: now)
            l.released = true
            freeSlot(h.index)
        case .connection(let c):
            guard !c.released else { return }
            if c.state == .closed {
                c.released = true
                freeSlot(h.index)
                return
            }
            // The driver is done: finish on our own. Unaccepted data can no longer be read.
            if !c.appClosed { close(h, now: now) }
            if c.state == .closed {
                if !c.released { c.released = true; freeSlot(h.index) }
                return
            }
            c.released = true
            if c.state == .timeWait { c.releaseBuffers(keepUnreadInput: false) }
            if c.state == .finWait2 { c.armFinWait2Timeout(now: now); schedule(c) }
        case .free:
            return
        }
    }

    func closeListener(_ l: TCPListener, now: Instant) {
        guard !l.closed else { return }
        l.closed = true
        if var group = listeners[l.local], let i = group.firstIndex(where: { $0 === l }) {
            group.remove(at: i)
            listeners[l.local] = group.isEmpty ? nil : group
        }
        if l.ownsBinding { ports.release(l.binding) } else { ports.stopListening(l.binding) }
        // Connections never accepted are reset (Linux does the same on close of a listener).
        let queued = l.acceptQueue
        l.acceptQueue.removeAll()
        for c in queued { c.listener = nil; abortConnection(c, now: now) }
        for (_, c) in connections where c.listener === l {
            c.listener = nil
            abortConnection(c, now: now)
        }
    }

    public func localEndpoint(_ h: SocketHandle) -> IPEndpoint? { connection(h)?.local ?? listener(h)?.local }
    public func remoteEndpoint(_ h: SocketHandle) -> IPEndpoint? { connection(h)?.remote }

    /// Connections in the table, including TIME-WAIT and handle-less ones (not listeners).
    public var connectionCount: Int { connections.count }

    public func forEachConnection(_ body: (SocketHandle?, TCPSocketInfo) -> Void) {
        for (_, group) in listeners {
            for l in group where !l.released { body(l.handle, info(l.handle)!) }
        }
        for (_, c) in connections {
            body(c.userVisible ? c.handle : nil, info(of: c))
        }
    }
}
