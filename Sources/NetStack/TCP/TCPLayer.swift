/// The TCP layer: demultiplexes segments to connections and listeners, owns the socket table,
/// the timer heap and the event queue, and implements the socket API the driver uses.
///
/// What it leaves out: IPv4 (the interface hands in segments addressed to us and transmits ours),
/// urgent data (URG is ignored, RFC 6093 says nobody should use it), ECN, TCP-AO/MD5, IPv6.
///
/// Driving it: after any socket call (`connect`, `send`, `consume`, `close`…) the layer only
/// marks the connection dirty; the next `poll` sends what became due. `poll` returns the next
/// instant it must be called at. Work per `poll` is proportional to dirty connections and due
/// timers (a min-heap with lazy deletion), never to the number of connections.
public final class TCPLayer {
    public let config: TCPConfig
    @exclusivity(unchecked) var random: any RandomSource
    /// Keyed-hash secret for ISNs (RFC 6528) and SYN cookies.
    let secret0: UInt64
    let secret1: UInt64

    enum Slot {
        case free
        case listener(TCPListener)
        case connection(TCPConnection)
    }
    @exclusivity(unchecked) var slots: [Slot] = []
    @exclusivity(unchecked) var generations: [UInt32] = []
    @exclusivity(unchecked) var freeSlots: [UInt32] = []

    @exclusivity(unchecked) var connections: [TCPConnKey: TCPConnection] = [:]
    @exclusivity(unchecked) var listeners: [IPv4Endpoint: TCPListener] = [:]
    @exclusivity(unchecked) var timers = TimerHeap()
    @exclusivity(unchecked) var dirty: [TCPConnection] = []
    @exclusivity(unchecked) var events: [SocketEvent] = []
    /// Connections in the order they entered TIME-WAIT (so also the order they expire); stale
    /// entries (gone, or left TIME-WAIT) are skipped when popped. From `twHead` on.
    @exclusivity(unchecked) var timeWaitQueue: [TCPConnection] = []
    @exclusivity(unchecked) var twHead = 0
    /// Incremented per `receive`/`poll` call; used to coalesce `.readable` events.
    @exclusivity(unchecked) var epoch: UInt64 = 0
    /// SYN-ACKs answered with a SYN cookie because a listener's SYN queue was full.
    public private(set) var synCookiesSent: UInt64 = 0

    /// Picks our source address towards a destination, for `connect` with an unspecified local
    /// address (the interface knows its addresses and routes, the TCP layer does not). Capture
    /// the owner `unowned` to avoid a reference cycle.
    public var sourceAddressResolver: ((IPv4Address) -> IPv4Address?)?

    public init(config: TCPConfig, random: some RandomSource) {
        self.config = config
        var r = random
        secret0 = r.next()
        secret1 = r.next()
        self.random = r
        events.reserveCapacity(256)
        dirty.reserveCapacity(256)
        connections.reserveCapacity(64)
    }

    // MARK: - Handles

    func allocateSlot() -> UInt32 {
        if let s = freeSlots.popLast() { return s }
        slots.append(.free)
        generations.append(1)
        return UInt32(slots.count &- 1)
    }

    func freeSlot(_ s: UInt32) {
        slots[Int(s)] = .free
        generations[Int(s)] &+= 1
        freeSlots.append(s)
    }

    func connection(_ h: SocketHandle) -> TCPConnection? {
        let i = Int(h.index)
        guard i < slots.count, generations[i] == h.generation, case .connection(let c) = slots[i], !c.released else {
            return nil
        }
        return c
    }

    func listener(_ h: SocketHandle) -> TCPListener? {
        let i = Int(h.index)
        guard i < slots.count, generations[i] == h.generation, case .listener(let l) = slots[i], !l.released else {
            return nil
        }
        return l
    }

    func post(_ e: SocketEvent) { events.append(e) }

    /// Challenge ACKs allowed per second (Linux's tcp_challenge_ack_limit default is 1000).
    static let challengeAckLimit = 1000
    @exclusivity(unchecked) var challengeWindowStart: UInt64 = 0
    @exclusivity(unchecked) var challengeCount = 0
    func allowChallengeAck(now: Instant) -> Bool {
        let second = now.nanoseconds / 1_000_000_000
        if second != challengeWindowStart {
            challengeWindowStart = second
            challengeCount = 0
        }
        challengeCount &+= 1
        return challengeCount <= Self.challengeAckLimit
    }

