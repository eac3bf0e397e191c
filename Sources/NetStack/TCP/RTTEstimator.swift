/// Round-trip time estimation and the retransmission timeout (RFC 6298), with Karn's rule (no
/// sample from a segment sent more than once, §3) and the smallest RTT seen (the base of RACK's
/// reordering window, RFC 8985 §6.2). Times are stack-clock nanoseconds.
///
/// Samples come from three sources, best first, and the connection picks one per ACK: the send
/// time of the newest segment the ACK covers that was sent once (`sample`, full clock
/// resolution); an echoed timestamp (`timestampSample`, RFC 7323 §4.1, 1 ms ticks); or the one
/// segment timed when neither is available (`startTiming` / `timedSegmentAcked`). An echoed
/// timestamp is the peer's word, so a sample from it is bounded like Linux bounds it.
struct RTTEstimator {
    private(set) var srtt: UInt64 = 0
    private(set) var rttvar: UInt64 = 0
    private(set) var hasSample = false
    /// srtt + max(G, 4 rttvar) clamped to [minRTO, maxRTO], before backoff.
    private(set) var rto: Duration
    /// Timeouts in a row; each doubles the RTO (RFC 6298 §5.5) until an ACK for new data.
    var backoff = 0
    /// Smallest RTT of a segment sent once; `.max` until the first.
    private(set) var minRTT: UInt64 = .max
    /// The segment being timed: its end and send time (only without timestamps).
    private(set) var timed: (end: SeqNumber, at: Instant)?
    /// The bounds (per socket: TCP_RTO_MIN_US, TCP_RTO_MAX_MS); the next sample applies them.
    var minRTO: Duration
    var maxRTO: Duration

    /// Clock granularity G: timestamps tick in milliseconds.
    static let granularity: UInt64 = 1_000_000
    /// Echoed timestamps older than this give no sample (Linux's tcp_rtt_tsopt_us bound): a
    /// bogus or ancient TSecr would otherwise set SRTT to days and the RTO to its maximum.
    static let maxTimestampSampleMs: UInt32 = 60_000

    init(initialRTO: Duration, minRTO: Duration, maxRTO: Duration) {
        rto = initialRTO
        self.minRTO = minRTO
        self.maxRTO = maxRTO
    }

    /// The RTO with backoff applied, at most `maxRTO`.
    var effectiveRTO: Duration {
        var ns = rto.nanoseconds
        for _ in 0..<min(backoff, 20) { ns = ns &* 2; if ns >= maxRTO.nanoseconds { break } }
        return Duration(nanoseconds: min(ns, maxRTO.nanoseconds))
    }

    var smoothed: Duration? { hasSample ? Duration(nanoseconds: srtt) : nil }

    /// One measurement (RFC 6298 §2.2/2.3), in nanoseconds.
    mutating func sample(_ r: UInt64) {
        if !hasSample {
            srtt = r
            rttvar = r / 2
            hasSample = true
        } else {
            let delta = srtt > r ? srtt - r : r - srtt
            rttvar = (3 &* rttvar &+ delta) / 4
            srtt = (7 &* srtt &+ r) / 8
        }
        let v = srtt &+ max(Self.granularity, 4 &* rttvar)
        rto = Duration(nanoseconds: min(max(v, minRTO.nanoseconds), maxRTO.nanoseconds))
    }

    /// A sample from an echoed timestamp: `nowTicks` and `echo` are our timestamp clock (ms).
    /// Returns false, taking no sample, when the echo is a minute or more old.
    @discardableResult
    mutating func timestampSample(nowTicks: UInt32, echo: UInt32) -> Bool {
        let r = nowTicks &- echo
        guard r < Self.maxTimestampSampleMs else { return false }
        sample(UInt64(r) &* 1_000_000)
        return true
    }

    /// A segment sent once was delivered `rtt` ns after it was sent (0: within one clock reading).
    mutating func delivered(rtt: UInt64) {
        if rtt > 0 && rtt < minRTT { minRTT = rtt }
    }

    /// Times the segment ending at `end`, sent at `at`, unless one is being timed already.
    mutating func startTiming(end: SeqNumber, at: Instant) {
        if timed == nil { timed = (end, at) }
    }

    /// Karn: a retransmission makes the timed segment's ACK ambiguous.
    mutating func cancelTiming() { timed = nil }

    /// An ACK up to `ack` arrived: samples the timed segment if it covers it.
    @discardableResult
    mutating func timedSegmentAcked(_ ack: SeqNumber, now: Instant) -> Bool {
        guard let t = timed, !(ack < t.end) else { return false }
        let r = (now - t.at).nanoseconds
        sample(r)
        delivered(rtt: r)   // a segment sent once: also a minimum RTT sample (as Linux's handshake)
        timed = nil
        return true
    }
}
