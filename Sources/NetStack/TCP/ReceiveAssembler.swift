/// The out-of-order part of the receive sequence space (RFC 9293 §3.10.7.4, "segment text"):
/// which ranges above RCV.NXT have arrived, and which of them the next ACK reports as SACK
/// blocks (RFC 2018). Only ranges: the connection writes out-of-order bytes straight into the
/// receive ring at their offset, so nothing is copied twice and this holds no data.
///
/// Ranges are sorted, disjoint and never touching (touching ones merge). At most `capacity` are
/// kept: a segment that would open one more hole is refused and the peer sends it again, which
/// bounds the work per segment (a linear scan of a few ranges) and the memory per connection.
struct ReceiveAssembler {
    typealias Range = (start: SeqNumber, end: SeqNumber)
    private(set) var ranges: [Range] = []
    /// Start of the most recent arrival: its range leads the SACK blocks (RFC 2018 §4).
    private(set) var latest = SeqNumber(0)
    let capacity: Int

    /// Holds no memory until the first hole (most connections never see one); then room for
    /// all `capacity` ranges at once, so a loss episode allocates once.
    init(capacity: Int) {
        self.capacity = max(capacity, 1)
    }

    var isEmpty: Bool { ranges.isEmpty }
    /// End of the highest range (how far parked bytes reach).
    var highestEnd: SeqNumber? { ranges.last?.end }
    var count: Int { ranges.count }

    /// Records that [start, end) arrived. Returns false, recording nothing, when it would need
    /// a new range and the list is full: the caller then drops the data.
    @discardableResult
    mutating func add(_ start: SeqNumber, _ end: SeqNumber) -> Bool {
        guard start < end else { return true }
        var i = 0
        while i < ranges.count && ranges[i].end < start { i &+= 1 }
        // Now ranges[i].end >= start (or i == count).
        if i == ranges.count || end < ranges[i].start {
            guard ranges.count < capacity else { return false }
            if ranges.capacity < capacity { ranges.reserveCapacity(capacity) }
            ranges.insert((start, end), at: i)
            latest = start
            return true
        }
        // Overlaps or touches ranges[i]: merge, then swallow the following ranges it reaches.
        if start < ranges[i].start { ranges[i].start = start }
        if ranges[i].end < end { ranges[i].end = end }
        while i &+ 1 < ranges.count && !(ranges[i].end < ranges[i &+ 1].start) {
            if ranges[i].end < ranges[i &+ 1].end { ranges[i].end = ranges[i &+ 1].end }
            ranges.remove(at: i &+ 1)
        }
        latest = start
        return true
    }

    /// In-order data now reaches `next` (RCV.NXT): drops the ranges it reaches and returns the
    /// new end of contiguous data (`next` itself when no range starts at or before it).
    mutating func advance(from next: SeqNumber) -> SeqNumber {
        var n = next
        var k = 0
        while k < ranges.count, !(n < ranges[k].start) {
            if n < ranges[k].end { n = ranges[k].end }
            k &+= 1
        }
        if k > 0 { ranges.removeFirst(k) }
        return n
    }

    /// How many SACK blocks the next ACK carries, at most `max`.
    func blockCount(max m: Int) -> Int { min(ranges.count, m) }

    /// SACK blocks for the next ACK: the range holding the latest arrival first (RFC 2018 §4),
    /// then the others from the highest down (the most recent holes are the likeliest news).
    func sackBlocks(max m: Int) -> TCPSackBlocks {
        var blocks = TCPSackBlocks()
        guard !ranges.isEmpty, m > 0 else { return blocks }
        var first = -1
        for i in 0..<ranges.count where !(latest < ranges[i].start) && latest < ranges[i].end { first = i }
        if first >= 0 { blocks.append(start: ranges[first].start, end: ranges[first].end) }
        var i = ranges.count &- 1
        while i >= 0 && blocks.count < min(m, TCPSackBlocks.capacity) {
            if i != first { blocks.append(start: ranges[i].start, end: ranges[i].end) }
            i &-= 1
        }
        return blocks
    }

    /// Forgets every range and gives the memory back (the connection receives no more).
    mutating func releaseStorage() {
        ranges = []
    }
}
