/// The TCP layer: demultiplexes segments to connections and listeners, owns the socket table,
/// the timer heap and the event queue, and implements the socket API the driver uses.
///
/// What it leaves out: IP (the interface hands in segments addressed to us and transmits ours;
/// addresses are `IPAddress`, so one layer serves IPv4 and IPv6), ECN, TCP-AO/MD5. Urgent data
/// only says where the urgent byte lies both ways (TCPUrgent.swift); the driver delivers it.
///
/// Driving it: after any socket call (`connect`, `send`, `consume`, `close`…) the layer only
/// marks the connection dirty; the next `poll` sends what became due. `poll` returns the next
/// instant it must be called at. Work per `poll` is proportional to dirty connections and due
/// timers (a min-heap with lazy deletion), never to the number of connections.
public final class TCPLayer {
    public let config: TCPConfig
    /// Listeners' ports and the ephemeral ports of outgoing connections (shared with UDP and the
    /// intercept hub when the layer belongs to a NetStack).
    public let ports: PortTable
    /// Memory of the connections' rings (given back to the kernel as connections drain and end).
    public let ringMemory: RingMemory
    /// Asked before a connection's rings grow, told when they shrink (the owner's memory
    /// budget); nil: rings grow up to their maximum unasked.
    public weak var ringBudget: (any RingBudget)?
    /// Keyed-hash secret for ISNs (RFC 6528) and SYN cookies.
    let secret0: UInt64
    let secret1: UInt64

    enum Slot {
        case free
        case listener(TCPListener)
        case connection(TCPConnection)
    }
    // `@exclusivity(unchecked)` only where the runtime checks measurably cost (single thread, no
    // re-entry; callgrind, `NetStackBench tcp` / `sim`, instructions per MiB): slots +0.0% / +2.9%,
    // generations +0.0% / +2.2% (read per timer in `poll`), connections +2.4% / +1.1% (lookup
    // per segment), events +2.3% / +1.9%. The rest stay checked: timers +0.4% / +0.2%, dirty and
    // the others below 0.1%.
    @exclusivity(unchecked) var slots: [Slot] = []
    @exclusivity(unchecked) var generations: [UInt32] = []
    var freeSlots: [UInt32] = []

    @exclusivity(unchecked) var connections: [TCPConnKey: TCPConnection] = [:]
    /// Listeners by address and port: one, or an SO_REUSEPORT group (`PortTable.listen` decides
    /// who may join), among which `listener(for:in:)` spreads new connections.
    var listeners: [IPEndpoint: [TCPListener]] = [:]
    var timers = TimerHeap()
    var dirty: [TCPConnection] = []
    @exclusivity(unchecked) var events: [SocketEvent] = []
    /// Connections in the order they entered TIME-WAIT (so also the order they expire), from
    /// `twHead` on; popped entries are nil until the array is compacted. Stale entries (gone, or
    /// left TIME-WAIT) are popped as soon as they reach the head, so the queue does not keep
    /// closed connections' objects alive.
    var timeWaitQueue: [TCPConnection?] = []
    var twHead = 0
    /// RSTs from aborts are sent on the next poll (socket calls get no transmitter).
    var pendingResets: [(IPEndpoint, IPEndpoint, SeqNumber)] = []
    /// Incremented per `receive`/`poll` call; used to coalesce `.readable` events.
    var epoch: UInt64 = 0
    /// `now` of the last `receive`/`poll` (introspection's clock: `info` takes none).
    var lastNow = Instant.zero
    /// SYN-ACKs answered with a SYN cookie because a listener's SYN queue was full.
    public internal(set) var synCookiesSent: UInt64 = 0

    /// Direct receive: takes in-order bytes of a connection with `setDirectReceive` on while
    /// its receive ring is empty (the frame's payload, valid only during the call) and returns
    /// how many it took; the rest goes to the ring as usual. Must not call back into the stack.
    public var directReceiver: ((SocketHandle, UnsafeRawBufferPointer) -> Int)?

