import NetStack
#if canImport(Glibc)
import Glibc
#endif

/// How a connection whose app is done with it ends: with a reset (what Linux answers a close
/// with unread input with) or gracefully (FIN after the queued bytes). TCPBridge's own file
/// decides when (appGone, fail); these say how.
extension TCPBridge {
    /// Whether the app's close of `c` is one Linux answers with a reset rather than a FIN: it
    /// closed with received bytes unread (RFC 2525 §2.17) — bytes we delivered (our end then
    /// reports ECONNRESET) or bytes dropped because its end no longer took them (EPIPE, seen
    /// when the close and the room it left come together) — or the connection was never
    /// accepted and went down with its listener's accept channel. (Bytes still in the stack's
    /// receive ring need nothing here: the stack's own close resets then, as Linux's does.)
    /// (A FIN instead lets the peer go on sending into a closed socket: the RST that answers its
    /// next data makes its writes fail with EPIPE and SIGPIPE, where Linux's reset at close
    /// gives ECONNRESET.)
    func closeResets(_ c: Connection, unreadInput: Bool) -> Bool {
        if unreadInput || c.data.map({ sys.pendingError($0.fd) == ECONNRESET }) == true { return true }
        if c.droppedInput && !c.appShutRead { return true }   // (after SHUT_RD the hang-up may be a shutdown)
        guard c.bytesOut == 0 else { return false }
        let listenerGoing = c.deliveredBy.map { l in l.data.map { sys.peerHungUp($0.fd) } ?? true } ?? false
        return listenerGoing || (c.orphanedUntil.map { Self.now() < $0 } ?? false)
    }

    /// Ends the connection with a reset and forgets it (`remove` aborts the stack's side).
    func reset(_ c: Connection) { remove(c) }

    /// Everything the app wrote is in the stack: graceful close (FIN after the queued bytes).
    func finish(_ c: Connection) {
        if let h = c.handle {
            byHandle[h] = nil
            stack?.tcp.release(h, now: Self.now())
            c.handle = nil
        }
        remove(c)
    }
}