    func markDirty(_ c: TCPConnection) {
        if !c.inDirtyList {
            c.inDirtyList = true
            dirty.append(c)
        }
    }

    /// Makes sure the timer heap will wake us for `c`'s earliest timer.
    func schedule(_ c: TCPConnection) {
        guard let d = c.nextDeadline else { return }
        if let h = c.heapDeadline, h <= d.nanoseconds { return }
        c.heapDeadline = d.nanoseconds
        timers.push(.init(deadline: d.nanoseconds, slot: c.slot, generation: c.generation))
    }

    /// ARP gave up on a next hop: connections still in SYN-SENT towards a destination that
    /// goes through it fail with EHOSTUNREACH (Linux does the same through ipv4_link_failure);
    /// established ones keep retransmitting, as for any soft error.
    public func nextHopFailed(where routedThroughFailedHop: (IPv4Address) -> Bool, now: Instant) {
        var failing: [TCPConnection] = []
        for c in connections.values where c.state == .synSent && routedThroughFailedHop(IPv4Address(c.key.remoteAddress)) {
            failing.append(c)
        }
        for c in failing { c.terminate(error: .hostUnreachable, now: now) }
    }

    /// An ICMP destination unreachable quoting one of our segments (RFC 1122 §4.2.3.9; RFC 5927
    /// for the checks): a connect still in SYN-SENT fails, with ECONNREFUSED for port/protocol
    /// unreachable and EHOSTUNREACH/ENETUNREACH otherwise, if the quoted sequence number is our
    /// SYN's. Other states treat it as a soft error (ignored; the RTO keeps going).
    public func destinationUnreachable(code: UInt8, local: IPv4Endpoint, remote: IPv4Endpoint, quotedSeq: UInt32,
                                       now: Instant) {
        let key = TCPConnKey(local: local, remote: remote)
        guard let e = SocketError(unreachableCode: code), let c = connections[key], c.state == .synSent,
              quotedSeq == c.iss.rawValue else { return }
        c.terminate(error: e, now: now)
    }

    /// Called by a connection entering TIME-WAIT.
    func enteredTimeWait(_ c: TCPConnection) {
        if twHead > 1024 && twHead &* 2 > timeWaitQueue.count {
            timeWaitQueue.removeFirst(twHead)
            twHead = 0
        }
        timeWaitQueue.append(c)
    }

    /// Whether a new connection fits under `maxConnections`. TIME-WAIT connections do not hold
    /// a place against live ones: when the table is full the oldest is ended early (as Linux
    /// does past tcp_max_tw_buckets), so closed connections never make new ones fail.
    func roomForConnection(now: Instant) -> Bool {
        while connections.count >= config.maxConnections && twHead < timeWaitQueue.count {
            let c = timeWaitQueue[twHead]
            twHead &+= 1
            if c.state == .timeWait && connections[c.key] === c { c.terminate(error: nil, now: now) }
        }
        if twHead == timeWaitQueue.count && twHead > 0 {
            timeWaitQueue.removeAll(keepingCapacity: true)
            twHead = 0
        }
        return connections.count < config.maxConnections
    }

    /// Called by a connection reaching CLOSED.
    func connectionClosed(_ c: TCPConnection) {
        if connections[c.key] === c { connections.removeValue(forKey: c.key) }
        if let l = c.listener {
            if c.inSynQueue { l.synQueue &-= 1 }
            if let i = l.acceptQueue.firstIndex(where: { $0 === c }) { l.acceptQueue.remove(at: i) }
            c.listener = nil
        }
        c.inSynQueue = false
        if c.released || !c.accepted {
            freeSlot(c.slot)
            c.released = true
        }
    }

    // MARK: - ISN and SYN cookies

    @inline(__always) static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    func tupleHash(_ k: TCPConnKey, salt: UInt64) -> UInt64 {
        var h = Self.mix(secret0 ^ (UInt64(k.localAddress) << 32 | UInt64(k.remoteAddress)))
        h = Self.mix(h ^ UInt64(k.ports) ^ secret1)
        return Self.mix(h ^ salt)
    }

    /// RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock.
    func makeISN(_ k: TCPConnKey, now: Instant) -> SeqNumber {
        SeqNumber(UInt32(truncatingIfNeeded: tupleHash(k, salt: 0)) &+ UInt32(truncatingIfNeeded: now.nanoseconds / 4000))
    }

    static let cookieMSS: [Int] = [536, 1200, 1400, 1460, 2760, 4000, 8960, 9000]
    static let cookiePeriodNs: UInt64 = 64_000_000_000