    /// Picks our source address towards a destination, for `connect` with an unspecified local
    /// address (the interface knows its addresses and routes, the TCP layer does not). Capture
    /// the owner `unowned` to avoid a reference cycle.
    public var sourceAddressResolver: ((IPAddress) -> IPAddress?)?

    /// `ports` is the interface's table; a layer on its own (tests) makes one with the default
    /// ephemeral range.
    public init(config: TCPConfig, random: some RandomSource, ports: PortTable? = nil,
                ringMemory: RingMemory = RingMemory()) {
        self.config = config
        self.ringMemory = ringMemory
        var r = random
        secret0 = r.next()
        secret1 = r.next()
        self.ports = ports ?? PortTable(seed: r.next())
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
    var challengeWindowStart: UInt64 = 0
    var challengeCount = 0
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
        guard let d = c.timers.next else { return }
        if let h = c.heapDeadline, h <= d.nanoseconds { return }
        c.heapDeadline = d.nanoseconds
        timers.push(.init(deadline: d.nanoseconds, slot: c.slot, generation: c.generation))
    }

    /// ARP gave up on a next hop: connections still in SYN-SENT towards a destination that
    /// goes through it fail with EHOSTUNREACH (Linux does the same through ipv4_link_failure);
    /// established ones keep retransmitting, as for any soft error.
    public func nextHopFailed(where routedThroughFailedHop: (IPAddress) -> Bool, now: Instant) {
        var failing: [TCPConnection] = []
        for c in connections.values where c.state == .synSent && routedThroughFailedHop(c.key.remoteAddress) {
            failing.append(c)
        }
        for c in failing { c.terminate(error: .hostUnreachable, now: now) }
    }

    /// An ICMP destination unreachable quoting one of our segments (RFC 1122 §4.2.3.9; RFC 5927
    /// for the checks): a connect still in SYN-SENT fails, with ECONNREFUSED for port/protocol
    /// unreachable and EHOSTUNREACH/ENETUNREACH otherwise, if the quoted sequence number is our
    /// SYN's. Other states treat it as a soft error (ignored; the RTO keeps going).
    public func destinationUnreachable(code: UInt8, local: IPEndpoint, remote: IPEndpoint, quotedSeq: UInt32,
                                       now: Instant) {
        guard let e = SocketError(unreachableCode: code) else { return }
        destinationUnreachable(error: e, local: local, remote: remote, quotedSeq: quotedSeq, now: now)
    }

    /// `destinationUnreachable` with the error already mapped (ICMPv6's codes differ).
    public func destinationUnreachable(error e: SocketError, local: IPEndpoint, remote: IPEndpoint, quotedSeq: UInt32,
                                       now: Instant) {
        let key = TCPConnKey(local: local, remote: remote)
        guard let c = connections[key], c.state == .synSent, quotedSeq == c.iss.rawValue else { return }
        c.terminate(error: e, now: now)
    }

    /// A packet too big lowered the path MTU towards `dst` to `maxPayload` bytes after the IP
    /// header (RFC 8201 §5.4, what Linux's tcp_v6_mtu_reduced does): connections to it send
    /// segments that fit from now on, and what is in flight goes again at the new size, since
    /// the oversized segments were dropped on the way. Not a congestion signal: cwnd stays.
    public func pathMTUDecreased(to dst: IPAddress, maxPayload: Int, now: Instant) {
        let limit = max(maxPayload &- TCPHeaderView.minimumHeaderLength, 64)
        for c in connections.values where c.remote.address == dst && c.sndMss > limit {
            c.sndMss = limit
            if c.advertisedMss > limit { c.advertisedMss = limit }
            if c.isSynchronized && c.sndUna < c.sndNxt { c.goBackN() }
            markDirty(c)
        }
    }

    /// Outgoing connections that took over a TIME-WAIT of their 4-tuple (`canReuseTimeWait`).
    public internal(set) var timeWaitReused: UInt64 = 0

