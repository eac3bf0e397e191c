import CShims
import CZTRPC
import NetStack
import PhyLoop
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// The accept channel of a listening socket (ztrpc.h, channel 3): one message per established
// connection, carrying the app end of a new socketpair. The listening fd is readable exactly
// when a connection waits, so poll/epoll on listeners stay native.
extension TCPBridge {
    /// Hands established connections to the app over the accept channel, one socketpair each.
    func deliverAccepts(_ c: Connection) {
        guard let h = c.handle, let stack, let ch = c.data, !ch.isClosed else { return }
        while let first = c.undelivered.first {
            guard sendAccept(ch, first.conn, first.appEnd) else {
                loop.setNotifyWritable(ch, true)
                return
            }
            c.channelBound += 1
            c.undelivered.removeFirst()
            noteDelivered(first.conn, by: c)
            pumpOut(first.conn)
        }
        loop.setNotifyWritable(ch, false)
        while let nh = (try? stack.tcp.accept(h, now: Self.now())) ?? nil {
            let pair: SparePairs.Pair
            do throws(Errno) {
                pair = try spares.take(sys: sys, now: Self.now())
            } catch {
                if let suppressed = gate.admitLog("accept-socketpair") {
                    logger.warning("accept: socketpair failed; connection reset",
                                   metadata: ["network": "\(network)", "errno": "\(error.rawValue)", "suppressed": "\(suppressed)"])
                }
                stack.tcp.abort(nh, now: Self.now())
                return
            }
            let (appEnd, ours, key) = (pair.appEnd, pair.ours, pair.key)
            let nc = Connection(key: key, pid: c.pid, uid: c.uid)
            nc.family = c.family   // an accepted socket has its listener's family
            nc.v6Only = c.v6Only
            nc.seccomp = c.seccomp
            nc.options = c.options.inheritedByAccepted
            if nc.options.peekOffset >= 0 {
                // SO_PEEK_OFF acts on the app's end itself (MSG_PEEK is native): inherited there.
                var v = nc.options.peekOffset
                _ = Glibc.setsockopt(appEnd, SOL_SOCKET, SocketOptionMap.SO_PEEK_OFF, &v, socklen_t(4))
            }
            // Charged to the listener's owner; over its budget the connection is reset.
            if chargeNew(nc, bytes: ringBytes(nc.options)) != nil {
                sys.close(appEnd); sys.close(ours); stack.tcp.abort(nh, now: Self.now())
                continue
            }
            attachRingBudget(stack)
            nc.handle = nh
            nc.phase = .connected
            nc.reportedConnected = true   // accept's socket is SS_CONNECTED
            nc.local = stack.tcp.localEndpoint(nh)
            nc.remote = stack.tcp.remoteEndpoint(nh)
            do {
                // No client ever held `ours`: no identity to remember (HeldEnds).
                nc.data = try loop.addUnexposed(fd: ours, kind: .connected, context: .tcp(nc))
            } catch {
                sys.close(appEnd); sys.close(ours)
                stack.tcp.abort(nh, now: Self.now())
                refund(nc)
                continue
            }
            register(nc)
            byHandle[nh] = nc
            stack.tcp.setDirectReceive(nh, true)
            if !sendAccept(ch, nc, appEnd) {
                c.undelivered.append((nc, appEnd))
                loop.setNotifyWritable(ch, true)
                return
            }
            c.channelBound += 1
            noteDelivered(nc, by: c)
            pumpOut(nc)
        }
    }

    /// One ztrpc_accept_msg + SCM_RIGHTS(app end). False if the channel is full (app not accepting).
    private func sendAccept(_ ch: LoopSocket, _ nc: Connection, _ appEnd: Int32) -> Bool {
        var msg = RPCCodec.acceptMessage(local: nc.local, peer: nc.remote, secret: nc.secret, key: nc.key, nonBlocking: true)
        var fd = appEnd
        let sent: Bool
        do {
            let r = try withUnsafeBytes(of: &msg) { m throws(Errno) in
                try withUnsafePointer(to: &fd) { f throws(Errno) in
                    try sys.sendWithFDs(ch.fd, m, fds: UnsafeBufferPointer(start: f, count: 1))
                }
            }
            guard case .processed = r else { return false }
            sent = true
        } catch {
            sent = false
        }
        // Sent (the app holds the end now), or the listener is gone (its hangup cleans up).
        sys.close(appEnd)
        if !sent { remove(nc) }
        return true
    }

    static let recentlyDeliveredLimit = 1024

    /// What one accept message holds of its channel's send memory until the app receives it:
    /// SIOCOUTQ counts each unread message's skb truesize, the same for every message of one
    /// size and kernel. Measured once on a private channel; 0 if that fails.
    static let acceptMessageCharge: Int = {
        let sys = Sys.live
        guard let (a, b) = try? sys.socketpair(type: Int32(SOCK_SEQPACKET.rawValue)) else { return 0 }
        defer { sys.close(a); sys.close(b) }
        var msg = RPCCodec.acceptMessage(local: nil, peer: nil)
        var fd = b
        let sent = withUnsafeBytes(of: &msg) { m in
            withUnsafePointer(to: &fd) { f in
                try? sys.sendWithFDs(a, m, fds: UnsafeBufferPointer(start: f, count: 1))
            }
        }
        guard case .processed? = sent else { return 0 }
        return sys.unreadSentBytes(a)
    }()

    /// Connections of listener `c` its app has not accepted yet: those in its accept channel
    /// and those waiting to go in. Linux's accept queue holds them (`listen` tells the stack).
    /// Counting the channel costs an ioctl; while `c.channelBound` (what it held when last
    /// counted plus what was sent since: never fewer than it holds) leaves `room`, that bound
    /// answers, which a server accepting as fast as it can keeps far below its backlog.
    func unaccepted(_ c: Connection, room: Int = 0) -> Int {
        let bound = c.undelivered.count + c.channelBound
        if bound <= room { return bound }
        var n = c.undelivered.count
        c.channelBound = 0
        let charge = Self.acceptMessageCharge
        if charge > 0, let ch = c.data, !ch.isClosed {
            c.channelBound = (sys.unreadSentBytes(ch.fd) + charge - 1) / charge
            n += c.channelBound
        }
        return n
    }

    private func noteDelivered(_ nc: Connection, by listener: Connection) {
        if listener.recentlyDelivered.count >= Self.recentlyDeliveredLimit { listener.recentlyDelivered.removeFirst(256) }
        listener.recentlyDelivered.append(nc)
        nc.deliveredBy = listener
    }

    /// The listener closed: connections still queued in its accept channel are closed by the
    /// kernel with it, and Linux resets queued connections. Those sent lately that show no sign
    /// of the app (nothing written) are reset when their end hangs up now or very soon.
    func listenerClosed(_ l: Connection) {
        let now = Self.now()
        for d in l.recentlyDelivered where d.bytesOut == 0 && d.handle != nil && byKey[d.key] === d {
            if let s = d.data, !s.isClosed, sys.peerHungUp(s.fd) {
                reset(d)
            } else {
                d.orphanedUntil = now + .milliseconds(200)
            }
        }
        l.recentlyDelivered.removeAll()
    }
}
