/// Loss detection and recovery for the send side: the SACK scoreboard over the segments in
/// flight with RFC 6675's accounting (SACKed, lost, pipe), RACK-TLP (RFC 8985: a segment is lost
/// once something sent after it was delivered and a reordering window has passed; a tail loss
/// probe makes the peer reveal losses at the end of a flight), NewReno's three duplicate ACKs and
/// partial ACKs (RFC 5681, RFC 6582) for peers without SACK, and the state of a recovery episode.
///
/// It decides what is lost and what the next output may resend; the connection transmits, moves
/// the congestion window (`CongestionController`) and keeps the timers. Time comes in as `now`;
/// RACK reads the RTT estimator, and the calls that see deliveries return the smallest RTT
/// they measured for it (the estimator is passed by value, never `inout`: see TCPConnection on
/// exclusivity checks).
struct LossRecovery {
    /// Segments sent and not cumulatively acknowledged, with send times and marks.
    private(set) var queue = TxQueue()
    /// Bytes of `queue` records SACKed, and marked lost but not yet resent.
    private(set) var sackedBytes = 0
    private(set) var sackedSegments = 0
    private(set) var lostBytes = 0

    /// RACK: send time and end of the most recently sent segment known delivered, the RTT it
    /// measured, and whether the path was seen to reorder.
    private(set) var rackXmit: UInt64 = 0
    private(set) var rackEnd = SeqNumber(0)
    private(set) var rackRTT: UInt64 = 0
    private(set) var reorderingSeen = false

    /// Fast recovery (RFC 6675 / RFC 6582) until SND.UNA passes `recover`.
    private(set) var inRecovery = false
    private(set) var recover = SeqNumber(0)
    private(set) var dupAcks = 0
    /// Set by a retransmission timeout until everything sent before it is acknowledged: the
    /// window was already cut, losses found meanwhile must not cut it again (RFC 6582 §4.1).
    private(set) var rtoRecovery = false
    /// Entering recovery resends the first lost segment whatever the pipe (RFC 6675 §5 step 4.2).
    var forceRetransmit = false

    /// Tail loss probes sent since new data was last acknowledged.
    private(set) var probes = 0
    /// Segments the next output may send beyond the congestion window (a loss probe's new data).
    var probeQuota = 0

    /// Loss probes in a row. RFC 8985 §7 sends one probe per tail and then waits for the RTO;
    /// we send up to five, each after twice the previous probe timeout, because a lost probe
    /// (or a retransmission lost during recovery, which only a later delivery reveals) would
    /// otherwise cost a whole RTO.
    static let maxLossProbes = 5
    /// Worst-case delayed ACK assumed for a lone segment (Linux acks within 40 ms, usually at once).
    static let probeDelayedAck: UInt64 = 5_000_000

    var isEmpty: Bool { queue.isEmpty }

    /// Whether the records cover exactly [from, to): every byte in flight is tracked.
    func covers(_ from: SeqNumber, _ to: SeqNumber) -> Bool {
        guard let f = queue.first, let l = queue.last else { return false }
        return f.start == from && l.end == to
    }

    // MARK: - Sending

    /// Records a segment [start, end) just sent at SND.NXT (new data, or data resent after a
    /// go-back-N). Only a queue contiguous from SND.UNA is useful: anything else (which the
    /// go-back-N paths prevent) is left untracked, and the RTO covers it.
    @inline(__always)
    mutating func recordSent(_ start: SeqNumber, _ end: SeqNumber, retransmission: Bool, sndUna: SeqNumber,
                             now: Instant) {
        if let l = queue.last {
            guard l.end == start else { return }
        } else {
            guard start == sndUna else { return }
        }
        queue.append(TxRecord(start: start, end: end, sentAt: now.nanoseconds,
                              flags: retransmission ? TxRecord.retransmitted : 0))
    }

    /// Forgets every record: the connection resends from SND.UNA (a closed window reopened, or
    /// an RTO found the queue unusable).
    mutating func forgetQueue() {
        queue.removeAll()
        sackedBytes = 0
        sackedSegments = 0
        lostBytes = 0
    }

