/// The neighbor cache of one address family — ARP's (RFC 826, RFC 1122 §2.3.2) for IPv4, Neighbor
/// Discovery's (RFC 4861 §7.3) for IPv6 — plus the queue of frames waiting for a resolution.
/// Pure bookkeeping: the NetStack sends the requests and frames it asks for.
///
/// States: `incomplete` (requests outstanding, frames queued), `reachable` (confirmed within
/// `reachableTime`), `stale` (older, or learned without confirmation: still used, and a use
/// triggers up to `maxTries` unicast re-requests, after which the entry is forgotten; RFC 4861's
/// DELAY and PROBE are that probe round). Queued frames live in one preallocated pool of
/// MTU-sized slots (`FrameQueuePool`, shared by both families' caches), chained per neighbor, so
/// resolution never allocates per frame.
enum NeighborEntryState: Equatable { case incomplete, reachable, stale }

enum NeighborLookup {
    case resolved(MACAddress)
    /// Resolved, but old: the caller should send a (re-)request now.
    case resolvedNeedsProbe(MACAddress)
    case unresolved
}

/// Frames parked until their neighbor resolves: `totalSlots` slots of one MTU-sized frame each,
/// singly linked per neighbor through `next`.
final class FrameQueuePool {
    private(set) var slotSize: Int
    let totalSlots: Int
    private(set) var base: UnsafeMutableRawPointer
    var length: [Int]
    var next: [Int32]
    var freeHead: Int32

    init(mtu: Int, slots: Int) {
        totalSlots = max(1, slots)
        slotSize = mtu &+ EthernetHeaderView.headerLength
        base = .allocate(byteCount: slotSize &* totalSlots, alignment: 16)
        length = Array(repeating: 0, count: totalSlots)
        next = Array(repeating: -1, count: totalSlots)
        freeHead = 0
        for i in 0..<totalSlots { next[i] = i &+ 1 < totalSlots ? Int32(i &+ 1) : -1 }
    }
    deinit { base.deallocate() }

    @inline(__always) func slot(_ i: Int32) -> UnsafeMutableRawPointer { base + Int(i) &* slotSize }

    /// A free slot, or -1.
    func take() -> Int32 {
        let s = freeHead
        if s >= 0 { freeHead = next[Int(s)]; next[Int(s)] = -1 }
        return s
    }
    func give(_ s: Int32) {
        next[Int(s)] = freeHead
        freeHead = s
    }

    /// New slot size; every slot is free again (the caches drop what they had queued first).
    func resize(mtu: Int) {
        base.deallocate()
        slotSize = mtu &+ EthernetHeaderView.headerLength
        base = .allocate(byteCount: slotSize &* totalSlots, alignment: 16)
        freeHead = 0
        for i in 0..<totalSlots { next[i] = i &+ 1 < totalSlots ? Int32(i &+ 1) : -1 }
    }
}

final class NeighborCache<Address: Hashable & Comparable> {
    typealias State = NeighborEntryState

    struct Entry {
        var mac: MACAddress = .zero
        var state: State
        var confirmed: Instant = .zero
        var tries = 0               // requests sent in the current resolution / probe round
        var nextTry: Instant = .zero
        var probing = false         // in `probing` list
        var queueHead: Int32 = -1
        var queueTail: Int32 = -1
        var queueCount = 0
    }

    private(set) var entries: [Address: Entry] = [:]
    /// Addresses with requests outstanding (incomplete, or stale being re-confirmed).
    private(set) var probing: [Address] = []
    let reachableTime: Duration
    let retryInterval: Duration
    let maxTries: Int
    let maxEntries: Int
    let perNeighborQueue: Int

    let pool: FrameQueuePool
    /// How long a stale entry is used before the first unicast probe (0: at once, ARP's way;
    /// Neighbor Discovery waits DELAY_FIRST_PROBE_TIME, 5 s).
    let delayFirstProbe: Duration

