import Testing
@testable import NetStack

/// The scoreboard and RACK-TLP on the value type alone: segments of 1000 bytes from sequence
/// 1000, times in milliseconds on a virtual clock.
@Suite struct LossRecoveryTests {
    func s(_ v: UInt32) -> SeqNumber { SeqNumber(v) }
    func ms(_ v: UInt64) -> Instant { .milliseconds(v) }
    func rtt(srttMs: UInt64 = 0) -> RTTEstimator {
        var e = RTTEstimator(initialRTO: .seconds(1), minRTO: .milliseconds(200), maxRTO: .seconds(60))
        if srttMs > 0 { e.sample(srttMs * 1_000_000) }
        return e
    }
    /// `n` back-to-back segments [1000 + 1000 i, 2000 + 1000 i), the i-th sent at `at[i]` ms.
    func flight(_ at: [UInt64]) -> LossRecovery {
        var r = LossRecovery()
        for (i, t) in at.enumerated() {
            let start = UInt32(1000 + 1000 * i)
            r.recordSent(s(start), s(start + 1000), retransmission: false, sndUna: s(1000), now: ms(t))
        }
        return r
    }
    func sack(_ blocks: [(UInt32, UInt32)]) -> TCPSackBlocks {
        var b = TCPSackBlocks()
        for (x, y) in blocks { b.append(start: SeqNumber(x), end: SeqNumber(y)) }
        return b
    }

    @Test func onlyAQueueContiguousFromSndUnaIsRecorded() {
        var r = LossRecovery()
        r.recordSent(s(2000), s(3000), retransmission: false, sndUna: s(1000), now: ms(1))   // not at SND.UNA
        #expect(r.isEmpty)
        r.recordSent(s(1000), s(2000), retransmission: false, sndUna: s(1000), now: ms(1))
        r.recordSent(s(2500), s(3000), retransmission: false, sndUna: s(1000), now: ms(1))   // gap
        r.recordSent(s(2000), s(3000), retransmission: false, sndUna: s(1000), now: ms(1))
        #expect(r.queue.count == 2)
        #expect(r.covers(s(1000), s(3000)))
        #expect(!r.covers(s(1000), s(4000)))
    }

    @Test func cumulativeAckPopsWholeRecordsTrimsAPartOneAndSamples() {
        var r = flight([10, 20, 30])
        let (newest, minRTT) = r.cumulativeAck(sndUna: s(3500), prevRackEnd: s(0), now: ms(100), minRTT: .max)
        #expect(newest == ms(20).nanoseconds)            // the newest fully acknowledged one
        #expect(minRTT == 80_000_000)                    // 100 - 20
        #expect(r.queue.count == 1)
        #expect(r.queue[0].start == s(3500) && r.queue[0].end == s(4000))
        #expect(r.rackXmit == ms(20).nanoseconds && r.rackEnd == s(3000))
        _ = r.cumulativeAck(sndUna: s(4000), prevRackEnd: s(3000), now: ms(110), minRTT: minRTT)
        #expect(r.isEmpty && r.sackedBytes == 0 && r.lostBytes == 0)
    }

    @Test func retransmittedSegmentsGiveNoRTTSample() {
        var r = LossRecovery()
        r.recordSent(s(1000), s(2000), retransmission: true, sndUna: s(1000), now: ms(10))
        let (newest, minRTT) = r.cumulativeAck(sndUna: s(2000), prevRackEnd: s(0), now: ms(50), minRTT: .max)
        #expect(newest == 0)   // Karn
        #expect(minRTT == .max)
    }

    @Test func sackMarksWholeRecordsOnly() {
        var r = flight([10, 10, 10, 10])
        let e = rtt(srttMs: 50)
        // [2000, 3500): record 2 whole, record 3 only half; a D-SACK below SND.UNA; beyond SND.MAX.
        let m = r.sackReceived(sack([(2000, 3500), (500, 900), (5000, 6000)]), sndUna: s(1000), sndMax: s(5000),
                               prevRackEnd: s(0), now: ms(60), minRTT: e.minRTT)
        #expect(r.sackedSegments == 1 && r.sackedBytes == 1000)
        #expect(r.queue[1].isSacked && !r.queue[2].isSacked)
        #expect(m == 50_000_000)
        // The same block again counts nothing twice.
        _ = r.sackReceived(sack([(2000, 3000)]), sndUna: s(1000), sndMax: s(5000), prevRackEnd: s(3000),
                           now: ms(61), minRTT: m)
        #expect(r.sackedSegments == 1 && r.sackedBytes == 1000)
        #expect(r.pipe(flight: 4000, sackOK: true, mss: 1000) == 3000)
    }

