import CShims
import CZTRPC
import Logging
import NetStack
import PhyLoop
import SystemPackage
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

/// Intercepted TCP sockets of one network: their ops (CONNECT, BIND, LISTEN, options, names),
/// their lifecycle (`Connection.Phase`), the stack's events for them, and (in TCPPump.swift and
/// AcceptChannel.swift) the byte pumps and the accept channel. Runs on the network's loop thread.
///
/// Tables: `byKey` holds the sockets an app can name (by the inode of its end); `byHandle` every
/// socket with a stack handle, including those only draining after their app closed.
final class TCPBridge {
    let loop: any SocketLoop
    let driver: StackDriver
    let replier: RPCReplier
    let logger: Logger
    let network: String
    let gate: BudgetGate
    var sys: Sys { loop.sys }
    var stack: NetStack? { driver.netStack }

    private(set) var byKey: [FDKey: Connection] = [:]
    var byHandle: [SocketHandle: Connection] = [:]
    /// Sockets whose app's close cannot be seen any more — a failed connect (our end is closed:
    /// that is how the app sees POLLERR), or both halves shut down (our end shows POLLHUP while
    /// the app may still hold its fd) — stay this long for names and SO_ERROR, then go.
    var lingering: [(conn: Connection, until: Instant)] = []
    static let lingerTime = Duration.seconds(60)
    /// Owners of plugged connects, watched so that a dead one's connect does not outlive it.
    var plugOwners = PlugOwners()
    /// Socketpairs made in idle moments for the connections listeners accept (SparePairs.swift).
    var spares = SparePairs()
    /// Scratch space for bytes read and dropped.
    let scratch: UnsafeMutableRawBufferPointer
    /// Shared with the UDP bridge: interface, cookies (TCPBridgeOptions.swift).
    var optionEnv = OptionEnvironment(interfaceName: nil)
    /// The batch of one-way messages being applied (InterceptHub.readChannel), 0 outside one.
    /// Every message of a batch was sent before it was read, so whatever the app wrote before
    /// any of them is in its socket by then: the batch's first toggle on a connection reads it,
    /// the others need not read again (`setsockopt`).
    var oneWayBatch: UInt64 = 0
    private var batches: UInt64 = 0
    func beginOneWayBatch() { batches &+= 1; oneWayBatch = batches }
    func endOneWayBatch() { oneWayBatch = 0 }

    init(loop: any SocketLoop, driver: StackDriver, replier: RPCReplier, logger: Logger, network: String,
         gate: BudgetGate) {
        self.gate = gate
        self.loop = loop
        self.driver = driver
        self.replier = replier
        self.logger = logger
        self.network = network
        scratch = .allocate(byteCount: 65536, alignment: 16)
    }

    deinit { scratch.deallocate() }

    static func now() -> Instant { Instant(nanoseconds: Sys.monotonicNanoseconds()) }

    var count: Int { byKey.count }

    // MARK: - Tables

    /// The socket named `key`, after dropping a stale entry whose app end is gone (inode reuse).
    func lookup(_ key: FDKey) -> Connection? {
        guard let c = byKey[key] else { return nil }
        if isStale(c.data) {
            appGone(c)
            return byKey[key] === c ? c : nil
        }
        return c
    }

    /// The socket a one-way message names by reference (ztrpc.h "References"): the identity and
    /// the secret must both match. No stale check is needed: a socket that took over a freed
    /// inode has a secret of its own.
    func lookup(_ ref: ztrpc_sockref) -> Connection? {
        guard ref.secret != 0, let c = byKey[FDKey(dev: ref.dev, ino: ref.ino)], c.secret == ref.secret else { return nil }
        return c
    }

    /// True if our end shows that the app's end was closed (a hangup not processed yet).
    private func isStale(_ s: LoopSocket?) -> Bool {
        guard let s, !s.isClosed else { return false }
        return sys.peerHungUp(s.fd)
    }

    /// A new socket takes `key`: a leftover entry with it belongs to a socket that is gone.
    func forget(_ key: FDKey) {
        if let old = byKey[key] {
            // One still draining (kept nameable after a shutdown, see `appShutRead`) goes on
            // through its stack handle.
            if old.phase == .draining { byKey[key] = nil; return }
            appGone(old)
            if byKey[key] === old { remove(old) }
        }
    }

