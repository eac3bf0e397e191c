import CShims
import NetStack
import PhyLoop
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// The TCP data path: bytes between the daemon end of an app's socketpair and the stack's rings,
// with back-pressure both ways (no second copy: recvmsg/sendmsg scatter into and gather from the
// ring regions). Stack -> app skips the ring altogether while it is empty (`deliverDirect`).
extension TCPBridge {
    /// Lets the stack hand in-order bytes of intercepted connections to `deliverDirect`.
    func attachDirectReceive() {
        stack?.tcp.directReceiver = { [unowned self] h, bytes in deliverDirect(h, bytes) }
    }

    /// Stack -> app without the receive ring (`TCPLayer.directReceiver`): in-order bytes that
    /// arrive while the ring is empty go from the frame straight into the app's socket. Returns
    /// the bytes taken; the stack queues the rest in the ring, whose `.readable` then runs
    /// `pumpOut` (which also meets any error, e.g. EPIPE, and handles it).
    func deliverDirect(_ h: SocketHandle, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard let c = byHandle[h], c.phase == .connected, c.inbound == .open, c.plug == nil,
              let d = c.data, !d.isClosed, !d.wantsWritable else { return 0 }
        guard case .processed(let n)? = try? sys.send(d.fd, bytes) else { return 0 }
        c.bytesIn &+= UInt64(n)
        return n
    }

    /// The peer's urgent byte goes to the app as the unix socket's out-of-band byte (POLLPRI,
    /// SIOCATMARK, recv(MSG_OOB), SIGURG to the socket's owner, reads stopping at the mark, as
    /// on a TCP socket); under SO_OOBINLINE `pumpOut` leaves it in the stream.
    ///
    /// A read that starts at a unix out-of-band byte passes it and drops it, so the byte must
    /// not reach an app that has read everything before it and waits in read(): the byte before
    /// it goes in the same send (`pumpOut` keeps it back until then), and a socket too full for
    /// the two gets room for them once (our end's send buffer, `urgentRoomBytes` more) rather
    /// than leaving them to arrive after the app has emptied it. The read then returns the byte
    /// before and stops at the mark, as on Linux.
    /// Returns the bytes sent: 0 when the socket is full, 1 of 2 when the urgent one did not fit.
    private func sendUrgent(_ c: Connection, _ d: LoopSocket, before: UInt8?, urgent: UInt8) throws(Errno) -> Int {
        var pair = (before ?? 0, urgent)
        func send() throws(Errno) -> Int {
            let r = try withUnsafeBytes(of: &pair) { p throws(Errno) in
                try sys.send(d.fd, before == nil ? UnsafeRawBufferPointer(rebasing: p[1...]) : p, flags: Int32(MSG_OOB))
            }
            guard case .processed(let n) = r else { return 0 }
            return n
        }
        var n = try send()
        if n == 0 && !c.urgentRoomGiven {
            c.urgentRoomGiven = true
            if sys.growSendBuffer(d.fd, by: Self.urgentRoomBytes) { n = try send() }
        }
        c.bytesIn &+= UInt64(n)
        return n
    }

    /// Send buffer added once per connection for the peer's urgent byte (two small skbs).
    static var urgentRoomBytes: Int32 { 16384 }

    /// Reads of up to 64 KiB per `drainDiscard` call (1 MiB).
    static var discardBatch: Int { 16 }
    /// Reads after a short read that found nothing (EAGAIN) before a connection stops making them.
    static var readOnLimit: UInt8 { 4 }

    /// The app's socket is readable (the loop's readiness). A socket emptied since the epoll_wait
    /// that reported it returned holds nothing of what was reported (it would read EAGAIN: nginx
    /// corks around each response, and the cork's one-way message takes the response first),
    /// unless the app shut its writing or hung up, which a read must see.
    func readable(_ c: Connection) {
        if c.drainedInPoll == loop.polls, let d = c.data, !d.peerShutWrite, !d.hungUp { return }
        pumpIn(c)
    }

