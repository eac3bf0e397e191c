import Testing
@testable import NetStack

@Suite struct TCPTimersTests {
    let t0 = Instant.milliseconds(1000)

    @Test func stoppedTimersHaveNoDeadline() {
        let t = TCPTimers()
        #expect(t.next == nil)
        for k in TCPTimers.Kind.allCases { #expect(t[k] == nil) }
    }

    @Test func nextIsTheEarliestOfAll() {
        var t = TCPTimers()
        for (i, k) in TCPTimers.Kind.allCases.enumerated() {
            t[k] = t0 + .milliseconds(UInt64(100 - i))
        }
        #expect(t.next == t0 + .milliseconds(92))   // rings, the last kind, is set earliest
        // Each kind alone is seen by `next`.
        for k in TCPTimers.Kind.allCases {
            var one = TCPTimers()
            one[k] = t0
            #expect(one.next == t0, "\(k)")
        }
    }

    @Test func fireStopsOnlyDueTimers() {
        var t = TCPTimers()
        t.rto = t0 + .milliseconds(10)
        t.delayedAck = t0 + .milliseconds(40)
        #expect(t.fire(.rto, now: t0) == false)
        #expect(t.rto == t0 + .milliseconds(10))
        #expect(t.fire(.rto, now: t0 + .milliseconds(10)) == true)   // due exactly at its deadline
        #expect(t.rto == nil)
        #expect(t.fire(.rto, now: t0 + .milliseconds(50)) == false)  // stopped: nothing to fire
        #expect(t.fire(.keepAlive, now: t0 + .milliseconds(50)) == false)
        #expect(t.fire(.delayedAck, now: t0 + .milliseconds(50)) == true)
        #expect(t.next == nil)
    }

    @Test func startIfStoppedKeepsARunningTimer() {
        var t = TCPTimers()
        t.startIfStopped(.rto, at: t0 + .milliseconds(200))
        t.startIfStopped(.rto, at: t0 + .milliseconds(900))
        #expect(t.rto == t0 + .milliseconds(200))
        t.rto = nil
        t.startIfStopped(.rto, at: t0 + .milliseconds(900))
        #expect(t.rto == t0 + .milliseconds(900))
    }

    @Test func stopAllStopsEveryTimer() {
        var t = TCPTimers()
        for k in TCPTimers.Kind.allCases { t[k] = t0 }
        t.stopAll()
        #expect(t.next == nil)
        for k in TCPTimers.Kind.allCases { #expect(t[k] == nil) }
    }
}