    /// Whether a new outgoing connection may take over `old`'s 4-tuple: RFC 6191's condition
    /// as Linux's tcp_tw_reuse applies it to outgoing connections. `old` is in TIME-WAIT with
    /// timestamps, and its last segment arrived at least `timeWaitReuseDelay` ago, so the new
    /// connection's timestamps (the same per-tuple clock) are newer than any the peer saw, and
    /// PAWS on both ends tells old duplicates from new segments.
    func canReuseTimeWait(_ old: TCPConnection, now: Instant) -> Bool {
        guard config.timeWaitReuse, old.state == .timeWait, old.tsOK else { return false }
        return now - old.lastReceive >= config.timeWaitReuseDelay
    }

    /// Called by a connection entering TIME-WAIT.
    func enteredTimeWait(_ c: TCPConnection) {
        popStaleTimeWaits()
        timeWaitQueue.append(c)
    }

    /// Pops the entries at the head that are no longer a TIME-WAIT of this table (expired,
    /// taken over, reopened, ended early). Before, entries went only when the table was full,
    /// so below MaxConnections every connection that ever passed TIME-WAIT stayed allocated
    /// (~1.3 KB each: ztapd's RSS grew by ~13 MiB per 10k closed connections, for good).
    /// Entries enter in expiry order, so the stale ones collect at the head; a TIME-WAIT whose
    /// timer a retransmitted FIN restarted holds back at most one TIME-WAIT period behind it.
    func popStaleTimeWaits() {
        while twHead < timeWaitQueue.count {
            if let c = timeWaitQueue[twHead], c.state == .timeWait, connections[c.key] === c { break }
            timeWaitQueue[twHead] = nil
            twHead &+= 1
        }
        if twHead == timeWaitQueue.count {
            if twHead > 0 { timeWaitQueue.removeAll(keepingCapacity: true) }
            twHead = 0
        } else if twHead > 1024 && twHead &* 2 > timeWaitQueue.count {
            timeWaitQueue.removeFirst(twHead)
            twHead = 0
        }
    }

    /// Whether a new connection fits under `maxConnections`. TIME-WAIT connections do not hold
    /// a place against live ones: when the table is full the oldest is ended early (as Linux
    /// does past tcp_max_tw_buckets), so closed connections never make new ones fail.
    func roomForConnection(now: Instant) -> Bool {
        while connections.count >= config.maxConnections && twHead < timeWaitQueue.count {
            let entry = timeWaitQueue[twHead]
            timeWaitQueue[twHead] = nil
            twHead &+= 1
            // Its terminate pops what follows it if stale (connectionClosed).
            if let c = entry, c.state == .timeWait && connections[c.key] === c { c.terminate(error: nil, now: now) }
        }
        popStaleTimeWaits()
        return connections.count < config.maxConnections
    }

