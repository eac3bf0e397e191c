import Testing
@testable import NetStack

@Suite struct TCPCongestionTests {
    @Test func newRenoWindowEvolution() {
        var cc = CongestionController(algorithm: .newReno, mss: 1000, initialSegments: 10)
        let now = Instant.milliseconds(1)
        #expect(cc.cwnd == 10_000)
        for _ in 0..<10 { cc.onAck(acked: 1000, mss: 1000, now: now, srtt: .milliseconds(10), cwndLimited: true) }
        #expect(cc.cwnd == 20_000)                       // slow start: +1 MSS per MSS acked
        cc.onAck(acked: 1000, mss: 1000, now: now, srtt: .milliseconds(10), cwndLimited: false)
        #expect(cc.cwnd == 20_000)                       // an unused window does not grow (RFC 7661)
        cc.onAck(acked: 5000, mss: 1000, now: now, srtt: .milliseconds(10), cwndLimited: true)
        #expect(cc.cwnd == 22_000)                       // ABC limit L = 2 MSS (RFC 3465)
        cc.onLoss(flight: 20_000, mss: 1000)
        #expect(cc.ssthresh == 10_000)
        #expect(cc.cwnd == 10_000)
        for _ in 0..<10 { cc.onAck(acked: 1000, mss: 1000, now: now, srtt: .milliseconds(10), cwndLimited: true) }
        #expect(cc.cwnd == 11_000)                       // congestion avoidance: +1 MSS per window
        cc.onTimeout(flight: 11_000, mss: 1000)
        #expect(cc.cwnd == 1000)
        #expect(cc.ssthresh == 5500)
    }

    /// Acks a whole window every RTT from `from` for `seconds`.
    static func runCubic(_ cc: inout CongestionController, from: Instant, seconds: Double, rttMs: UInt64 = 100) -> Instant {
        var t = from
        let end = from + Duration(nanoseconds: UInt64(seconds * 1e9))
        while t < end {
            var left = cc.cwnd
            while left > 0 {
                cc.onAck(acked: 2000, mss: 1000, now: t, srtt: .milliseconds(rttMs), cwndLimited: true)
                left -= 2000
            }
            t = t + .milliseconds(rttMs)
        }
        return t
    }

    @Test func cubicWindowEvolution() {
        var cc = CongestionController(algorithm: .cubic, mss: 1000, initialSegments: 100)
        cc.onLoss(flight: 100_000, mss: 1000)
        #expect(cc.cwnd == 70_000)                       // beta = 0.7 (RFC 9438 §4.6)
        #expect(cc.ssthresh == 70_000)
        let t0 = Instant.milliseconds(1000)
        // K = cbrt(W_max (1 - beta) / C) = cbrt(75) ≈ 4.22 s.
        var t = Self.runCubic(&cc, from: t0, seconds: 2)
        let at2 = Double(cc.cwnd) / 1000
        #expect(at2 > 85 && at2 < 100, "concave region: quickly back towards W_max, got \(at2)")
        t = Self.runCubic(&cc, from: t, seconds: 2.2)
        let atK = Double(cc.cwnd) / 1000
        #expect(atK > 96 && atK < 104, "plateau near W_max at K, got \(atK)")
        _ = Self.runCubic(&cc, from: t, seconds: 4)
        let at8 = Double(cc.cwnd) / 1000
        #expect(at8 > 115, "convex region: probing beyond W_max, got \(at8)")
        // Fast convergence: a loss below the previous W_max lowers W_max further.
        var cc2 = CongestionController(algorithm: .cubic, mss: 1000, initialSegments: 100)
        cc2.onLoss(flight: 100_000, mss: 1000)
        cc2.cwnd = 90_000
        cc2.onLoss(flight: 90_000, mss: 1000)
        #expect(abs(cc2.wMax - 76.5) < 0.01)
        #expect(cc2.cwnd == 63_000)
    }

    @Test func cubicIsRenoFriendlyOnShortRtt() {
        // With a tiny RTT the cubic curve is flat; the Reno-friendly estimate must still grow it.
        var cc = CongestionController(algorithm: .cubic, mss: 1000, initialSegments: 20)
        cc.onLoss(flight: 20_000, mss: 1000)
        let start = cc.cwnd
        _ = Self.runCubic(&cc, from: .milliseconds(1), seconds: 0.1, rttMs: 1)
        #expect(cc.cwnd > start + 20_000)
    }
}
