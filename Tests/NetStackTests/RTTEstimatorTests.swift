import Testing
@testable import NetStack

/// RFC 6298 arithmetic, backoff, Karn and the timestamp bound, on the value type alone.
@Suite struct RTTEstimatorTests {
    func make() -> RTTEstimator {
        RTTEstimator(initialRTO: .seconds(1), minRTO: .milliseconds(200), maxRTO: .seconds(60))
    }

    @Test func initialRTOBeforeAnySample() {
        let e = make()
        #expect(!e.hasSample)
        #expect(e.smoothed == nil)
        #expect(e.effectiveRTO == .seconds(1))
    }

    @Test func firstSampleSetsSRTTAndHalfVariance() {
        var e = make()
        e.sample(100_000_000)   // 100 ms
        #expect(e.srtt == 100_000_000)
        #expect(e.rttvar == 50_000_000)
        // RTO = SRTT + 4 RTTVAR = 300 ms (RFC 6298 §2.2).
        #expect(e.rto == .milliseconds(300))
    }

    @Test func laterSamplesSmoothWithOneEighthAndOneQuarter() {
        var e = make()
        e.sample(100_000_000)
        e.sample(200_000_000)
        // RTTVAR = 3/4 * 50 + 1/4 * |100 - 200| = 62.5 ms; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5 ms.
        #expect(e.rttvar == 62_500_000)
        #expect(e.srtt == 112_500_000)
        #expect(e.rto == Duration(nanoseconds: 112_500_000 + 4 * 62_500_000))
    }

    @Test func rtoIsClampedToMinimumAndMaximum() {
        var e = make()
        e.sample(1_000_000)   // 1 ms: 1 + max(G = 1 ms, 2 ms) = 3 ms, below the 200 ms floor
        #expect(e.rto == .milliseconds(200))
        var f = make()
        f.sample(50_000_000_000)   // 50 s: 150 s, above the 60 s ceiling
        #expect(f.rto == .seconds(60))
    }

    @Test func backoffDoublesUpToTheMaximum() {
        var e = make()
        e.sample(100_000_000)
        e.backoff = 1
        #expect(e.effectiveRTO == .milliseconds(600))
        e.backoff = 3
        #expect(e.effectiveRTO == .milliseconds(2400))
        e.backoff = 40
        #expect(e.effectiveRTO == .seconds(60))
    }

    @Test func timedSegmentGivesOneSampleWhenCovered() {
        var e = make()
        let t0 = Instant.milliseconds(1000)
        e.startTiming(end: SeqNumber(5000), at: t0)
        e.startTiming(end: SeqNumber(9000), at: t0 + .milliseconds(5))   // one at a time
        #expect(e.timedSegmentAcked(SeqNumber(4999), now: t0 + .milliseconds(80)) == false)
        #expect(e.timedSegmentAcked(SeqNumber(5000), now: t0 + .milliseconds(80)) == true)
        #expect(e.srtt == 80_000_000)
        #expect(e.timed == nil)
        #expect(e.timedSegmentAcked(SeqNumber(9000), now: t0 + .milliseconds(90)) == false)
    }

    @Test func karnCancelsTheTimedSegment() {
        var e = make()
        e.startTiming(end: SeqNumber(100), at: .milliseconds(10))
        e.cancelTiming()
        #expect(e.timedSegmentAcked(SeqNumber(200), now: .milliseconds(500)) == false)
        #expect(!e.hasSample)
    }

    @Test func timestampSampleIsInMilliseconds() {
        var e = make()
        #expect(e.timestampSample(nowTicks: 1_000_250, echo: 1_000_000) == true)
        #expect(e.srtt == 250_000_000)
        // The tick counter wraps: the difference is taken modulo 2^32.
        var w = make()
        #expect(w.timestampSample(nowTicks: 10, echo: UInt32.max - 9) == true)
        #expect(w.srtt == 20_000_000)
    }

    @Test func implausiblyOldTimestampEchoGivesNoSample() {
        var e = make()
        #expect(e.timestampSample(nowTicks: 1_000_000, echo: 1_000_000 - 60_000) == false)
        #expect(e.timestampSample(nowTicks: 5, echo: 2_000_000_000) == false)   // from the "future": wraps huge
        #expect(!e.hasSample)
        #expect(e.rto == .seconds(1))
        #expect(e.timestampSample(nowTicks: 1_000_000, echo: 1_000_000 - 59_999) == true)
    }

    @Test func minimumRTTIgnoresZeroAndKeepsTheSmallest() {
        var e = make()
        #expect(e.minRTT == .max)
        e.delivered(rtt: 0)
        #expect(e.minRTT == .max)
        e.delivered(rtt: 30_000_000)
        e.delivered(rtt: 50_000_000)
        e.delivered(rtt: 20_000_000)
        #expect(e.minRTT == 20_000_000)
    }
}

/// The same bound on the connection: an RTT taken in SYN-SENT from the SYN-ACK's timestamp echo.
@Suite struct TCPRTTRegressionTests {
    /// A SYN-ACK whose TSecr is days old used to set SRTT from it unbounded (days), pinning the
    /// RTO at its maximum for the life of the connection. Now the echo is ignored and the SYN's
    /// own timing gives the sample.
    @Test func testSynSentBogusTimestampEchoIsIgnored() throws {
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        h.poll()
        let syn = h.sent()
        #expect(syn.count == 1 && syn[0].flags == .syn)
        let ourTS = try #require(syn[0].options.timestamp)
        h.advance(ms: 30)
        // Echo a timestamp about 10 days before the one our SYN carried.
        let bogus = ourTS.value &- 864_000_000
        h.injectTo(syn[0].src, seq: h.peerSeq, ack: syn[0].seq &+ 1, flags: [.syn, .ack],
                   options: Harness.peerOptions(ts: (77, bogus)))
        #expect(h.state(c) == .established)
        let info = try #require(h.layer.info(c))
        #expect(info.srtt == .milliseconds(30))
        #expect(info.rto < .seconds(1))
    }

    @Test func testSynSentTimestampEchoGivesTheSample() throws {
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        h.poll()
        let syn = h.sent()
        let ourTS = try #require(syn.first?.options.timestamp)
        h.advance(ms: 40)
        h.injectTo(syn[0].src, seq: h.peerSeq, ack: syn[0].seq &+ 1, flags: [.syn, .ack],
                   options: Harness.peerOptions(ts: (77, ourTS.value)))
        #expect(h.layer.info(c)?.srtt == .milliseconds(40))
    }
}
