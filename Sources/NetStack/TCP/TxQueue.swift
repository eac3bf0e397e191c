/// One segment sent and not yet cumulatively acknowledged. The bytes stay in the send ring;
/// this only remembers the segment's boundaries and history for loss detection.
struct TxRecord {
    var start: SeqNumber
    var end: SeqNumber
    /// When it was last (re)transmitted, stack-clock nanoseconds.
    var sentAt: UInt64
    var flags: UInt8

    static let sacked: UInt8 = 1
    static let lost: UInt8 = 2
    static let retransmitted: UInt8 = 4

    @inline(__always) var length: Int { end - start }
    @inline(__always) var isSacked: Bool { flags & Self.sacked != 0 }
    @inline(__always) var isLost: Bool { flags & Self.lost != 0 }
    @inline(__always) var isRetransmitted: Bool { flags & Self.retransmitted != 0 }
}

/// The sent-but-unacknowledged segments of a connection in sequence order, contiguous, covering
/// [SND.UNA, end) (RACK, RFC 8985, needs each segment's transmit time). A ring that grows by
/// doubling: no allocation once it has reached the connection's largest flight.
struct TxQueue {
    private var buf: [TxRecord] = []
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    @inline(__always) subscript(i: Int) -> TxRecord {
        get { buf[(head &+ i) & (buf.count &- 1)] }
        set { buf[(head &+ i) & (buf.count &- 1)] = newValue }
    }

    var first: TxRecord? { count > 0 ? self[0] : nil }
    var last: TxRecord? { count > 0 ? self[count &- 1] : nil }

    mutating func append(_ r: TxRecord) {
        if count == buf.count { grow() }
        buf[(head &+ count) & (buf.count &- 1)] = r
        count &+= 1
    }

    mutating func removeFirst() {
        head = (head &+ 1) & (buf.count &- 1)
        count &-= 1
    }

    mutating func removeAll() {
        head = 0
        count = 0
    }

    /// Empties the queue and gives its memory back (a connection that sends no more).
    mutating func releaseStorage() {
        buf = []
        head = 0
        count = 0
    }

    /// Index of the record holding `seq` (records are contiguous and sorted), or nil.
    func index(containing seq: SeqNumber) -> Int? {
        guard count > 0, !(seq < self[0].start), seq < self[count &- 1].end else { return nil }
        var lo = 0, hi = count &- 1
        while lo < hi {
            let mid = (lo &+ hi &+ 1) >> 1
            if seq < self[mid].start { hi = mid &- 1 } else { lo = mid }
        }
        return lo
    }

    private mutating func grow() {
        let newCap = max(16, buf.count &* 2)
        var n = [TxRecord](repeating: TxRecord(start: SeqNumber(0), end: SeqNumber(0), sentAt: 0, flags: 0),
                           count: newCap)
        for i in 0..<count { n[i] = self[i] }
        buf = n
        head = 0
    }
}