    /// App -> stack: recvmsg from the daemon end straight into the send buffer's free regions.
    func pumpIn(_ c: Connection) {
        guard let d = c.data, !d.isClosed else { return }
        let pumping: Bool
        switch c.phase {
        case .connected, .draining, .closing, .closed: pumping = true
        default: pumping = false
        }
        guard let h = c.handle, let stack, pumping else {
            if c.handle == nil { drainDiscard(c, d) }
            return
        }
        guard let tx = stack.tcp.sendBuffer(h) else { drainDiscard(c, d); return }
        var readingOn = false
        while true {
            if d.urgentPending || (readingOn && !d.peerShutWrite) { findUrgent(h, d, afterShortRead: readingOn) }
            var (a, b) = tx.freeRegions()
            // TCP_NOTSENT_LOWAT: take no more than the mark allows unsent, so the app's end
            // fills up and the app sees the back-pressure.
            let space = stack.tcp.sendSpace(h)
            if space < a.count + b.count {
                if space <= a.count {
                    a = UnsafeMutableRawBufferPointer(rebasing: a[0..<space])
                    b = UnsafeMutableRawBufferPointer(start: nil, count: 0)
                } else {
                    b = UnsafeMutableRawBufferPointer(rebasing: b[0..<(space - a.count)])
                }
            }
            if a.count == 0 {
                // The app closed with more written: the ring takes it all (up to its maximum),
                // like a kernel socket's send queue at close(), so the FIN can follow at once.
                if sys.peerHungUp(d.fd), stack.tcp.growSendBufferForClose(h, pending: tx.capacity, now: Self.now()) {
                    continue
                }
                // Send buffer full: stop reading; the stack's .writable resumes us.
                loop.setNotifyReadable(d, false)
                return
            }
            do {
                switch try sys.recvv(d.fd, a, b) {
                case .processed(0):
                    appEOF(c, d)
                    return
                case .processed(let n):
                    stack.tcp.commitSend(h, n, now: Self.now())
                    c.bytesOut &+= UInt64(n)
                    // A short read emptied the socket. Read on anyway while the app may be about
                    // to close (epoll saw it shut its writing, or it is young): if it wrote its
                    // last bytes and closed, the EOF is seen now and the FIN leaves with those
                    // bytes, as on Linux, instead of after them, when the peer may have closed
                    // first (and piled up TIME-WAIT: wrk against nginx's `Connection: close`
                    // collapsed to 1.4k requests/s that way). A connection whose reads on found
                    // nothing `readOnLimit` times keeps its sockets open between writes: it stops
                    // at short reads and saves the read that says EAGAIN.
                    readingOn = n < a.count + b.count
                    if readingOn && !d.peerShutWrite && c.emptyReadOns >= Self.readOnLimit {
                        c.drainedInPoll = loop.polls
                        resumeReading(c, d)
                        return
                    }
                case .wouldBlock:
                    if readingOn && c.emptyReadOns < Self.readOnLimit { c.emptyReadOns &+= 1 }
                    c.drainedInPoll = loop.polls
                    resumeReading(c, d)
                    return
                }
            } catch {
                // The app end is gone; ECONNRESET says it went with bytes we delivered unread.
                appGone(c, unreadInput: error == .connectionReset)
                return
            }
        }
    }

    /// The app's urgent byte (`send(MSG_OOB)`), kept inline in our end (`keepOutOfBandInline`):
    /// a read stops before it, so when the next byte is at the mark it is the urgent one and the
    /// stack marks it (URG on what carries it). Looked for after epoll saw one coming (EPOLLPRI)
    /// and after every short read that is followed by another (which would start at the byte);
    /// a short read with no mark behind it says none is waiting. Once the app shut its writing
    /// (epoll saw RDHUP) nothing more can come, and the EPOLLPRI collected with that RDHUP or
    /// before it covers every urgent byte: no look after short reads then.
    private func findUrgent(_ h: SocketHandle, _ d: LoopSocket, afterShortRead: Bool) {
        if sys.atMark(d.fd) {
            stack?.tcp.markUrgent(h, pending: 1)
            d.urgentPending = false
        } else if afterShortRead {
            d.urgentPending = false
        }
    }

    private func resumeReading(_ c: Connection, _ d: LoopSocket) {
        guard !d.wantsReadable || d.suspended else { return }
        if c.outbound == .open || c.phase == .draining { loop.setNotifyReadable(d, true) }
    }