    /// Forgets the queue and gives its memory back (the connection sends no more).
    mutating func releaseStorage() {
        forgetQueue()
        queue.releaseStorage()
    }

    /// Bytes in the network (RFC 6675 pipe): sent, not SACKed, not deemed lost unless resent.
    /// Without SACK, each duplicate ACK in recovery stands for one segment that left (NewReno's
    /// window inflation, RFC 6582).
    func pipe(flight: Int, sackOK: Bool, mss: Int) -> Int {
        var sacked = sackedBytes
        if inRecovery && !sackOK { sacked = min(dupAcks &* mss, flight) }
        return max(flight &- sacked &- lostBytes, 0)
    }

    /// Index of the first record at or after `from` marked lost, if any.
    func nextLost(from: Int) -> Int? {
        guard lostBytes > 0 else { return nil }
        var i = from
        while i < queue.count {
            if queue[i].isLost { return i }
            i &+= 1
        }
        return nil
    }

    /// The record at `i` is being resent now: it is in flight again, no longer lost.
    mutating func resend(at i: Int, now: Instant) -> TxRecord {
        var r = queue[i]
        if r.isLost { lostBytes &-= r.length }
        r.sentAt = now.nanoseconds
        r.flags = (r.flags | TxRecord.retransmitted) & ~TxRecord.lost
        queue[i] = r
        return r
    }

    // MARK: - ACK processing

    /// Cumulative ACK: drops the records below `sndUna` and RACK-updates from the delivered
    /// ones. Returns the send time of the newest one that was sent once and not SACKed before
    /// (an RTT sample, or 0), and the minimum RTT updated with the deliveries (`minRTT` is the
    /// estimator's).
    mutating func cumulativeAck(sndUna: SeqNumber, prevRackEnd: SeqNumber, now: Instant,
                                minRTT: UInt64) -> (newest: UInt64, minRTT: UInt64) {
        var newest: UInt64 = 0
        var minRTT = minRTT
        while var r = queue.first, r.start < sndUna {
            if !(sndUna < r.end) {
                queue.removeFirst()
                if r.isSacked {
                    sackedBytes &-= r.length
                    sackedSegments &-= 1
                } else {
                    if r.isLost { lostBytes &-= r.length }
                    delivered(r, prevRackEnd: prevRackEnd, now: now, minRTT: &minRTT)
                    if !r.isRetransmitted && r.sentAt > newest { newest = r.sentAt }
                }
                continue
            }
            // The ACK ends inside this record (odd peer, or resegmented data): trim it.
            let cut = sndUna - r.start
            if r.isSacked { sackedBytes &-= cut } else if r.isLost { lostBytes &-= cut }
            r.start = sndUna
            queue[0] = r
            break
        }
        // Nothing tracked is left: the counters must agree.
        if queue.isEmpty { forgetQueue() }
        return (newest, minRTT)
    }

    /// SACK blocks from an ACK (RFC 2018): marks the whole records they cover. D-SACKs, blocks
    /// below SND.UNA or beyond SND.MAX, and empty ones are ignored. Returns the minimum RTT
    /// updated with the deliveries, like `cumulativeAck`.
    mutating func sackReceived(_ blocks: TCPSackBlocks, sndUna: SeqNumber, sndMax: SeqNumber,
                               prevRackEnd: SeqNumber, now: Instant, minRTT: UInt64) -> UInt64 {
        var minRTT = minRTT
        for b in 0..<blocks.count {
            let (s, e) = blocks[b]
            if !(sndUna < e) || sndMax < e || !(s < e) { continue }
            guard var i = queue.index(containing: SeqNumber.max(s, sndUna)) else { continue }
            // Only whole records count: the peer SACKs the segments it got.
            if queue[i].start < s { i &+= 1 }
            while i < queue.count {
                var r = queue[i]
                if e < r.end { break }
                if !r.isSacked {
                    if r.isLost { lostBytes &-= r.length }
                    r.flags = (r.flags | TxRecord.sacked) & ~TxRecord.lost
                    queue[i] = r
                    sackedBytes &+= r.length
                    sackedSegments &+= 1
                    delivered(r, prevRackEnd: prevRackEnd, now: now, minRTT: &minRTT)
                }
                i &+= 1
            }
        }
        return minRTT
    }

