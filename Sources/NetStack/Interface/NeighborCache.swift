/// The ARP neighbor cache (RFC 826, RFC 1122 §2.3.2) plus the queue of frames waiting for a
/// resolution. Pure bookkeeping: the NetStack sends the requests and frames it asks for.
///
/// States: `incomplete` (requests outstanding, frames queued), `reachable` (confirmed within
/// `reachableTime`), `stale` (older; still used, and a use triggers up to `maxTries` re-requests,
/// after which the entry is forgotten). Queued frames live in one preallocated pool of
/// `totalSlots` MTU-sized slots, chained per neighbor, so resolution never allocates per frame.
final class NeighborCache {
    enum State: Equatable { case incomplete, reachable, stale }

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

    private(set) var entries: [IPv4Address: Entry] = [:]
    /// Addresses with requests outstanding (incomplete, or stale being re-confirmed).
    private(set) var probing: [IPv4Address] = []
    let reachableTime: Duration
    let retryInterval: Duration
    let maxTries: Int
    let maxEntries: Int
    let perNeighborQueue: Int

    // Frame pool: slot i occupies pool[i * slotSize ..< (i + 1) * slotSize].
    private(set) var slotSize: Int
    let totalSlots: Int
    private var pool: UnsafeMutableRawPointer
    private var slotLength: [Int]
    private var slotNext: [Int32]
    private var freeHead: Int32

    init(config: StackConfig) {
        reachableTime = config.arpReachableTime
        retryInterval = config.arpRetryInterval
        maxTries = max(1, config.arpMaxTries)
        maxEntries = max(1, config.arpMaxEntries)
        perNeighborQueue = max(1, config.arpQueuePerNeighbor)
        totalSlots = max(1, config.arpQueueTotal)
        slotSize = config.mtu &+ EthernetHeaderView.headerLength
        pool = .allocate(byteCount: slotSize &* totalSlots, alignment: 16)
        slotLength = Array(repeating: 0, count: totalSlots)
        slotNext = Array(repeating: -1, count: totalSlots)
        freeHead = 0
        for i in 0..<totalSlots { slotNext[i] = i &+ 1 < totalSlots ? Int32(i &+ 1) : -1 }
        entries.reserveCapacity(64)
        probing.reserveCapacity(16)
    }
    deinit { pool.deallocate() }

    var count: Int { entries.count }

    /// Reallocates the frame pool for a new MTU; frames still queued are dropped (returned count).
    func resize(mtu: Int) -> Int {
        var dropped = 0
        for (ip, e) in entries where e.queueCount > 0 {
            dropped &+= e.queueCount
            entries[ip]?.queueHead = -1; entries[ip]?.queueTail = -1; entries[ip]?.queueCount = 0
        }
        pool.deallocate()
        slotSize = mtu &+ EthernetHeaderView.headerLength
        pool = .allocate(byteCount: slotSize &* totalSlots, alignment: 16)
        freeHead = 0
        for i in 0..<totalSlots { slotNext[i] = i &+ 1 < totalSlots ? Int32(i &+ 1) : -1 }
        return dropped
    }

    enum Lookup {
        case resolved(MACAddress)
        /// Resolved, but old: the caller should send a (re-)request now.
        case resolvedNeedsProbe(MACAddress)
        case unresolved
    }

    /// The MAC for `ip` if known. Moves reachable entries past their lifetime to stale and starts
    /// a probe round on first use of a stale entry.
    @inline(__always)
    func lookup(_ ip: IPv4Address, now: Instant) -> Lookup {
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

    private func startProbe(_ ip: IPv4Address, now: Instant) -> Lookup {
        guard var e = entries[ip] else { return .unresolved }
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
    func enqueue(_ ip: IPv4Address, frame: UnsafeRawPointer, length: Int, now: Instant) -> (queued: Bool, isNew: Bool) {
        var isNew = false
        if entries[ip] == nil {
            if entries.count >= maxEntries && !evictOne() { return (false, false) }
            entries[ip] = Entry(state: .incomplete, tries: 1, nextTry: now + retryInterval, probing: true)
            probing.append(ip)
            isNew = true
        }
        guard var e = entries[ip], e.state == .incomplete, length <= slotSize,
              e.queueCount < perNeighborQueue, freeHead >= 0 else {
            return (false, isNew)
        }
        let slot = freeHead
        freeHead = slotNext[Int(slot)]
        slotNext[Int(slot)] = -1
        (pool + Int(slot) &* slotSize).copyMemory(from: frame, byteCount: length)
        slotLength[Int(slot)] = length
        if e.queueTail >= 0 { slotNext[Int(e.queueTail)] = slot } else { e.queueHead = slot }
        e.queueTail = slot
        e.queueCount &+= 1
        entries[ip] = e
        return (true, isNew)
    }

    /// Evicts the least recently confirmed entry that has nothing queued. False if none.
    private func evictOne() -> Bool {
        var victim: IPv4Address?
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
    /// Calls `flush` with each queued frame (destination MAC already written) and frees them.
    func update(_ ip: IPv4Address, mac: MACAddress, now: Instant, create: Bool,
                flush: (UnsafeMutableRawBufferPointer) -> Void) {
        if entries[ip] == nil {
            guard create else { return }
            if entries.count >= maxEntries && !evictOne() { return }
            entries[ip] = Entry(state: .reachable)
        }
        guard var e = entries[ip] else { return }
        e.mac = mac
        e.state = .reachable
        e.confirmed = now
        e.tries = 0
        if e.probing { e.probing = false; removeProbing(ip) }
        var slot = e.queueHead
        e.queueHead = -1; e.queueTail = -1; e.queueCount = 0
        entries[ip] = e
        while slot >= 0 {
            let p = pool + Int(slot) &* slotSize
            mac.store(to: p)
            flush(UnsafeMutableRawBufferPointer(start: p, count: slotLength[Int(slot)]))
            let next = slotNext[Int(slot)]
            slotNext[Int(slot)] = freeHead
            freeHead = slot
            slot = next
        }
    }

    private func removeProbing(_ ip: IPv4Address) {
        if let i = probing.firstIndex(of: ip) { probing.swapAt(i, probing.count &- 1); probing.removeLast() }
    }

    /// Forgets `ip`, returning how many queued frames were dropped.
    @discardableResult
    func remove(_ ip: IPv4Address) -> Int {
        guard let e = entries.removeValue(forKey: ip) else { return 0 }
        if e.probing { removeProbing(ip) }
        var slot = e.queueHead
        while slot >= 0 {
            let next = slotNext[Int(slot)]
            slotNext[Int(slot)] = freeHead
            freeHead = slot
            slot = next
        }
        return e.queueCount
    }

    enum TimerAction { case sendRequest(IPv4Address, unicast: MACAddress?), gaveUp(IPv4Address, droppedFrames: Int) }

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
    func entry(_ ip: IPv4Address) -> Entry? { entries[ip] }
}