    /// SYN cookie ISN: 5 bits time counter, 3 bits MSS index, 24 bits keyed hash.
    func cookie(_ k: TCPConnKey, clientISN: SeqNumber, counter: UInt64, mssIndex: Int) -> SeqNumber {
        let h = tupleHash(k, salt: UInt64(clientISN.rawValue) << 8 ^ counter &* 0x100_0000_01B3)
        return SeqNumber(UInt32(counter & 31) << 27 | UInt32(mssIndex) << 24 | UInt32(truncatingIfNeeded: h) & 0xFF_FFFF)
    }

    /// Validates a cookie echoed in an ACK; returns the MSS it encodes.
    func checkCookie(_ k: TCPConnKey, clientISN: SeqNumber, cookie c: SeqNumber, now: Instant) -> Int? {
        let counter = now.nanoseconds / Self.cookiePeriodNs
        let t = UInt64(c.rawValue >> 27)
        let mssIndex = Int(c.rawValue >> 24 & 7)
        for age in 0..<UInt64(2) {
            guard counter >= age else { break }
            let cand = counter - age
            if cand & 31 == t, cookie(k, clientISN: clientISN, counter: cand, mssIndex: mssIndex) == c {
                return Self.cookieMSS[mssIndex]
            }
        }
        return nil
    }

    // MARK: - Segment input

    /// One TCP segment (header+payload, exactly the IP payload) that arrived for a local address.
    public func receive(src: IPv4Address, dst: IPv4Address, segment: UnsafeRawBufferPointer, now: Instant,
                        tx: some IPv4Transmitter) {
        epoch &+= 1
        guard let seg = try? TCPHeaderView(segment) else { return }
        guard seg.checksumValid(source: src, destination: dst) else { return }
        // TCP is unicast only (RFC 1122 §4.2.3.10).
        guard !dst.isBroadcast, !dst.isMulticast, !src.isBroadcast, !src.isMulticast, !src.isUnspecified else { return }
        let key = TCPConnKey(localAddress: dst.value, remoteAddress: src.value,
                             localPort: seg.destinationPort, remotePort: seg.sourcePort)
        let options = seg.headerLength > TCPHeaderView.minimumHeaderLength
            ? TCPSegmentOptions(parsing: seg.optionsArea) : TCPSegmentOptions()
        if let c = connections[key] {
            let r = c.segmentArrived(seg, options: options, now: now, tx: tx)
            if case .reopen = r {
                c.terminate(error: nil, now: now)
            } else {
                schedule(c)
                return
            }
        }
        let flags = seg.flags
        let l = listeners[IPv4Endpoint(dst, seg.destinationPort)] ?? listeners[IPv4Endpoint(.any, seg.destinationPort)]
        if let l, !l.closed {
            listenerInput(l, seg: seg, flags: flags, options: options, key: key, src: src, dst: dst, now: now, tx: tx)
            return
        }
        // No socket: RST (RFC 9293 §3.10.7.1), never in answer to an RST.
        if !flags.contains(.rst) { resetFor(seg, src: src, dst: dst, tx: tx) }
    }

    func resetFor(_ seg: TCPHeaderView, src: IPv4Address, dst: IPv4Address, tx: some IPv4Transmitter) {
        let local = IPv4Endpoint(dst, seg.destinationPort)
        let remote = IPv4Endpoint(src, seg.sourcePort)
        if seg.flags.contains(.ack) {
            sendReset(to: remote, from: local, seq: seg.ackNumber, ack: nil, tx: tx)
        } else {
            sendReset(to: remote, from: local, seq: SeqNumber(0), ack: seg.sequenceNumber + seg.segmentLength, tx: tx)
        }
    }

    func sendReset(to remote: IPv4Endpoint, from local: IPv4Endpoint, seq: SeqNumber, ack: SeqNumber?,
                   tx: some IPv4Transmitter) {
        let hdr = TCPHeaderRepr(sourcePort: local.port, destinationPort: remote.port, sequenceNumber: seq,
                                ackNumber: ack ?? SeqNumber(0), flags: ack == nil ? .rst : [.rst, .ack], window: 0)
        let total = hdr.headerLength
        tx.transmit(src: local.address, dst: remote.address, proto: IPProtocol.tcp, capacity: total) { buf in
            guard buf.count >= total, let p = buf.baseAddress else { return 0 }
            hdr.emit(into: p)
            TCPHeaderRepr.fillChecksum(p, length: total, source: local.address, destination: remote.address)
            return total
        }
    }