    /// Called by a connection reaching CLOSED.
    func connectionClosed(_ c: TCPConnection) {
        if connections[c.key] === c { connections.removeValue(forKey: c.key) }
        if twHead < timeWaitQueue.count { popStaleTimeWaits() }
        if c.ephemeralPort {
            c.ephemeralPort = false
            ports.releaseConnectClaim(port: c.local.port, address: c.local.address)
        }
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

    // MARK: - ISN (and the keyed hash SYN cookies use too)

    @inline(__always) static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    func tupleHash(_ k: TCPConnKey, salt: UInt64) -> UInt64 {
        var h: UInt64
        if k.localAddress.isV4 && k.remoteAddress.isV4 {
            h = Self.mix(secret0 ^ (UInt64(k.localAddress.v4.value) << 32 | UInt64(k.remoteAddress.v4.value)))
        } else {
            h = Self.mix(secret0 ^ k.localAddress.hi)
            h = Self.mix(h ^ k.localAddress.lo)
            h = Self.mix(h ^ k.remoteAddress.hi)
            h = Self.mix(h ^ k.remoteAddress.lo)
        }
        h = Self.mix(h ^ UInt64(k.ports) ^ secret1)
        return Self.mix(h ^ salt)
    }

    /// RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock.
    func makeISN(_ k: TCPConnKey, now: Instant) -> SeqNumber {
        SeqNumber(UInt32(truncatingIfNeeded: tupleHash(k, salt: 0)) &+ UInt32(truncatingIfNeeded: now.nanoseconds / 4000))
    }

    // MARK: - Segment input

    /// One TCP segment (header+payload, exactly the IP payload) that arrived for a local address.
    public func receive(src: IPAddress, dst: IPAddress, segment: UnsafeRawBufferPointer, now: Instant,
                        tx: some IPTransmitter) {
        receive(src: src, dst: dst, segment: segment, checksumVerified: false, segmentSize: 0, now: now, tx: tx)
    }

    /// `receive`, for a segment whose checksum the link vouched for (`checksumVerified`: the
    /// kernel checked it, or the segment never left the host) and which may be a super-segment
    /// the kernel coalesced from (or will cut into) `segmentSize`-byte pieces: it is taken
    /// whole, and acknowledged as that many MSS-sized segments would be.
    public func receive(src: IPAddress, dst: IPAddress, segment: UnsafeRawBufferPointer, checksumVerified: Bool,
                        segmentSize: Int, now: Instant, tx: some IPTransmitter) {
        epoch &+= 1
        lastNow = now
        guard let seg = try? TCPHeaderView(segment) else { return }
        let key = TCPConnKey(localAddress: dst, remoteAddress: src,
                             localPort: seg.destinationPort, remotePort: seg.sourcePort)
        let conn = connections[key]
        var precopied = false
        if !checksumVerified {
            // In-order data bound for the receive ring is summed as it is copied there. A
            // connection holds its addresses' share of the pseudo-header (its key is exactly
            // these addresses).
            var s = Checksum.pseudoHeader(addressSum: conn?.addressSum ?? Checksum.addressSum(src, dst),
                                          proto: IPProtocol.tcp, length: segment.count)
            s = Checksum.partial(seg.base, count: seg.headerLength, initial: s)
            let payload = seg.payload
            if let conn, let p = conn.copyToRing(payload, seq: seg.sequenceNumber) {
                s &+= p
                precopied = true
            } else if let b = payload.baseAddress {
                s = Checksum.partial(b, count: payload.count, initial: s)
            }
            guard Checksum.finish(s) == 0 else { return }
        }
        let options = seg.headerLength > TCPHeaderView.minimumHeaderLength
            ? TCPSegmentOptions(parsing: seg.optionsArea) : TCPSegmentOptions()
        if let c = conn {
            let r = c.segmentArrived(seg, options: options, segmentSize: segmentSize, precopied: precopied, now: now,
                                     tx: tx)
            guard case .reopen = r else {
                schedule(c)
                return
            }
            c.terminate(error: nil, now: now)
        }
        // TCP is unicast only (RFC 1122 §4.2.3.10); no connection has such an address.
        guard src.isUnicast, dst.isUnicast else { return }
        let flags = seg.flags
        if let l = listener(for: dst, port: seg.destinationPort, key: key), !l.closed {
            listenerInput(l, seg: seg, flags: flags, options: options, key: key, src: src, dst: dst, now: now, tx: tx)
            return
        }
        // No socket: RST (RFC 9293 §3.10.7.1), never in answer to an RST.
        if !flags.contains(.rst) { resetFor(seg, src: src, dst: dst, tx: tx) }
    }

    /// The listener a segment to `dst`:`port` goes to: one on that address, else the wildcard of
    /// its family, and for IPv4 last a dual-stack `::` (not IPV6_V6ONLY), as Linux looks them up;
    /// within an SO_REUSEPORT group, the member `key` hashes to.
    @inline(__always)
    func listener(for dst: IPAddress, port: UInt16, key: TCPConnKey) -> TCPListener? {
        if let l = listener(for: key, in: listeners[IPEndpoint(dst, port)]) { return l }
        if dst.isV4 {
            if let l = listener(for: key, in: listeners[IPEndpoint(IPAddress.v4Any, port)]) { return l }
            guard let group = listeners[IPEndpoint(IPAddress.v6Any, port)] else { return nil }
            if group.allSatisfy({ !$0.binding.v6Only }) { return listener(for: key, in: group) }
            return listener(for: key, in: group.filter { !$0.binding.v6Only })
        }
        return listener(for: key, in: listeners[IPEndpoint(IPAddress.v6Any, port)])
    }

    /// The listener of `group` a new connection `key` goes to: like Linux's SO_REUSEPORT groups,
    /// a keyed hash of the 4-tuple picks one, so every segment of a handshake (SYN-cookie ACKs
    /// included) finds the same member.
    @inline(__always)
    func listener(for key: TCPConnKey, in group: [TCPListener]?) -> TCPListener? {
        guard let group, let first = group.first else { return nil }
        if group.count == 1 { return first }
        let h = tupleHash(key, salt: 2)
        return group[Int(truncatingIfNeeded: ((h >> 32) &* UInt64(group.count)) >> 32)]
    }

    func resetFor(_ seg: TCPHeaderView, src: IPAddress, dst: IPAddress, tx: some IPTransmitter) {
        let local = IPEndpoint(dst, seg.destinationPort)
        let remote = IPEndpoint(src, seg.sourcePort)
        if seg.flags.contains(.ack) {
            sendReset(to: remote, from: local, seq: seg.ackNumber, ack: nil, tx: tx)
        } else {
            sendReset(to: remote, from: local, seq: SeqNumber(0), ack: seg.sequenceNumber + seg.segmentLength, tx: tx)
        }
    }

    func sendReset(to remote: IPEndpoint, from local: IPEndpoint, seq: SeqNumber, ack: SeqNumber?,
                   tx: some IPTransmitter) {
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

    // MARK: - Poll

    /// Sends everything that is due and returns when poll must run again (nil = nothing pending).
    public func poll(now: Instant, tx: some IPTransmitter) -> Instant? {
        epoch &+= 1
        lastNow = now
        if !pendingResets.isEmpty {
            for (remote, local, seq) in pendingResets { sendReset(to: remote, from: local, seq: seq, ack: nil, tx: tx) }
            pendingResets.removeAll(keepingCapacity: true)
        }
        var i = 0
        while i < dirty.count {
            let c = dirty[i]
            c.inDirtyList = false
            if c.state != .closed {
                c.acks.pollReached()
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
                if let real = c.timers.next, real.nanoseconds <= top.deadline { break }
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

}

/// Demultiplexing key: local and remote address and both ports (host order).
///
/// Hashing: when both addresses have a zero upper half (every IPv4 pair, as mapped addresses)
/// only the two low 32-bit words and the ports go in, 12 bytes like the IPv4-only key had, so the
/// IPv4 lookup per segment costs what it did. IPv6 input drops addresses in ::/64 (mapped,
/// compatible, unspecified, loopback), so no IPv6 key takes that path and collides there.
struct TCPConnKey: Hashable {
    var localAddress: IPAddress
    var remoteAddress: IPAddress
    var ports: UInt32
    init(localAddress: IPAddress, remoteAddress: IPAddress, localPort: UInt16, remotePort: UInt16) {
        self.localAddress = localAddress
        self.remoteAddress = remoteAddress
        ports = UInt32(localPort) << 16 | UInt32(remotePort)
    }
    init(local: IPEndpoint, remote: IPEndpoint) {
        self.init(localAddress: local.address, remoteAddress: remote.address,
                  localPort: local.port, remotePort: remote.port)
    }
    @inline(__always) static func == (a: TCPConnKey, b: TCPConnKey) -> Bool {
        // Branch-free over the halves: one test instead of four on the lookup per segment.
        a.ports == b.ports
            && (a.remoteAddress.lo ^ b.remoteAddress.lo) | (a.localAddress.lo ^ b.localAddress.lo)
                | (a.remoteAddress.hi ^ b.remoteAddress.hi) | (a.localAddress.hi ^ b.localAddress.hi) == 0
    }
    @inline(__always) func hash(into h: inout Hasher) {
        if localAddress.hi | remoteAddress.hi == 0 {
            h.combine(UInt32(truncatingIfNeeded: localAddress.lo))
            h.combine(UInt32(truncatingIfNeeded: remoteAddress.lo))
        } else {
            h.combine(localAddress.hi); h.combine(localAddress.lo)
            h.combine(remoteAddress.hi); h.combine(remoteAddress.lo)
        }
        h.combine(ports)
    }
}
