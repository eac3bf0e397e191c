/// A token bucket on the stack clock (ICMP error rate limiting, RFC 1812 §4.3.2.8).
struct TokenBucket {
    let ratePerSecond: UInt64
    let burst: UInt64
    private var tokens: UInt64
    private var last: Instant

    init(ratePerSecond: Int, burst: Int) {
        self.ratePerSecond = UInt64(max(1, ratePerSecond))
        self.burst = UInt64(max(1, burst))
        tokens = self.burst
        last = .zero
    }

    /// Takes one token if available.
    mutating func take(now: Instant) -> Bool {
        let elapsed = (now - last).nanoseconds
        let nsPerToken = 1_000_000_000 / ratePerSecond
        if elapsed >= nsPerToken {
            let add = elapsed / max(1, nsPerToken)
            tokens = min(burst, tokens &+ add)
            // Keep the remainder so a steady rate is not rounded away.
            last = tokens == burst ? now : Instant(nanoseconds: last.nanoseconds &+ add &* nsPerToken)
        }
        guard tokens > 0 else { return false }
        tokens &-= 1
        return true
    }
}