    /// RACK_update (RFC 8985 §6.2 step 2): remember the most recently sent delivered segment.
    private mutating func delivered(_ r: TxRecord, prevRackEnd: SeqNumber, now: Instant, minRTT: inout UInt64) {
        let sample = now.nanoseconds &- r.sentAt
        // A retransmission acknowledged sooner than the path can answer was the original's ACK.
        if r.isRetransmitted && sample < minRTT { return }
        if !r.isRetransmitted {
            // Zero means sent and acknowledged within one input batch (one clock reading).
            if sample > 0 && sample < minRTT { minRTT = sample }
            // Sent once, delivered after something sent later: the path reorders.
            if r.end < prevRackEnd { reorderingSeen = true }
        }
        rackRTT = sample
        if r.sentAt > rackXmit || (r.sentAt == rackXmit && rackEnd < r.end) {
            rackXmit = r.sentAt
            rackEnd = r.end
        }
    }

    /// New data acknowledged: the end of duplicate ACKs and probes, and maybe of recovery.
    enum AckProgress { case notRecovering, recoveryEnded, partialAck }

    mutating func newDataAcked(_ ack: SeqNumber, sackOK: Bool) -> AckProgress {
        dupAcks = 0
        probes = 0
        if rtoRecovery && !(ack < recover) { rtoRecovery = false }
        guard inRecovery else { return .notRecovering }
        if !(ack < recover) {
            inRecovery = false
            forceRetransmit = false
            return .recoveryEnded
        }
        // Partial ACK (RFC 6582 §3.2): without SACK the next hole is lost too.
        if !sackOK { markHeadLost() }
        return .partialAck
    }

    /// A duplicate ACK. Without SACK (or with segments RACK cannot see), three of them mean the
    /// first segment is lost (RFC 5681 §3.2): returns true when recovery must start.
    mutating func duplicateAck(sackOK: Bool) -> Bool {
        dupAcks &+= 1
        guard dupAcks == 3, !inRecovery, !rtoRecovery, !sackOK || sackedSegments == 0 else { return false }
        markHeadLost()
        return true
    }

    /// NewReno-style loss: the first unacknowledged segment.
    private mutating func markHeadLost() {
        guard var r = queue.first, !r.isSacked, !r.isLost else { return }
        r.flags |= TxRecord.lost
        queue[0] = r
        lostBytes &+= r.length
    }

    /// Starts fast recovery; the caller cuts the congestion window.
    mutating func enterRecovery(sndMax: SeqNumber) {
        inRecovery = true
        recover = sndMax
        forceRetransmit = true
    }

    // MARK: - RACK

    /// Reordering window (RFC 8985 §6.2 step 4): none once the loss is certain, else a quarter
    /// of the minimum RTT (a whole one once the path was seen reordering), at most SRTT. Usually
    /// the next ACK, not the timer, finds the window elapsed.
    func reorderWindow(rtt: RTTEstimator) -> UInt64 {
        if !reorderingSeen && (inRecovery || rtoRecovery || sackedSegments >= 3) { return 0 }
        let m = rtt.minRTT == .max ? rtt.srtt : rtt.minRTT
        return min(reorderingSeen ? m : m / 4, rtt.srtt)
    }

