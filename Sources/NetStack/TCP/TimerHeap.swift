/// A binary min-heap of (deadline, slot, generation) used by `TCPLayer.poll` so timer work is
/// proportional to what is due, not to the number of connections. Entries are never removed
/// early: a connection whose deadline moved just ignores (or re-arms from) the stale entry, which
/// keeps the hot path (restarting the RTO on every ACK) free of heap operations.
struct TimerHeap {
    struct Entry {
        var deadline: UInt64
        var slot: UInt32
        var generation: UInt32
    }
    private(set) var entries: [Entry] = []

    init() { entries.reserveCapacity(1024) }

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }
    var top: Entry? { entries.first }

    mutating func push(_ e: Entry) {
        entries.append(e)
        var i = entries.count &- 1
        while i > 0 {
            let parent = (i &- 1) >> 1
            if entries[parent].deadline <= entries[i].deadline { break }
            entries.swapAt(parent, i)
            i = parent
        }
    }

    @discardableResult
    mutating func pop() -> Entry? {
        guard let first = entries.first else { return nil }
        let last = entries.removeLast()
        if entries.isEmpty { return first }
        entries[0] = last
        var i = 0
        let n = entries.count
        while true {
            let l = 2 &* i &+ 1
            if l >= n { break }
            let r = l &+ 1
            let m = (r < n && entries[r].deadline < entries[l].deadline) ? r : l
            if entries[i].deadline <= entries[m].deadline { break }
            entries.swapAt(i, m)
            i = m
        }
        return first
    }
}
