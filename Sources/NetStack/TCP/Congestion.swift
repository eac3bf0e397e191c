import Foundation  // cbrt

/// Congestion window control for one connection, in bytes.
///
/// Slow start is shared (RFC 5681 with appropriate byte counting, L = 2*SMSS, RFC 3465).
/// Congestion avoidance is NewReno's one SMSS per RTT (RFC 5681 §3.1) or CUBIC's cubic growth
/// with its Reno-friendly region (RFC 9438 §4). Loss recovery itself (which bytes to resend) is
/// the connection's business; this type only answers "how big may the window be".
struct CongestionController {
    var algorithm: CongestionControl
    var cwnd: Int
    var ssthresh: Int
    /// Bytes acked in congestion avoidance not yet turned into window growth (NewReno).
    var bytesAcked = 0

    // CUBIC state, in segments and seconds (RFC 9438 §4.1 notation).
    var wMax = 0.0
    var k = 0.0
    var origin = 0.0
    var wEst = 0.0
    var epochStart: Instant?
    var fractional = 0.0

    static let cubicC = 0.4
    static let cubicBeta = 0.7

    init(algorithm: CongestionControl, mss: Int, initialSegments: Int) {
        self.algorithm = algorithm
        cwnd = mss &* initialSegments
        ssthresh = Int.max >> 1
    }

    var inSlowStart: Bool { cwnd < ssthresh }

    /// New data was acknowledged (`acked` bytes) outside loss recovery. `cwndLimited` tells
    /// whether the sender was actually using the window (RFC 7661: don't grow an unused window).
    mutating func onAck(acked: Int, mss: Int, now: Instant, srtt: Duration, cwndLimited: Bool) {
        guard acked > 0, cwndLimited else { return }
        if cwnd < ssthresh {
            cwnd &+= min(acked, 2 &* mss)
            if cwnd > ssthresh, algorithm == .cubic { epochStart = nil }
            return
        }
        switch algorithm {
        case .newReno:
            bytesAcked &+= acked
            if bytesAcked >= cwnd {
                bytesAcked &-= cwnd
                cwnd &+= mss
            }
        case .cubic:
            cubicAck(acked: acked, mss: mss, now: now, srtt: srtt)
        }
    }

    private mutating func cubicAck(acked: Int, mss: Int, now: Instant, srtt: Duration) {
        let seg = Double(mss)
        let w = Double(cwnd) / seg
        if epochStart == nil {
            epochStart = now
            if w < wMax {
                k = Foundation.cbrt((wMax - w) / Self.cubicC)
                origin = wMax
            } else {
                k = 0
                origin = w
            }
            wEst = w
        }
        let t = Double((now - epochStart!).nanoseconds &+ srtt.nanoseconds) / 1e9
        var target = origin + Self.cubicC * (t - k) * (t - k) * (t - k)
        // Reno-friendly estimate (RFC 9438 §4.3): alpha = 3(1-beta)/(1+beta).
        let alpha = 3.0 * (1.0 - Self.cubicBeta) / (1.0 + Self.cubicBeta)
        wEst += alpha * (Double(acked) / seg) / w
        if wEst > target { target = wEst }
        target = min(max(target, w), 1.5 * w)
        // Grow by (target - w)/w per acked segment.
        fractional += (target - w) / w * (Double(acked) / seg) * seg
        if fractional >= 1 {
            let add = Int(fractional)
            cwnd &+= add
            fractional -= Double(add)
        }
    }

    /// Fast retransmit: a loss was detected by duplicate ACKs or SACK. `flight` = bytes in flight.
    mutating func onLoss(flight: Int, mss: Int) {
        reduceThreshold(flight: flight, mss: mss)
        cwnd = ssthresh
    }

    /// Retransmission timeout: back to one segment (RFC 5681 §3.1 loss window).
    mutating func onTimeout(flight: Int, mss: Int) {
        reduceThreshold(flight: flight, mss: mss)
        cwnd = mss
    }

    /// The multiplicative decrease both loss signals share: the new ssthresh (and CUBIC's W_max).
    private mutating func reduceThreshold(flight: Int, mss: Int) {
        switch algorithm {
        case .newReno:
            ssthresh = max(flight / 2, 2 &* mss)
        case .cubic:
            let w = Double(cwnd) / Double(mss)
            // Fast convergence (RFC 9438 §4.7).
            wMax = w < wMax ? w * (1.0 + Self.cubicBeta) / 2.0 : w
            epochStart = nil
            ssthresh = max(cwnd &* 7 / 10, 2 &* mss)   // beta = 0.7 in integer math
        }
        bytesAcked = 0
        fractional = 0
    }
}
