/// When the receive side acknowledges (RFC 9293 §3.8.6.3, RFC 1122 §4.2.3.2, RFC 5681 §4.2), and
/// when freed receive space is worth a window update (receiver SWS avoidance, RFC 9293
/// §3.8.6.2.2). It only decides; the connection sends, and starts the delayed-ACK timer when
/// told to.
///
/// In-order data is acknowledged at once for the first `quickAcks` segments of a connection
/// (slow start then grows fast), and at once when the unacknowledged bytes reach the stretch
/// limit; two full segments' worth is acknowledged at the layer's next `poll`, so an input batch
/// shares one ACK (like Linux with GRO: every ACK written to a TAP costs a syscall plus the
/// kernel's ACK processing, most of a bulk receiver's CPU); less waits for the delayed-ACK timer.
struct AckPolicy {
    /// An ACK goes with the next output, on data or bare.
    var immediate = false
    /// Data arrived that no segment acknowledged yet (the delayed-ACK timer's reason to fire).
    private(set) var pending = false
    /// The ACK for two or more full segments waits for the layer's next `poll`.
    private(set) var atPoll = false
    private(set) var unackedBytes = 0
    /// Segments still acknowledged one by one.
    private(set) var quickAcks: Int
    /// The largest segment payload seen: the peer's effective MSS (Linux's rcv_mss).
    private(set) var mssEstimate = 536
    /// Delayed-ACK ("pingpong") mode that TCP_QUICKACK 0 asks for: no quick ACKs.
    var pingpong = false

    init(quickAcks: Int) { self.quickAcks = quickAcks }

    enum Decision: Equatable {
        /// `immediate` is set: the output that follows carries the ACK.
        case now
        /// First request to ACK at the next poll: the layer must visit the connection then.
        case atPoll
        /// Start the delayed-ACK timer unless it runs.
        case delayed
        /// Already scheduled (at the next poll).
        case scheduled
    }

    /// Unacknowledged bytes after which an ACK goes at once, batch or not.
    func stretchLimit(receiveBuffer: Int) -> Int { max(2 &* mssEstimate, min(64 << 10, receiveBuffer / 8)) }

    /// `n` bytes of in-order data arrived; `segmentSize` > 0: in a super-segment of pieces that
    /// size (the peer's MSS, not `n`, is what the estimate learns).
    mutating func dataArrived(_ n: Int, receiveBuffer: Int, segmentSize: Int = 0) -> Decision {
        pending = true
        unackedBytes &+= n
        let piece = segmentSize > 0 ? min(segmentSize, n) : n
        if piece > mssEstimate { mssEstimate = piece }
        if quickAcks > 0 && !pingpong {
            quickAcks &-= 1
            immediate = true
            return .now
        }
        if unackedBytes >= stretchLimit(receiveBuffer: receiveBuffer) {
            immediate = true
            return .now
        }
        if unackedBytes >= 2 &* mssEstimate {
            if atPoll { return .scheduled }
            atPoll = true
            return .atPoll
        }
        return .delayed
    }

    /// A segment carrying an ACK of everything received went out.
    mutating func ackSent() {
        immediate = false
        pending = false
        atPoll = false
        unackedBytes = 0
    }

    /// TCP_QUICKACK 1: whatever is owed goes with the next output. Returns whether an ACK is owed.
    mutating func quickAckRequested() -> Bool {
        pingpong = false
        if pending { immediate = true }
        return pending
    }

    /// The delayed-ACK timer fired.
    mutating func delayedAckExpired() { if pending { immediate = true } }

    /// The layer's poll came round after an input batch.
    mutating func pollReached() { if atPoll { immediate = true } }

    /// After the app freed receive space: is announcing it worth a segment? Only when the
    /// window grows by at least min(MSS, buffer/2) and at least doubles (`advertised` is what
    /// the peer may still send, `space` what it could now).
    func windowUpdateNeeded(advertised: Int, space: Int, receiveBuffer: Int) -> Bool {
        let old = max(advertised, 0)
        let step = min(mssEstimate, receiveBuffer / 2)
        return space - old >= step && space >= 2 &* old
    }
}