    func register(_ c: Connection) { byKey[c.key] = c }

    /// `c` is known by a new app end from now on (LISTEN's accept channel, RENEW's pair).
    func rekey(_ c: Connection, _ newKey: FDKey, udpForget: (FDKey) -> Void) {
        if byKey[c.key] === c { byKey[c.key] = nil }
        // A leftover entry under the new identity belongs to a socket that is gone.
        if let old = byKey[newKey], old !== c { remove(old) }
        udpForget(newKey)
        c.key = newKey
        byKey[newKey] = c
    }

    /// The loop is shutting down (the sockets themselves are closed by the loop).
    func shutdown() {
        if let stack {
            for (h, _) in byHandle { stack.tcp.abort(h, now: Self.now()) }
        }
        for c in byHandle.values { refund(c) }
        for c in byKey.values {
            refund(c)
            // The app ends of pending connects are ours alone to close (they are not the loop's);
            // our end first, so the app end is never writable without the hang-up (see fail).
            if let p = c.plug {
                c.plug = nil
                if let d = c.data { loop.close(d); c.data = nil }
                unplug(p, drainingFrom: nil)
            }
        }
        plugOwners.closeAll()
        spares.closeAll(sys: sys)
        byHandle.removeAll()
        byKey.removeAll()
    }

    /// The stack was replaced (reconfigure): every intercepted socket lost its stack side.
    func stackReplaced() {
        // Sockets apps can name, plus those only draining after their app closed.
        var all = Array(byKey.values)
        for c in byHandle.values where byKey[c.key] !== c { all.append(c) }
        // Handles of the old stack may name sockets of the new one: forget them all before
        // anything below could pass one to the new stack.
        byHandle.removeAll()
        for c in all {
            c.handle = nil
            // Bindings of the old stack's port table mean nothing to the new one's.
            c.binding = nil
            for (conn, _) in c.undelivered { conn.handle = nil; conn.binding = nil }
        }
        for c in all {
            c.pendingError = ECONNRESET
            if byKey[c.key] === c { fail(c) } else { remove(c) }
        }
    }

    // MARK: - Ports

    /// Takes `ep` (port 0: an ephemeral port) for `c` in the stack's port table; returns an errno
    /// on conflict.
    func reserve(_ ep: IPEndpoint, for c: Connection) -> Int32? {
        guard let stack else { return ENETDOWN }
        // The stack's services listen on the wildcard address: no app may shadow them, not even
        // with an exact address (Linux: EADDRINUSE for a port another socket listens on).
        if ep.port != 0 && isServicePort(ep.port) { return EADDRINUSE }
        do {
            let b = try stack.ports.bind(.tcp, ep, options: c.portOptions)
            c.binding = b
            c.local = b.local
            return nil
        } catch {
            return Wire.errno(error)
        }
    }

    /// Whether the stack itself listens on TCP `port` (its diagnostic services): O(1), so an
    /// explicit bind never scans the stack's sockets.
    func isServicePort(_ port: UInt16) -> Bool {
        guard let services = stack?.config.services, !services.isEmpty else { return false }
        return services.contains { s in
            switch s {
            case .echo: port == 7
            case .discard: port == 9
            case .chargen: port == 19
            }
        }
    }

    func unreserve(_ c: Connection) {
        guard let b = c.binding else { return }
        c.binding = nil
        stack?.ports.release(b)
    }

    // MARK: - Waiters

    func wait(_ w: Waiter, _ peer: RPCPeer) {
        w.connection.waiters.append(w)
        peer.waiter = w
    }

    /// The library gave up waiting (signal, SO_SNDTIMEO): the connect goes on.
    func cancel(_ w: Waiter) {
        w.connection.waiters.removeAll { $0 === w }
    }

    /// Answers every blocking CONNECT waiting on `c` now that its outcome is known.
    func settle(_ c: Connection) {
        let ws = c.waiters
        c.waiters.removeAll()
        for w in ws { answer(w, c) }
    }