    private func listenerInput(_ l: TCPListener, seg: TCPHeaderView, flags: TCPFlags, options: TCPSegmentOptions,
                               key: TCPConnKey, src: IPv4Address, dst: IPv4Address, now: Instant,
                               tx: some IPv4Transmitter) {
        let local = IPv4Endpoint(dst, seg.destinationPort)
        let remote = IPv4Endpoint(src, seg.sourcePort)
        if flags.contains(.rst) { return }
        if flags.contains(.ack) {
            // Possibly the third segment of a cookie handshake.
            if !flags.contains(.syn), config.synCookies,
               let mss = checkCookie(key, clientISN: seg.sequenceNumber - 1, cookie: seg.ackNumber - 1, now: now),
               l.acceptQueue.count < l.backlog, roomForConnection(now: now) {
                let c = makeConnection(l: l, local: local, remote: remote, key: key, now: now, tx: tx)
                c.iss = seg.ackNumber - 1
                c.irs = seg.sequenceNumber - 1
                c.rcvNxt = seg.sequenceNumber
                c.sndUna = c.iss
                c.sndNxt = seg.ackNumber
                c.sndMax = seg.ackNumber
                c.lastSmallEnd = c.sndUna
                c.txBase = seg.ackNumber
                c.wsOK = false; c.rcvShift = 0; c.tsOK = false; c.sackOK = false
                c.sndMss = min(mss, c.advertisedMss)
                c.cc.cwnd = c.payloadMss &* config.initialWindowSegments
                c.rcvAdvEdge = c.rcvNxt + Int(c.windowField(syn: true))
                c.sndWnd = Int(seg.window)
                c.sndWl1 = seg.sequenceNumber - 1
                c.sndWl2 = seg.ackNumber
                _ = c.segmentArrived(seg, options: options, now: now, tx: tx)
                schedule(c)
                return
            }
            resetFor(seg, src: src, dst: dst, tx: tx)
            return
        }
        guard flags.contains(.syn), !flags.contains(.fin) else { return }
        guard local != remote else { return }   // LAND: a SYN from ourselves to ourselves
        guard roomForConnection(now: now) else { return }
        if l.synQueue >= config.maxSynQueue {
            guard config.synCookies else { return }
            sendCookieSynAck(seg, options: options, key: key, local: local, remote: remote, now: now, tx: tx)
            return
        }
        let c = makeConnection(l: l, local: local, remote: remote, key: key, now: now, tx: tx)
        c.irs = seg.sequenceNumber
        c.rcvNxt = c.irs + 1
        c.negotiate(options, synOptionsSent: false)
        if c.tsOK, let ts = options.timestamp { c.tsRecent = ts.value }
        c.rcvAdvEdge = c.rcvNxt + Int(c.windowField(syn: true))
        c.iss = makeISN(key, now: now)
        c.sndUna = c.iss
        c.sndNxt = c.iss
        c.sndMax = c.iss
        c.lastSmallEnd = c.iss
        c.txBase = c.iss + 1
        c.sndWnd = Int(seg.window)
        c.maxSndWnd = c.sndWnd
        c.sndWl1 = seg.sequenceNumber
        c.sndWl2 = c.iss
        c.needSyn = true
        c.inSynQueue = true
        l.synQueue &+= 1
        c.output(now: now, tx: tx)
        schedule(c)
    }

    private func makeConnection(l: TCPListener, local: IPv4Endpoint, remote: IPv4Endpoint, key: TCPConnKey,
                                now: Instant, tx: some IPv4Transmitter) -> TCPConnection {
        let s = allocateSlot()
        let c = TCPConnection(layer: self, slot: s, generation: generations[Int(s)], state: .synReceived,
                              local: local, remote: remote, rxBufferSize: l.rxBufferSize,
                              txBufferSize: l.txBufferSize, noDelay: l.noDelay, congestion: l.congestion)
        c.listener = l
        c.accepted = false
        c.keepAlive = l.keepAlive
        c.lingerAbort = l.lingerAbort
        c.advertisedMss = max(tx.maxPayload(to: remote.address) &- TCPHeaderView.minimumHeaderLength, 64)
        c.tsOffset = UInt32(truncatingIfNeeded: tupleHash(key, salt: 1))
        c.lastReceive = now
        slots[Int(s)] = .connection(c)
        connections[key] = c
        return c
    }