    init(config: StackConfig, pool: FrameQueuePool, delayFirstProbe: Duration = .zero) {
        self.delayFirstProbe = delayFirstProbe
        reachableTime = config.arpReachableTime
        retryInterval = config.arpRetryInterval
        maxTries = max(1, config.arpMaxTries)
        maxEntries = max(1, config.arpMaxEntries)
        perNeighborQueue = max(1, config.arpQueuePerNeighbor)
        self.pool = pool
        entries.reserveCapacity(64)
        probing.reserveCapacity(16)
    }

    var count: Int { entries.count }

    /// Forgets every queued frame (before the pool is resized); returns how many.
    func dropQueues() -> Int {
        var dropped = 0
        for (ip, e) in entries where e.queueCount > 0 {
            dropped &+= e.queueCount
            entries[ip]?.queueHead = -1; entries[ip]?.queueTail = -1; entries[ip]?.queueCount = 0
        }
        return dropped
    }

    typealias Lookup = NeighborLookup

    /// The MAC for `ip` if known. Moves reachable entries past their lifetime to stale and starts
    /// a probe round on first use of a stale entry.
    @inline(__always)
    func lookup(_ ip: Address, now: Instant) -> Lookup {
        guard let e = entries[ip] else { return .unresolved }
        switch e.state {
        case .reachable:
            if now < e.confirmed + reachableTime { return .resolved(e.mac) }
            return startProbe(ip, now: now)
        case .stale:
            return e.probing ? .resolved(e.mac) : startProbe(ip, now: now)
        case .incomplete:
            return .unresolved
        }
    }

    private func startProbe(_ ip: Address, now: Instant) -> Lookup {
        guard var e = entries[ip] else { return .unresolved }
        if delayFirstProbe > .zero {
            // RFC 4861's DELAY: use the address, ask only if nothing confirmed it meanwhile.
            e.state = .stale
            e.tries = 0
            e.nextTry = now + delayFirstProbe
            if !e.probing { e.probing = true; probing.append(ip) }
            entries[ip] = e
            return .resolved(e.mac)
        }
        e.state = .stale
        e.tries = 1
        e.nextTry = now + retryInterval
        if !e.probing { e.probing = true; probing.append(ip) }
        entries[ip] = e
        return .resolvedNeedsProbe(e.mac)
    }

    /// Holds a frame of `length` bytes (Ethernet header included; its destination MAC is filled
    /// in on resolution) for `ip`, creating an incomplete entry if needed. `isNew`: the caller
    /// must send the first request. `queued` is false when a bound was hit (frame dropped).
    func enqueue(_ ip: Address, frame: UnsafeRawPointer, length: Int, now: Instant) -> (queued: Bool, isNew: Bool) {
        var isNew = false
        if entries[ip] == nil {
            if entries.count >= maxEntries && !evictOne() { return (false, false) }
            entries[ip] = Entry(state: .incomplete, tries: 1, nextTry: now + retryInterval, probing: true)
            probing.append(ip)
            isNew = true
        }
        guard var e = entries[ip], e.state == .incomplete, length <= pool.slotSize,
              e.queueCount < perNeighborQueue else {
            return (false, isNew)
        }
        let slot = pool.take()
        guard slot >= 0 else { return (false, isNew) }
        pool.slot(slot).copyMemory(from: frame, byteCount: length)
        pool.length[Int(slot)] = length
        if e.queueTail >= 0 { pool.next[Int(e.queueTail)] = slot } else { e.queueHead = slot }
        e.queueTail = slot
        e.queueCount &+= 1
        entries[ip] = e
        return (true, isNew)
    }

    /// Evicts the least recently confirmed entry that has nothing queued. False if none.
    private func evictOne() -> Bool {
        var victim: Address?
        var oldest = Instant(nanoseconds: .max)
        for (ip, e) in entries where e.state != .incomplete && e.confirmed < oldest {
            oldest = e.confirmed
            victim = ip
        }
        guard let v = victim else { return false }
        remove(v)
        return true
    }

