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
            c.undelivered.removeFirst()
            pumpOut(first.conn)
        }
        loop.setNotifyWritable(ch, false)
        while let nh = (try? stack.tcp.accept(h)) ?? nil {
            let pair: (Int32, Int32)
            do throws(Errno) {
                pair = try sys.socketpair(type: Int32(SOCK_STREAM.rawValue))
            } catch {
                if let suppressed = gate.admitLog("accept-socketpair") {
                    logger.warning("accept: socketpair failed; connection reset",
                                   metadata: ["network": "\(network)", "errno": "\(error.rawValue)", "suppressed": "\(suppressed)"])
                }
                stack.tcp.abort(nh)
                return
            }
            let (appEnd, ours) = pair
            guard let key = FDKey.of(appEnd) else {
                sys.close(appEnd); sys.close(ours); stack.tcp.abort(nh)
                continue
            }
            let nc = Connection(key: key, pid: c.pid, uid: c.uid)
            nc.options = c.options
            nc.options.reuseAddr = false
            // Charged to the listener's owner; over its budget the connection is reset.
            if chargeNew(nc, bytes: ringBytes(nc.options)) != nil {
                sys.close(appEnd); sys.close(ours); stack.tcp.abort(nh)
                continue
            }
            nc.handle = nh
            nc.phase = .connected(reported: true)
            nc.local = stack.tcp.localEndpoint(nh)
            nc.remote = stack.tcp.remoteEndpoint(nh)
            do {
                try Sys.setNonBlocking(ours)
                nc.data = try loop.add(fd: ours, kind: .connected, context: .tcp(nc))
            } catch {
                sys.close(appEnd); sys.close(ours)
                stack.tcp.abort(nh)
                refund(nc)
                continue
            }
            register(nc)
            byHandle[nh] = nc
            if !sendAccept(ch, nc, appEnd) {
                c.undelivered.append((nc, appEnd))
                loop.setNotifyWritable(ch, true)
                return
            }
            pumpOut(nc)
        }
    }

    /// One ztrpc_accept_msg + SCM_RIGHTS(app end). False if the channel is full (app not accepting).
    private func sendAccept(_ ch: LoopSocket, _ nc: Connection, _ appEnd: Int32) -> Bool {
        var msg = RPCCodec.acceptMessage(local: nc.local, peer: nc.remote)
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

    /// Something on the accept channel: the app never writes there, so this is its close.
    func acceptChannelReadable(_ c: Connection, _ s: LoopSocket) {
        switch try? sys.recv(s.fd, into: scratch) {
        case .wouldBlock?: return
        case .processed(let n)? where n > 0: return
        default: remove(c)   // EOF or an error: the listener is closed
        }
    }
}