    private func sendCookieSynAck(_ seg: TCPHeaderView, options: TCPSegmentOptions, key: TCPConnKey,
                                  local: IPv4Endpoint, remote: IPv4Endpoint, now: Instant, tx: some IPv4Transmitter) {
        let peerMss = Int(options.maxSegmentSize ?? UInt16(config.mssDefault))
        let ourMss = max(tx.maxPayload(to: remote.address) &- TCPHeaderView.minimumHeaderLength, 64)
        let want = min(peerMss, ourMss)
        var idx = 0
        for (i, m) in Self.cookieMSS.enumerated() where m <= want { idx = i }
        let isn = cookie(key, clientISN: seg.sequenceNumber, counter: now.nanoseconds / Self.cookiePeriodNs, mssIndex: idx)
        // No window scale, SACK or timestamps: a cookie cannot remember them.
        var hdr = TCPHeaderRepr(sourcePort: local.port, destinationPort: remote.port, sequenceNumber: isn,
                                ackNumber: seg.sequenceNumber + 1, flags: [.syn, .ack],
                                window: UInt16(min(config.receiveBufferSize, 0xFFFF)))
        hdr.options.maxSegmentSize = UInt16(clamping: Self.cookieMSS[idx])
        let total = hdr.headerLength
        synCookiesSent &+= 1
        tx.transmit(src: local.address, dst: remote.address, proto: IPProtocol.tcp, capacity: total) { buf in
            guard buf.count >= total, let p = buf.baseAddress else { return 0 }
            hdr.emit(into: p)
            TCPHeaderRepr.fillChecksum(p, length: total, source: local.address, destination: remote.address)
            return total
        }
    }

    // MARK: - Poll

    /// Sends everything that is due and returns when poll must run again (nil = nothing pending).
    public func poll(now: Instant, tx: some IPv4Transmitter) -> Instant? {
        epoch &+= 1
        if !pendingResets.isEmpty {
            for (remote, local, seq) in pendingResets { sendReset(to: remote, from: local, seq: seq, ack: nil, tx: tx) }
            pendingResets.removeAll(keepingCapacity: true)
        }
        var i = 0
        while i < dirty.count {
            let c = dirty[i]
            c.inDirtyList = false
            if c.state != .closed {
                if c.ackAtPoll { c.ackNow = true }
                c.output(now: now, tx: tx)
                schedule(c)
            }
            i &+= 1
        }
        dirty.removeAll(keepingCapacity: true)
        while let top = timers.top, top.deadline <= now.nanoseconds {
            timers.pop()
            let s = Int(top.slot)
            guard s < slots.count, generations[s] == top.generation, case .connection(let c) = slots[s],
                  c.heapDeadline == top.deadline else { continue }
            c.heapDeadline = nil
            if c.state != .closed { c.timersFired(now: now, tx: tx) }
            schedule(c)
        }
        // Drop stale entries at the top so the returned deadline is a real one; an entry whose
        // connection's timers moved later is re-armed at the real deadline.
        while let top = timers.top {
            let s = Int(top.slot)
            if s < slots.count, generations[s] == top.generation, case .connection(let c) = slots[s],
               c.heapDeadline == top.deadline {
                if let real = c.nextDeadline, real.nanoseconds <= top.deadline { break }
                timers.pop()
                c.heapDeadline = nil
                schedule(c)
                continue
            }
            timers.pop()
        }
        if !dirty.isEmpty || !pendingResets.isEmpty { return now }
        return timers.top.map { Instant(nanoseconds: $0.deadline) }
    }

    /// Hands out the events since the last drain and clears the queue (capacity kept).
    public func drainEvents(_ body: (SocketEvent) -> Void) {
        // Indexing (not iterating a copy) so events posted by calls made from `body` are
        // delivered in this drain instead of being dropped by the final reset.
        var i = 0
        while i < events.count {
            body(events[i])
            i &+= 1
        }
        events.removeAll(keepingCapacity: true)
    }

    // MARK: - Socket API

    public func listen(local: IPv4Endpoint, backlog: Int) throws(SocketError) -> SocketHandle {
        guard local.port != 0 else { throw .addressNotAvailable }
        if let existing = listeners[local], !existing.closed { throw .addressInUse }
        let s = allocateSlot()
        let l = TCPListener(local: local, slot: s, generation: generations[Int(s)], backlog: max(backlog, 1),
                            config: config)
        slots[Int(s)] = .listener(l)
        listeners[local] = l
        return l.handle
    }