    /// EOF on the daemon end: a half-close (shutdown SHUT_WR: FIN) or a full close (hangup).
    private func appEOF(_ c: Connection, _ d: LoopSocket) {
        if d.hungUp || sys.peerHungUp(d.fd) {
            if closeResets(c, unreadInput: false) {
                reset(c)
            } else if c.inbound == .eofDelivered || c.appShutRead, let h = c.handle {
                // Our end was shut for writing already (the peer's FIN passed on), or the app shut
                // its reading, so the hang-up may be the app's shutdown as well as its close:
                // FIN, and the socket stays nameable (getpeername ENOTCONN, SO_ERROR 0), as
                // Linux's in CLOSE.
                if c.outbound == .open {
                    c.outbound = .finQueued
                    try? stack?.tcp.shutdownWrite(h, now: Self.now())
                }
                retire(c)
            } else {
                finish(c)
            }
            return
        }
        if c.outbound == .open, let h = c.handle {
            c.outbound = .finQueued
            try? stack?.tcp.shutdownWrite(h, now: Self.now())
        }
        // Level-triggered EOF must not spin; the full close arrives as a hangup.
        loop.setNotifyReadable(d, false)
    }

    /// Reads and drops what the app writes to a connection that is over: at most
    /// `discardBatch` reads per call (a fast writer must not hold the loop), the rest on the
    /// next readiness.
    private func drainDiscard(_ c: Connection, _ d: LoopSocket) {
        for i in 0..<Self.discardBatch {
            switch try? sys.recv(d.fd, into: scratch) {
            case .processed(let n)? where n > 0:
                if i == Self.discardBatch - 1 { loop.setNotifyReadable(d, true) }
                continue
            case .wouldBlock?:
                return
            default:
                appEOF(c, d)
                return
            }
        }
    }

    /// Stack -> app: sendmsg from the receive buffer's readable regions; EAGAIN = the app is not
    /// reading, so the ring stays full and the advertised window closes.
    func pumpOut(_ c: Connection) {
        guard let d = c.data, !d.isClosed, c.phase != .listening else { return }
        guard let h = c.handle, let stack, let rx = stack.tcp.receiveBuffer(h) else {
            // Nothing left to deliver: a level-triggered EPOLLOUT must not keep firing.
            loop.setNotifyWritable(d, false)
            if c.phase == .closing, let h = c.handle { releaseClosed(c, h) }
            return
        }
        pump: while rx.count > 0 {
            if c.inbound == .discarding {
                c.droppedInput = true
                stack.tcp.consume(h, rx.count, now: Self.now())
                break
            }
            var (a, b) = rx.readableRegions()
            do {
                let total = a.count + b.count
                // Under SO_OOBINLINE the urgent byte is an ordinary one of the stream.
                if !c.options[.oobInline], let m = stack.tcp.urgentOffset(h), m <= total {
                    if m < total && m <= 1 {
                        let byte = { (i: Int) in i < a.count ? a[i] : b[i - a.count] }
                        let sent = try sendUrgent(c, d, before: m == 1 ? byte(0) : nil, urgent: byte(m))
                        guard sent > 0 else {
                            loop.setNotifyWritable(d, true)
                            return
                        }
                        stack.tcp.consume(h, sent, now: Self.now())
                        continue
                    }
                    // Up to the byte before the urgent one, which goes with it (`sendUrgent`);
                    // while the urgent byte is on its way (its pointer came first) that byte
                    // waits for it, unless the peer has finished sending.
                    var upTo = m - 1
                    if m == total && stack.tcp.isPeerClosed(h) { upTo = total }
                    if upTo == 0 { break pump }
                    if upTo <= a.count {
                        a = UnsafeRawBufferPointer(rebasing: a[0..<upTo])
                        b = UnsafeRawBufferPointer(start: nil, count: 0)
                    } else {
                        b = UnsafeRawBufferPointer(rebasing: b[0..<(upTo - a.count)])
                    }
                }
                switch try sys.sendv(d.fd, a, b) {
                case .processed(let n):
                    stack.tcp.consume(h, n, now: Self.now())
                    c.bytesIn &+= UInt64(n)
                case .wouldBlock:
                    loop.setNotifyWritable(d, true)
                    return
                }
            } catch {
                // EPIPE: the app shut down reading or closed; its hangup follows if closed.
                c.inbound = .discarding
            }
        }
        loop.setNotifyWritable(d, false)
        if c.phase == .closing {
            releaseClosed(c, h)
        } else if c.inbound != .eofDelivered && stack.tcp.isPeerClosed(h) {
            deliverEOF(c)
        }
    }
}