    @Test func rackMarksLossAfterTheReorderingWindow() {
        // Four segments sent 1 ms apart; the last is SACKed at 60 ms: the three before it were
        // sent earlier and are lost once RTT + window has passed for each.
        var r = flight([10, 11, 12, 13])
        var e = rtt(srttMs: 47)
        let m = r.sackReceived(sack([(4000, 5000)]), sndUna: s(1000), sndMax: s(5000), prevRackEnd: s(0),
                               now: ms(60), minRTT: e.minRTT)
        e.delivered(rtt: m)
        #expect(r.rackRTT == 47_000_000)
        // Window = min RTT / 4 = 11.75 ms: segment 1's deadline is 10 + 47 + 11.75 ms.
        #expect(r.reorderWindow(rtt: e) == 11_750_000)
        var d = r.detectLosses(now: ms(60), rtt: e)
        #expect(r.lostBytes == 0 && !d.enterRecovery)
        #expect(d.timer == Instant(nanoseconds: ms(10).nanoseconds + 47_000_000 + 11_750_000))
        d = r.detectLosses(now: ms(70), rtt: e)
        #expect(r.lostBytes == 2000)   // sent at 10 and 11 ms
        #expect(d.enterRecovery)
        #expect(d.timer == Instant(nanoseconds: ms(12).nanoseconds + 47_000_000 + 11_750_000))
        #expect(r.nextLost(from: 0) == 0 && r.nextLost(from: 1) == 1 && r.nextLost(from: 2) == nil)
        #expect(r.pipe(flight: 4000, sackOK: true, mss: 1000) == 1000)
    }

    @Test func resentLossIsInFlightAgain() {
        var r = flight([10, 11])
        let e = rtt(srttMs: 40)
        _ = r.sackReceived(sack([(2000, 3000)]), sndUna: s(1000), sndMax: s(3000), prevRackEnd: s(0),
                           now: ms(51), minRTT: e.minRTT)
        let d = r.detectLosses(now: ms(100), rtt: e)
        #expect(d.enterRecovery && r.lostBytes == 1000)
        r.enterRecovery(sndMax: s(3000))
        #expect(r.inRecovery && r.forceRetransmit && r.recover == s(3000))
        let again = r.resend(at: 0, now: ms(100))
        #expect(again.isRetransmitted && !again.isLost && again.sentAt == ms(100).nanoseconds)
        #expect(r.lostBytes == 0)
        #expect(r.pipe(flight: 2000, sackOK: true, mss: 1000) == 1000)
        // The ACK covering `recover` ends recovery.
        _ = r.cumulativeAck(sndUna: s(3000), prevRackEnd: s(3000), now: ms(140), minRTT: 40_000_000)
        #expect(r.newDataAcked(s(3000), sackOK: true) == .recoveryEnded)
        #expect(!r.inRecovery && !r.forceRetransmit)
    }

    @Test func threeDuplicateAcksWithoutSackStartRecovery() {
        var r = flight([10, 11, 12, 13])
        #expect(r.duplicateAck(sackOK: false) == false)
        #expect(r.duplicateAck(sackOK: false) == false)
        #expect(r.duplicateAck(sackOK: false) == true)
        #expect(r.queue[0].isLost && r.lostBytes == 1000)
        r.enterRecovery(sndMax: s(5000))
        #expect(r.duplicateAck(sackOK: false) == false)   // the fourth does not restart it
        // NewReno inflation: each duplicate ACK stands for a segment that left the network.
        #expect(r.pipe(flight: 4000, sackOK: false, mss: 1000) == 0)
        // A partial ACK: the next hole is lost too (RFC 6582).
        _ = r.cumulativeAck(sndUna: s(2000), prevRackEnd: s(0), now: ms(60), minRTT: .max)
        #expect(r.newDataAcked(s(2000), sackOK: false) == .partialAck)
        #expect(r.queue[0].start == s(2000) && r.queue[0].isLost)
        #expect(r.dupAcks == 0)
    }