    /// Active open. `local.address` may be `.any` (then `sourceAddressResolver` picks it) and
    /// `local.port` 0 (an ephemeral port). The SYN goes out on the next `poll`.
    public func connect(local requested: IPv4Endpoint, remote: IPv4Endpoint, now: Instant) throws(SocketError) -> SocketHandle {
        var local = requested
        if local.address.isUnspecified {
            guard let a = sourceAddressResolver?(remote.address), !a.isUnspecified else { throw .networkUnreachable }
            local.address = a
        }
        guard remote.port != 0, !remote.address.isUnspecified, !remote.address.isBroadcast,
              !remote.address.isMulticast else { throw .networkUnreachable }
        guard roomForConnection(now: now) else { throw .noBufferSpace }
        var port = local.port
        if port == 0 {
            // Ephemeral range 49152-65535 (RFC 6335), random start, linear probe.
            let span: UInt32 = 16384
            let start = UInt32(truncatingIfNeeded: random.next()) % span
            var found = false
            for i in 0..<span {
                let p = UInt16(49152 &+ (start &+ i) % span)
                let k = TCPConnKey(localAddress: local.address.value, remoteAddress: remote.address.value,
                                   localPort: p, remotePort: remote.port)
                if connections[k] == nil && listeners[IPv4Endpoint(local.address, p)] == nil
                    && listeners[IPv4Endpoint(.any, p)] == nil {
                    port = p
                    found = true
                    break
                }
            }
            guard found else { throw .addressNotAvailable }
        }
        let l = IPv4Endpoint(local.address, port)
        let key = TCPConnKey(local: l, remote: remote)
        guard connections[key] == nil else { throw .addressInUse }
        let s = allocateSlot()
        let c = TCPConnection(layer: self, slot: s, generation: generations[Int(s)], state: .synSent, local: l,
                              remote: remote, rxBufferSize: config.receiveBufferSize,
                              txBufferSize: config.sendBufferSize, noDelay: config.noDelay,
                              congestion: config.congestionControl)
        c.iss = makeISN(key, now: now)
        c.sndUna = c.iss
        c.sndNxt = c.iss
        c.sndMax = c.iss
        c.lastSmallEnd = c.iss
        c.txBase = c.iss + 1
        c.tsOffset = UInt32(truncatingIfNeeded: tupleHash(key, salt: 1))
        c.needSyn = true
        c.lastReceive = now
        c.advertisedMss = 1460   // refined from the transmitter at the first poll
        c.needsMssFromPath = true
        c.allocateBuffers()
        slots[Int(s)] = .connection(c)
        connections[key] = c
        markDirty(c)
        return c.handle
    }

