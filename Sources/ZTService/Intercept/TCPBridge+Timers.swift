import NetStack

// TCPBridge's timers: lingering names of finished sockets, the owners of plugged connects, the
// spare socketpairs; and the loop's idle moments, which make those pairs.
extension TCPBridge {
    var nextDeadline: Instant? {
        // Asked every loop turn: no array of candidates (an allocation each time).
        var d = lingering.first?.until
        if let t = plugOwners.nextCheck, d == nil || t < d! { d = t }
        if let t = spares.expiry, d == nil || t < d! { d = t }
        return d
    }

    /// An idle moment of the loop: makes one owed spare socketpair. False when none is owed.
    func makeSpare() -> Bool { spares.makeOne(sys: sys) }

    func runTimers(now: Instant) {
        spares.expire(sys: sys, now: now)
        for c in plugOwners.check(now: now) {
            // Our copy of the app end goes: if the owner was its only holder, our end sees the
            // hangup next and appGone aborts the connect (as Linux does on close).
            if let p = c.plug { c.plug = nil; unplug(p, drainingFrom: nil) }
        }
        while let f = lingering.first, f.until <= now {
            lingering.removeFirst()
            if isLingering(f.conn) { remove(f.conn) }
        }
    }

    /// At most this many linger at once; past it the oldest goes early (a storm of failed
    /// connects must not grow memory without bound).
    static let lingerLimit = 4096

    func linger(_ c: Connection) {
        // A name holds no port: the app's close of it cannot be seen, and after that close a new
        // bind must find the port free, as on Linux. An explicit bind waits for a RENEW.
        if let b = c.binding { c.parkedBind = b.local; unreserve(c) }
        if lingering.count >= Self.lingerLimit {
            let oldest = lingering.removeFirst().conn
            if isLingering(oldest) { remove(oldest) }
        }
        lingering.append((c, Self.now() + Self.lingerTime))
    }

    /// Still a name without a pair (not forgotten, not renewed by a new connect): the app's close
    /// of it cannot be seen, so its time is up when its linger ends.
    private func isLingering(_ c: Connection) -> Bool { byKey[c.key] === c && c.data == nil }
}