    private func answer(_ w: Waiter, _ c: Connection) {
        if case .rpc(let peer) = w.socket.context { peer.waiter = nil }
        switch c.phase {
        case .connected:
            if replier.ok(w.socket, w.header, .info(c.info)) { c.reportedConnected = true }
        case .connecting:
            replier.fail(w.socket, w.header, EINPROGRESS, .info(c.info))
        default:
            let e = c.pendingError != 0 ? c.pendingError : ECONNREFUSED
            if replier.fail(w.socket, w.header, e, .info(c.info)) {
                c.pendingError = 0
                // A failed blocking connect of a new socket leaves the app with its kernel
                // socket: the library closes the socketpair, so our state for it goes too. An
                // existing socket is unconnected again, as Linux's (a new connect renews it).
                if w.newSocket { remove(c) } else { disconnect(c, now: Self.now()) }
            }
        }
    }

    /// Both halves are shut down (the app's FIN and the peer's both passed on): nothing more can
    /// move, and our end's POLLHUP no longer tells whether the app closed. The TCP connection
    /// finishes on its own; the socket stays nameable (getpeername, SO_ERROR) for a while.
    func retire(_ c: Connection) {
        if let h = c.handle {
            keepInfo(c, h)
            byHandle[h] = nil
            stack?.tcp.release(h, now: Self.now())
            c.handle = nil
        }
        if let d = c.data { loop.close(d); c.data = nil }
        c.phase = .closed
        // What lingers is a name only (the hang-up may have been the app's close): it holds
        // nothing of its owner's budgets, or closes that follow the peer's would use them up,
        // nor a port it bound (a new bind with SO_REUSEADDR must find it free, as on Linux).
        refund(c)
        unreserve(c)
        settle(c)
        linger(c)
    }

    // MARK: - Stack events

    func stackEvent(_ e: SocketEvent) {
        switch e {
        case .connected(let h):
            guard let c = byHandle[h], let stack else { return }
            c.phase = .connected
            if let p = c.plug { c.plug = nil; unplug(p, drainingFrom: c.data) }
            c.local = stack.tcp.localEndpoint(h) ?? c.local
            c.remote = stack.tcp.remoteEndpoint(h) ?? c.remote
            if let d = c.data { loop.setNotifyReadable(d, true) }
            settle(c)
            pumpOut(c)
        case .readable(let h):
            if let c = byHandle[h] { pumpOut(c) }
        case .writable(let h):
            if let c = byHandle[h] { pumpIn(c) }
        case .acceptable(let h):
            if let c = byHandle[h] { deliverAccepts(c) }
        case .failed(let h, let err):
            guard let c = byHandle[h] else { return }
            c.pendingError = Wire.errno(err)
            fail(c)
        case .closed(let h):
            guard let c = byHandle[h] else { return }
            pumpOut(c)
            if let rx = stack?.tcp.receiveBuffer(h), rx.count > 0, c.inbound != .discarding, let d = c.data, !d.isClosed {
                // The app has not taken everything yet: keep the handle, whose receive ring
                // still holds the bytes, until pumpOut has delivered them (then the FIN).
                c.phase = .closing
                settle(c)
                return
            }
            releaseClosed(c, h)
        }
    }

    /// The connection closed normally and the app has all its bytes: drop the stack's handle and
    /// give the app its EOF.
    func releaseClosed(_ c: Connection, _ h: SocketHandle) {
        keepInfo(c, h)
        c.phase = .closed
        byHandle[h] = nil
        stack?.tcp.release(h, now: Self.now())
        c.handle = nil
        deliverEOF(c)
        settle(c)
    }

    /// Keeps what TCP_INFO shows of `c` before its handle `h` goes (`Connection.closedInfo`).
    func keepInfo(_ c: Connection, _ h: SocketHandle) {
        guard var i = stack?.tcp.info(h) else { return }
        i.state = .closed
        c.closedInfo = i
    }

    /// Shuts our end down for writing: the app reads EOF (once).
    func deliverEOF(_ c: Connection) {
        guard c.inbound != .eofDelivered, let d = c.data, !d.isClosed else { return }
        sys.shutdown(d.fd, Int32(SHUT_WR))
        c.inbound = .eofDelivered
    }

