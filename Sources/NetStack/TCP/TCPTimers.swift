/// A connection's timers as deadlines (nil = stopped), so `next` is the one instant the
/// layer's timer heap needs and a stopped timer costs nothing. What each one does when it
/// fires is the connection's business (`TCPConnection.timersFired`); this only keeps time.
struct TCPTimers {
    /// In the order `timersFired` handles them.
    enum Kind: CaseIterable {
        /// TIME-WAIT expiry, or the end of an orphaned FIN-WAIT-2 (the connection goes).
        case close
        /// Retransmission timeout (RFC 6298).
        case rto
        /// RACK reordering window: segments may be lost once it passes (RFC 8985 §6.3).
        case rack
        /// Tail loss probe (RFC 8985 §7).
        case tlp
        /// Zero-window probe (RFC 9293 §3.8.6.1).
        case persist
        /// Delayed ACK (RFC 1122 §4.2.3.2).
        case delayedAck
        /// Keepalive probe (RFC 1122 §4.2.3.6).
        case keepAlive
        /// TCP_CORK's limit: a held partial segment goes out.
        case cork
        /// Big rings idle: give their memory back (TCPBufferTuning.swift).
        case rings
    }

    var close: Instant?
    var rto: Instant?
    var rack: Instant?
    var tlp: Instant?
    var persist: Instant?
    var delayedAck: Instant?
    var keepAlive: Instant?
    var cork: Instant?
    var rings: Instant?

    subscript(_ k: Kind) -> Instant? {
        get {
            switch k {
            case .close: close
            case .rto: rto
            case .rack: rack
            case .tlp: tlp
            case .persist: persist
            case .delayedAck: delayedAck
            case .keepAlive: keepAlive
            case .cork: cork
            case .rings: rings
            }
        }
        set {
            switch k {
            case .close: close = newValue
            case .rto: rto = newValue
            case .rack: rack = newValue
            case .tlp: tlp = newValue
            case .persist: persist = newValue
            case .delayedAck: delayedAck = newValue
            case .keepAlive: keepAlive = newValue
            case .cork: cork = newValue
            case .rings: rings = newValue
            }
        }
    }

    /// The earliest running deadline.
    var next: Instant? {
        earliest(earliest(earliest(earliest(rto, delayedAck), earliest(persist, keepAlive)), close),
                 earliest(earliest(rack, tlp), earliest(cork, rings)))
    }

    /// Stops `k` and returns true when it was due at `now`; a timer not yet due keeps running.
    mutating func fire(_ k: Kind, now: Instant) -> Bool {
        guard let t = self[k], t <= now else { return false }
        self[k] = nil
        return true
    }

    /// Starts `k` at `at` unless it is running (a running RTO is not restarted by more data).
    mutating func startIfStopped(_ k: Kind, at: Instant) {
        if self[k] == nil { self[k] = at }
    }

    /// Stops every timer (the connection closed, or entered TIME-WAIT and sets `close` anew).
    mutating func stopAll() { self = TCPTimers() }
}
