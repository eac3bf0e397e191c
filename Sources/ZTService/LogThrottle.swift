import PhyLoop

/// Rate limit for log lines a local user can trigger at will (budget refusals): one line per key
/// per interval, carrying how many were suppressed since the last one. Bounded: a flood of
/// distinct keys only resets the table. One thread only (each loop has its own).
struct LogThrottle {
    private var last: [String: (at: UInt64, suppressed: UInt64)] = [:]
    let intervalNs: UInt64
    static let maxKeys = 1024

    init(intervalNs: UInt64 = 10_000_000_000) { self.intervalNs = intervalNs }

    /// nil: stay quiet. Otherwise log now; the value is the number of lines suppressed before.
    mutating func admit(_ key: String, now: UInt64 = Sys.monotonicNanoseconds()) -> UInt64? {
        if let e = last[key], now &- e.at < intervalNs {
            last[key] = (e.at, e.suppressed &+ 1)
            return nil
        }
        if last.count >= Self.maxKeys { last.removeAll(keepingCapacity: true) }
        let suppressed = last[key]?.suppressed ?? 0
        last[key] = (now, 0)
        return suppressed
    }
}