    @Test func duplicateAcksWithSackLeaveLossToRack() {
        var r = flight([10, 11, 12, 13])
        _ = r.sackReceived(sack([(2000, 3000)]), sndUna: s(1000), sndMax: s(5000), prevRackEnd: s(0),
                           now: ms(30), minRTT: .max)
        for _ in 0..<3 { #expect(r.duplicateAck(sackOK: true) == false) }
        #expect(r.lostBytes == 0)
    }

    @Test func timeoutMarksEverythingNotSackedLost() {
        var r = flight([10, 11, 12])
        _ = r.sackReceived(sack([(2000, 3000)]), sndUna: s(1000), sndMax: s(4000), prevRackEnd: s(0),
                           now: ms(30), minRTT: .max)
        r.retransmissionTimeout(sndMax: s(4000), tracked: true, backoff: 0)
        #expect(r.rtoRecovery && !r.inRecovery)
        #expect(r.lostBytes == 2000 && r.sackedBytes == 1000)
        // A second timeout in a row: the peer may have reneged, so SACKs are forgotten.
        r.retransmissionTimeout(sndMax: s(4000), tracked: true, backoff: 1)
        #expect(r.lostBytes == 3000 && r.sackedBytes == 0 && r.sackedSegments == 0)
        // Losses found while recovering from the timeout do not start another recovery.
        for _ in 0..<3 { #expect(r.duplicateAck(sackOK: false) == false) }
        _ = r.cumulativeAck(sndUna: s(4000), prevRackEnd: s(0), now: ms(900), minRTT: .max)
        _ = r.newDataAcked(s(4000), sackOK: true)
        #expect(!r.rtoRecovery)
    }

    @Test func probeTimeoutIsTwoRTTsAndBacksOff() {
        var r = flight([10, 11])
        let e = rtt(srttMs: 20)
        let now = ms(20)
        #expect(r.probeTimeout(now: now, canProbe: false, rtt: e, rtoDeadline: nil) == nil)
        #expect(r.probeTimeout(now: now, canProbe: true, rtt: rtt(), rtoDeadline: nil) == nil)   // no RTT yet
        // Two segments out: 2 SRTT + 200 us.
        #expect(r.probeTimeout(now: now, canProbe: true, rtt: e, rtoDeadline: nil) == now + .microseconds(40_200))
        // An RTO due first makes the probe pointless.
        #expect(r.probeTimeout(now: now, canProbe: true, rtt: e, rtoDeadline: now + .milliseconds(30)) == nil)
        r.probeFired()
        #expect(r.probes == 1 && r.probeQuota == 1 && !r.forceRetransmit)
        #expect(r.probeTimeout(now: now, canProbe: true, rtt: e, rtoDeadline: nil) == now + .microseconds(80_400))
        for _ in 0..<10 { r.probeFired() }
        #expect(r.probes == LossRecovery.maxLossProbes)
        #expect(r.probeTimeout(now: now, canProbe: true, rtt: e, rtoDeadline: nil) == nil)
        // New data acknowledged: probing may start again.
        _ = r.newDataAcked(s(1500), sackOK: true)
        #expect(r.probes == 0)
        // One segment out: room for the peer's delayed ACK.
        let one = flight([10])
        #expect(one.probeTimeout(now: now, canProbe: true, rtt: e, rtoDeadline: nil)
                == now + .milliseconds(45))
    }

    @Test func probeResendsTheHighestSegmentNotSacked() {
        var r = flight([10, 11, 12])
        _ = r.sackReceived(sack([(3000, 4000)]), sndUna: s(1000), sndMax: s(4000), prevRackEnd: s(0),
                           now: ms(30), minRTT: .max)
        let p = r.takeProbeSegment(now: ms(50))
        #expect(p?.start == s(2000) && p?.isRetransmitted == true)
        #expect(r.queue[1].sentAt == ms(50).nanoseconds)
        // Waiting losses are resent first instead.
        var q = flight([10])
        q.retransmissionTimeout(sndMax: s(2000), tracked: true, backoff: 0)
        q.probeFired()
        #expect(q.forceRetransmit && q.probeQuota == 0)
        var all = flight([10])
        _ = all.sackReceived(sack([(1000, 2000)]), sndUna: s(1000), sndMax: s(2000), prevRackEnd: s(0),
                             now: ms(30), minRTT: .max)
        #expect(all.takeProbeSegment(now: ms(50)) == nil)
    }

    @Test func forgetQueueAndReleaseStorage() {
        var r = flight([1, 2, 3])
        r.retransmissionTimeout(sndMax: s(4000), tracked: true, backoff: 0)
        r.forgetQueue()
        #expect(r.isEmpty && r.lostBytes == 0 && r.sackedBytes == 0)
        r = flight([1, 2])
        r.releaseStorage()
        #expect(r.isEmpty)
    }
}