    /// Records that `ip` is at `mac` (reply or request from it). `create` is false when the packet
    /// was not addressed to us: then only existing entries are refreshed (RFC 826 merge rule).
    /// Neighbor Discovery's finer rules (RFC 4861 §7.2.3, §7.2.5): `confirmed` false (an
    /// unsolicited advertisement, a solicitation's source address) makes a new or changed entry
    /// stale instead of reachable; `override` false (an advertisement without O) never replaces
    /// a known address, it only marks a reachable entry stale; a nil `mac` (an advertisement
    /// without target address option) confirms what is known. Calls `flush` with each queued
    /// frame (destination MAC already written) and frees them.
    func update(_ ip: Address, mac newMAC: MACAddress?, now: Instant, create: Bool, confirmed: Bool = true,
                override: Bool = true, flush: (UnsafeMutableRawBufferPointer) -> Void) {
        if entries[ip] == nil {
            guard create, newMAC != nil else { return }
            if entries.count >= maxEntries && !evictOne() { return }
            entries[ip] = Entry(state: .incomplete)
        }
        guard var e = entries[ip] else { return }
        if e.state == .incomplete && newMAC == nil { return }
        let mac = newMAC ?? e.mac
        let changed = e.state == .incomplete || mac != e.mac
        if changed && e.state != .incomplete && !override {
            if e.state == .reachable { e.state = .stale; entries[ip] = e }
            return
        }
        e.mac = mac
        if confirmed {
            e.state = .reachable
            e.confirmed = now
        } else if changed {
            e.state = .stale
        } else {
            return
        }
        e.tries = 0
        if e.probing { e.probing = false; removeProbing(ip) }
        var slot = e.queueHead
        e.queueHead = -1; e.queueTail = -1; e.queueCount = 0
        entries[ip] = e
        while slot >= 0 {
            let p = pool.slot(slot)
            mac.store(to: p)
            flush(UnsafeMutableRawBufferPointer(start: p, count: pool.length[Int(slot)]))
            let next = pool.next[Int(slot)]
            pool.give(slot)
            slot = next
        }
    }

    private func removeProbing(_ ip: Address) {
        if let i = probing.firstIndex(of: ip) { probing.swapAt(i, probing.count &- 1); probing.removeLast() }
    }

    /// Forgets `ip`, returning how many queued frames were dropped.
    @discardableResult
    func remove(_ ip: Address) -> Int {
        guard let e = entries.removeValue(forKey: ip) else { return 0 }
        if e.probing { removeProbing(ip) }
        var slot = e.queueHead
        while slot >= 0 {
            let next = pool.next[Int(slot)]
            pool.give(slot)
            slot = next
        }
        return e.queueCount
    }

    enum TimerAction { case sendRequest(Address, unicast: MACAddress?), gaveUp(Address, droppedFrames: Int) }

    /// Runs retries due at `now`; returns the next retry deadline.
    func poll(now: Instant, _ action: (TimerAction) -> Void) -> Instant? {
        var next: Instant?
        var i = 0
        while i < probing.count {
            let ip = probing[i]
            guard var e = entries[ip] else { probing.remove(at: i); continue }
            if now >= e.nextTry {
                if e.tries >= maxTries {
                    let wasIncomplete = e.state == .incomplete
                    let dropped = remove(ip)    // swaps within `probing`: re-examine index i
                    if wasIncomplete { action(.gaveUp(ip, droppedFrames: dropped)) }
                    continue
                }
                e.tries &+= 1
                e.nextTry = now + retryInterval
                entries[ip] = e
                action(.sendRequest(ip, unicast: e.state == .incomplete ? nil : e.mac))
            }
            next = earliest(next, e.nextTry)
            i &+= 1
        }
        return next
    }

    /// Test/diagnostic view of an entry.
    func entry(_ ip: Address) -> Entry? { entries[ip] }
}