    /// RACK_detect_loss (RFC 8985 §6.2 step 5): a segment sent before the newest delivered one is
    /// lost once it has had an RTT plus the reordering window to arrive. Returns when to look
    /// again (the RACK timer, nil when nothing is waiting) and whether recovery must start.
    mutating func detectLosses(now: Instant, rtt: RTTEstimator) -> (timer: Instant?, enterRecovery: Bool) {
        // Steady state without loss: the head was sent after everything delivered, so the scan
        // stops at once.
        guard rackXmit > 0 else { return (nil, false) }
        let reo = reorderWindow(rtt: rtt)
        var timeout: UInt64 = .max
        var marked = false
        var i = 0
        while i < queue.count {
            var r = queue[i]
            i &+= 1
            if r.isSacked || r.isLost { continue }
            // Same instant: originals go in sequence order; a resend cannot be judged yet.
            let before = r.sentAt < rackXmit || (r.sentAt == rackXmit && r.end < rackEnd && !r.isRetransmitted)
            if !before {
                // Originals are in send order: none further on was sent earlier.
                if r.isRetransmitted { continue } else { break }
            }
            let deadline = r.sentAt &+ rackRTT &+ reo
            if deadline <= now.nanoseconds {
                r.flags |= TxRecord.lost
                queue[i &- 1] = r
                lostBytes &+= r.length
                marked = true
            } else if deadline < timeout {
                timeout = deadline
            }
        }
        return (timeout == .max ? nil : Instant(nanoseconds: timeout), marked && !inRecovery && !rtoRecovery)
    }

    // MARK: - Timeouts and probes

    /// A retransmission timeout (RFC 8985 §6.3, RFC 6298 §5.4): recovery restarts from the
    /// timeout, and everything not SACKed is lost (resent as the window allows; SACKed segments
    /// are not). `tracked` says whether the queue covers exactly [SND.UNA, SND.MAX); when it
    /// does not, the caller goes back N instead. A second timeout in a row (`backoff` > 0) may
    /// mean the peer reneged on its SACKs (RFC 2018 §8): then everything is resent.
    mutating func retransmissionTimeout(sndMax: SeqNumber, tracked: Bool, backoff: Int) {
        inRecovery = false
        dupAcks = 0
        recover = sndMax
        rtoRecovery = true
        forceRetransmit = false
        probes = 0
        guard tracked else { return }
        let forgetSacks = backoff > 0
        lostBytes = 0
        for i in 0..<queue.count {
            var r = queue[i]
            if forgetSacks { r.flags &= ~TxRecord.sacked }
            if !r.isSacked {
                r.flags |= TxRecord.lost
                lostBytes &+= r.length
            }
            queue[i] = r
        }
        if forgetSacks { sackedBytes = 0; sackedSegments = 0 }
    }

    /// Probe timeout (RFC 8985 §7.2): two RTTs, plus room for the peer's delayed ACK when a
    /// single segment is out, doubled for each probe already sent; nil when the RTO (at `rto`,
    /// running or not yet) would come first anyway. `canProbe` is the connection's part: SACK
    /// on, data outstanding, the window open and nothing rewound (SND.NXT = SND.MAX). Unlike
    /// RFC 8985 it also runs during recovery, once nothing is waiting to be resent: a lost
    /// retransmission is only seen when something sent after it is delivered, and this is what
    /// gets it delivered.
    func probeTimeout(now: Instant, canProbe: Bool, rtt: RTTEstimator, rtoDeadline: Instant?) -> Instant? {
        guard canProbe, probes < Self.maxLossProbes, rtt.hasSample, !queue.isEmpty else { return nil }
        let base = 2 &* rtt.srtt &+ (queue.count == 1 ? Self.probeDelayedAck : 200_000)
        let pto = base << UInt64(probes)
        if pto >= rtt.effectiveRTO.nanoseconds { return nil }
        if let r = rtoDeadline, r.nanoseconds <= now.nanoseconds &+ pto { return nil }
        return now + Duration(nanoseconds: pto)
    }

    /// The probe timer fired (the connection checked it may probe): the next output resends the
    /// first segment waiting to be resent if the window holds it back, else sends one new
    /// segment beyond cwnd, else (see `takeProbeSegment`) the highest segment not SACKed.
    mutating func probeFired() {
        guard probes < Self.maxLossProbes else { return }
        probes &+= 1
        if lostBytes > 0 { forceRetransmit = true } else { probeQuota = 1 }
    }

    /// The highest record not SACKed, marked as resent now, to go out as a probe when there is
    /// no new data to send; nil when everything is SACKed.
    mutating func takeProbeSegment(now: Instant) -> TxRecord? {
        var i = queue.count &- 1
        while i >= 0 && queue[i].isSacked { i &-= 1 }
        guard i >= 0 else { return nil }
        return resend(at: i, now: now)
    }
}