    /// The TCP connection ended with an error: the app reads EOF, SO_ERROR tells why.
    func fail(_ c: Connection) {
        if let h = c.handle {
            if c.isConnected { keepInfo(c, h) }
            byHandle[h] = nil
            stack?.tcp.release(h, now: Self.now())
            c.handle = nil
        }
        if c.phase == .listening {
            remove(c)
            return
        }
        if let p = c.plug {
            c.phase = .closed
            // A failed non-blocking connect: closing our end with the filler unread gives the app
            // end POLLERR|POLLHUP (and POLLOUT once unplugged), as Linux shows for a failed
            // connect. Our end goes first: the app end must never be writable without the
            // hang-up, which the library reads as "connected" (zti_tcp_quiet). The app's close
            // cannot be seen after that: the entry lingers for SO_ERROR.
            c.plug = nil
            if let d = c.data { loop.close(d); c.data = nil }
            unplug(p, drainingFrom: nil)
            linger(c)
            settle(c)
            return
        }
        if c.phase == .draining {
            // The app is gone already: nothing to tell it.
            remove(c)
            return
        }
        c.phase = .closed
        if let d = c.data {
            // Like Linux after a reset or a timeout, the app sees the end at once: POLLHUP, what
            // was delivered and then EOF, EPIPE on writes; and POLLERR with ECONNRESET on reads
            // when bytes it wrote were still on their way (our end closes with them unread).
            // Its close cannot be seen after that: the entry lingers for SO_ERROR and names.
            loop.close(d)
            c.data = nil
            linger(c)
        }
        settle(c)
    }

    /// The app's end is closed (hangup): finish sending what it wrote, then close.
    /// `unreadInput`: the app closed with bytes we delivered still unread (our end reported
    /// ECONNRESET); found here too by reading our end's SO_ERROR.
    func appGone(_ c: Connection, unreadInput: Bool = false) {
        if c.phase == .listening { remove(c); return }
        if c.outbound == .finQueued && c.inbound == .eofDelivered && c.data != nil {
            retire(c)
            return
        }
        guard let h = c.handle, c.isConnected || c.phase == .draining, let stack else {
            remove(c)
            return
        }
        if closeResets(c, unreadInput: unreadInput) {
            reset(c)
            return
        }
        if c.options.abortsOnClose {
            // SO_LINGER {1, 0}: reset at once.
            byHandle[h] = nil
            stack.tcp.abort(h, now: Self.now())
            c.handle = nil
            remove(c)
            return
        }
        // No app can name this socket any more (its end is closed; the inode may be reused by a
        // new socket): it only drains now, found through its stack handle.
        // (Unless the hang-up may be its shutdown(SHUT_RDWR): then it stays nameable.)
        if byKey[c.key] === c && !c.appShutRead { byKey[c.key] = nil }
        c.phase = .draining
        if let tx = stack.tcp.sendBuffer(h), tx.free == 0 {
            // Nothing can be read now. Re-arming the fd would only bring the (unmaskable) hangup
            // straight back: stay suspended; the stack's .writable calls pumpIn, which reads.
            return
        }
        if let d = c.data { loop.setNotifyReadable(d, true) }
        // Reads the rest; EOF with HUP ends in finish(c). A full send buffer waits for .writable.
        pumpIn(c)
    }

    /// Forgets `c` entirely: its daemon end is closed, its port released, its waiters answered.
    func remove(_ c: Connection) {
        refund(c)
        if c.phase == .listening { listenerClosed(c) }
        if byKey[c.key] === c { byKey[c.key] = nil }
        if let h = c.handle {
            byHandle[h] = nil
            stack?.tcp.abort(h, now: Self.now())
            c.handle = nil
        }
        unreserve(c)
        // Our end before the plug (see fail): writable only together with the hang-up.
        if let d = c.data { loop.close(d); c.data = nil }
        if let p = c.plug { c.plug = nil; unplug(p, drainingFrom: nil) }
        for (conn, appEnd) in c.undelivered {
            sys.close(appEnd)
            remove(conn)
        }
        c.undelivered.removeAll()
        c.phase = .closed
        let ws = c.waiters
        c.waiters.removeAll()
        for w in ws {
            if case .rpc(let peer) = w.socket.context { peer.waiter = nil }
            replier.fail(w.socket, w.header, c.pendingError != 0 ? c.pendingError : ECONNABORTED)
        }
    }
}