    public func accept(_ listener: SocketHandle) throws(SocketError) -> SocketHandle? {
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

    public func send(_ h: SocketHandle, _ bytes: UnsafeRawBufferPointer) throws(SocketError) -> Int {
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
        let n = tx.enqueue(base, count: bytes.count)
        if n < bytes.count || tx.free < c.lowWater { c.wantWritable = true }
        if n > 0 { markDirty(c) }
        return n
    }

    public func receive(_ h: SocketHandle, into: UnsafeMutableRawBufferPointer) throws(SocketError) -> Int {
        guard let c = connection(h) else { throw .invalidHandle }
        guard let rx = c.rx, let base = into.baseAddress else { return 0 }
        let n = rx.dequeue(into: base, count: into.count)
        if n > 0 && c.windowUpdateNeeded() { c.ackNow = true; markDirty(c) }
        return n
    }

    public func sendBuffer(_ h: SocketHandle) -> RingBuffer? { connection(h)?.tx }

    public func commitSend(_ h: SocketHandle, _ n: Int) {
        guard let c = connection(h), let tx = c.tx, !c.finQueued, n > 0 else { return }
        tx.commit(n)
        if tx.free < c.lowWater { c.wantWritable = true }
        markDirty(c)
    }

    public func receiveBuffer(_ h: SocketHandle) -> RingBuffer? { connection(h)?.rx }

    public func consume(_ h: SocketHandle, _ n: Int) {
        guard let c = connection(h), let rx = c.rx, n > 0 else { return }
        rx.discard(n)
        if c.windowUpdateNeeded() { c.ackNow = true; markDirty(c) }
    }

    public func isPeerClosed(_ h: SocketHandle) -> Bool {
        guard let c = connection(h) else { return true }
        return c.finReceived && (c.rx?.count ?? 0) == 0
    }

    public func shutdownWrite(_ h: SocketHandle) throws(SocketError) {
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

    public func close(_ h: SocketHandle) {
        if let l = listener(h) {
            closeListener(l)
            return
        }
        guard let c = connection(h) else { return }
        c.appClosed = true
        if c.state == .synSent {
            c.terminate(error: nil, now: c.lastReceive)   // nothing to tell the peer yet
            return
        }
        if c.lingerAbort || (c.rx?.count ?? 0) > 0 {
            // Unread data (or SO_LINGER 0): RST instead of FIN, like Linux (RFC 2525 §2.17).
            abortConnection(c)
            return
        }
        try? shutdownWrite(h)
        if c.state == .finWait2 { c.closeAt = c.lastReceive + config.finTimeout; schedule(c) }
    }

    public func abort(_ h: SocketHandle) {
        if let l = listener(h) {
            closeListener(l)
            release(h)
            return
        }
        guard let c = connection(h) else { return }
        abortConnection(c)
        release(h)
    }

    /// RST now (if synchronized) and drop the connection; the handle stays until released.
    func abortConnection(_ c: TCPConnection) {
        switch c.state {
        case .synReceived, .established, .finWait1, .finWait2, .closeWait:
            pendingResets.append((c.remote, c.local, c.sndNxt))
        default:
            break
        }
        c.released = true   // no events for an abort the app asked for (terminate frees the slot)
        c.terminate(error: nil, now: .zero)
    }

    /// RSTs from aborts are sent on the next poll (socket calls get no transmitter).
    @exclusivity(unchecked) var pendingResets: [(IPv4Endpoint, IPv4Endpoint, SeqNumber)] = []

    public func release(_ h: SocketHandle) {
        let i = Int(h.index)
        guard i < slots.count, generations[i] == h.generation else { return }
        switch slots[i] {
        case .listener(let l):
            closeListener(l)
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
            if !c.appClosed { close(h) }
            if c.state == .closed {
                if !c.released { c.released = true; freeSlot(h.index) }
                return
            }
            c.released = true
            if c.state == .timeWait { c.releaseBuffers(keepUnreadInput: false) }
            if c.state == .finWait2 { c.closeAt = c.lastReceive + config.finTimeout; schedule(c) }
        case .free:
            return
        }
    }

    func closeListener(_ l: TCPListener) {
        guard !l.closed else { return }
        l.closed = true
        if listeners[l.local] === l { listeners.removeValue(forKey: l.local) }
        // Connections never accepted are reset (Linux does the same on close of a listener).
        let queued = l.acceptQueue
        l.acceptQueue.removeAll()
        for c in queued { c.listener = nil; abortConnection(c) }
        for (_, c) in connections where c.listener === l {
            c.listener = nil
            abortConnection(c)
        }
    }

    public func setOption(_ h: SocketHandle, _ o: TCPOption) throws(SocketError) {
        if let l = listener(h) {
            switch o {
            case .noDelay(let v): l.noDelay = v
            case .keepAlive(let v): l.keepAlive = v
            case .linger(let d): l.lingerAbort = d == .zero
            case .receiveBufferSize(let n): guard n > 0 else { throw .invalidState }; l.rxBufferSize = n
            case .sendBufferSize(let n): guard n > 0 else { throw .invalidState }; l.txBufferSize = n
            case .congestionControl(let a): l.congestion = a
            }
            return
        }
        guard let c = connection(h) else { throw .invalidHandle }
        switch o {
        case .noDelay(let v):
            c.noDelay = v
            if v { markDirty(c) }
        case .keepAlive(let v):
            c.keepAlive = v
            if c.state == .established || c.state == .closeWait { c.startKeepAlive(now: c.lastReceive); schedule(c) }
        case .linger(let d):
            c.lingerAbort = d == .zero
        case .receiveBufferSize(let n):
            // The ring is allocated once; it can only be swapped while it holds nothing.
            guard n > 0 else { throw .invalidState }
            guard c.rx == nil || (c.rx!.isEmpty && c.ooo.isEmpty) else { throw .invalidState }
            c.rxBufferSize = n
            if c.rx != nil { c.rx = RingBuffer(capacity: n) }
            // The shift is fixed once our SYN is out (RFC 7323 §2.2).
            if config.windowScaling && c.state == .synSent && c.sndNxt == c.iss {
                c.rcvShift = TCPConnection.shift(for: n)
            }
        case .sendBufferSize(let n):
            guard n > 0 else { throw .invalidState }
            guard c.tx == nil || c.tx!.isEmpty else { throw .invalidState }
            c.txBufferSize = n
            if c.tx != nil { c.tx = RingBuffer(capacity: n) }
        case .congestionControl(let a):
            guard !c.isSynchronized else { throw .invalidState }
            c.cc.algorithm = a
        }
    }

    public func info(_ h: SocketHandle) -> TCPSocketInfo? {
        if let l = listener(h) {
            return TCPSocketInfo(state: l.closed ? .closed : .listen, local: l.local, remote: nil, bytesReceived: 0,
                                 bytesSent: 0, srtt: nil, rto: config.initialRTO, cwnd: 0, ssthresh: 0,
                                 retransmissions: 0, sendQueue: 0, receiveQueue: l.acceptQueue.count, peerWindow: 0)
        }
        return connection(h).map(info(of:))
    }

    func info(of c: TCPConnection) -> TCPSocketInfo {
        var i = TCPSocketInfo(state: c.state, local: c.local, remote: c.remote, bytesReceived: c.bytesReceived,
                              bytesSent: c.bytesSent, srtt: c.hasRTT ? Duration(nanoseconds: c.srtt) : nil,
                              rto: c.effectiveRTO, cwnd: c.cc.cwnd, ssthresh: min(c.cc.ssthresh, Int(Int32.max)),
                              retransmissions: c.retransmissions, sendQueue: c.tx?.count ?? 0,
                              receiveQueue: c.rx?.count ?? 0, peerWindow: c.sndWnd)
        i.mss = c.sndMss
        i.windowScaling = c.wsOK
        i.timestamps = c.tsOK
        i.sack = c.sackOK
        i.congestionControl = c.cc.algorithm
        return i
    }

    public func localEndpoint(_ h: SocketHandle) -> IPv4Endpoint? { connection(h)?.local ?? listener(h)?.local }
    public func remoteEndpoint(_ h: SocketHandle) -> IPv4Endpoint? { connection(h)?.remote }

    /// Connections in the table, including TIME-WAIT and handle-less ones (not listeners).
    public var connectionCount: Int { connections.count }

    public func forEachConnection(_ body: (SocketHandle?, TCPSocketInfo) -> Void) {
        for (_, l) in listeners where !l.released {
            body(l.handle, info(l.handle)!)
        }
        for (_, c) in connections {
            body(c.userVisible ? c.handle : nil, info(of: c))
        }
    }
}

/// A listening socket: its options are inherited by the connections it accepts.
final class TCPListener {
    let local: IPv4Endpoint
    let slot: UInt32
    let generation: UInt32
    var handle: SocketHandle { SocketHandle(index: slot, generation: generation) }
    @exclusivity(unchecked) var backlog: Int
    @exclusivity(unchecked) var synQueue = 0
    @exclusivity(unchecked) var acceptQueue: [TCPConnection] = []
    @exclusivity(unchecked) var closed = false
    @exclusivity(unchecked) var released = false
    @exclusivity(unchecked) var rxBufferSize: Int
    @exclusivity(unchecked) var txBufferSize: Int
    @exclusivity(unchecked) var noDelay: Bool
    @exclusivity(unchecked) var keepAlive: Bool
    @exclusivity(unchecked) var lingerAbort = false
    @exclusivity(unchecked) var congestion: CongestionControl

    init(local: IPv4Endpoint, slot: UInt32, generation: UInt32, backlog: Int, config: TCPConfig) {
        self.local = local
        self.slot = slot
        self.generation = generation
        self.backlog = backlog
        rxBufferSize = config.receiveBufferSize
        txBufferSize = config.sendBufferSize
        noDelay = config.noDelay
        keepAlive = config.keepAlive
        congestion = config.congestionControl
        acceptQueue.reserveCapacity(min(backlog, 1024))
    }
}

/// Demultiplexing key: local and remote address and both ports (host order).
struct TCPConnKey: Hashable {
    var localAddress: UInt32
    var remoteAddress: UInt32
    var ports: UInt32
    init(localAddress: UInt32, remoteAddress: UInt32, localPort: UInt16, remotePort: UInt16) {
        self.localAddress = localAddress
        self.remoteAddress = remoteAddress
        ports = UInt32(localPort) << 16 | UInt32(remotePort)
    }
    init(local: IPv4Endpoint, remote: IPv4Endpoint) {
        self.init(localAddress: local.address.value, remoteAddress: remote.address.value,
                  localPort: local.port, remotePort: remote.port)
    }
}
