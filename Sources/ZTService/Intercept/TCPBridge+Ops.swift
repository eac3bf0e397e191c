import CShims
import CZTRPC
import NetStack
import PhyLoop
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// TCPBridge's ops on a socket: CONNECT (with Linux's reconnect after a failure: disconnect, the
// pair dropped and renewed by RENEW), BIND and LISTEN. TCPBridge.swift holds the tables, the
// waiters and what the stack's events do to a connection.
extension TCPBridge {
    func connect(_ call: inout RPCCall, _ sr: ztrpc_sock_req, newSocket: (key: FDKey, fd: Int32)?,
                 preOptions: [SocketOptionRecord] = []) -> RPCOutcome {
        var newFD = newSocket?.fd ?? -1
        let nonblocking = sr.flags & ZTRPC_F_NONBLOCK != 0
        let now = Self.now()   // one clock read for the whole request
        // A plugged app end (ztrpc.h, CONNECT): ours until the outcome, unplugged on any answer
        // that starts no handshake.
        var plug: Plug?
        if sr.filler > 0, let appEnd = call.take(0) {
            plug = Plug(appEnd: appEnd, filler: Int(sr.filler), sndbuf: sr.sndbuf, since: now)
        }
        var existing: Connection?
        defer {
            if newFD >= 0 { sys.close(newFD) }
            if let p = plug { unplug(p, drainingFrom: existing?.data) }
        }
        guard let stack else { return .fail(ENETDOWN, .none) }
        let dst = Wire.endpoint(sr.addr)
        let c: Connection
        if let n = newSocket {
            c = Connection(key: n.key, pid: sr.ownerPID(peer: call.peer.pid), uid: call.peer.uid)
            c.family = Wire.family(sr)
            c.v6Only = sr.v6Only
            c.seccomp = sr.fromSeccomp
            c.options = SocketOptions(sr.opts)
            applyPreOptions(call, c, preOptions)
            if let e = chargeNew(c, bytes: ringBytes(c.options)) { return .fail(e, .none) }
        } else {
            let key = plug.flatMap { FDKey.of($0.appEnd) } ?? call.fds.first.flatMap(FDKey.of)
            guard let key, let found = lookup(key) else { return .fail(call.notFoundErrno, .none) }
            c = found
            existing = c
        }
        if dst.address.isUnspecified && dst.port == 0 {
            // connect(AF_UNSPEC): drop the connection (RST), the socket becomes unconnected.
            if c.handle != nil, c.phase == .connecting || c.isConnected {
                disconnect(c, now: now)
                dropPair(c, appEnd: plug?.appEnd ?? call.fds.first ?? -1)
                c.pendingError = ECONNRESET   // tcp_disconnect's sk_err, for SO_ERROR
            }
            if newSocket != nil { refund(c) }   // a new socket that is dropped again holds nothing
            return .ok(.info(c.info))
        }
        switch c.phase {
        case .connecting:
            return .fail(EALREADY, .info(c.info))
        case .connected:
            if !c.reportedConnected { c.reportedConnected = true; return .ok(.info(c.info)) }
            return .fail(EISCONN, .info(c.info))
        case .closed, .closing:
            if c.reportedConnected { return .fail(EISCONN, .info(c.info)) }
            // Linux's socket still says "connecting" (SS_CONNECTING) while its connection is
            // over: the connect reports the error (or ECONNABORTED) and leaves it unconnected.
            let e = c.pendingError != 0 ? c.pendingError : ECONNABORTED
            c.pendingError = 0
            disconnect(c, now: now)
            dropPair(c, appEnd: plug?.appEnd ?? call.fds.first ?? -1)
            return .fail(e, .info(c.info))
        case .listening, .draining:
            return .fail(EISCONN, .info(c.info))
        case .unbound, .bound:
            // Its pair went with a failed connect: the library brings a new one (RENEW) first.
            if newSocket == nil && c.data == nil { return .fail(ZTRPC_E_RENEW, .none) }
        }
        // An AF_INET6 socket reaches IPv4 given as ::ffff:a.b.c.d unless IPV6_V6ONLY (Linux:
        // ENETUNREACH); an AF_INET one only IPv4. A new socket refused here holds nothing.
        let familyError: Int32? = c.family == AF_INET && !dst.address.isV4 ? EAFNOSUPPORT
            : c.v6Only && dst.address.isV4 ? ENETUNREACH : nil
        if let e = boundElsewhere(c) ?? familyError {
            if newSocket != nil { refund(c) }
            return .fail(e, .none)
        }
        c.options.connected()
        if newSocket == nil, let e = chargeRings(c) { return .fail(e, .none) }
        let h: SocketHandle
        do {
            let wildcard = IPEndpoint(c.family == AF_INET6 ? IPAddress.v6Any : IPAddress.v4Any, 0)
            // Only a bound socket keeps its port (after connect(AF_UNSPEC) `local` is just a name).
            h = try stack.tcpConnect(local: c.binding != nil ? (c.local ?? wildcard) : wildcard, remote: dst, now: now)
        } catch {
            if newSocket != nil { refund(c) }
            return .fail(Wire.errno(error), .none)
        }
        for o in c.options.tcpOptions { try? stack.tcp.setOption(h, o, now: now) }
        attachRingBudget(stack)
        c.handle = h
        c.closedInfo = nil
        c.pendingError = 0   // tcp_connect_init clears sk_err
        byHandle[h] = c
        stack.tcp.setDirectReceive(h, true)
        c.local = stack.tcp.localEndpoint(h)
        c.remote = dst
        c.phase = .connecting
        if newSocket != nil {
            do {
                // Not read until connected: only a hangup (the app closed it) matters before.
                sys.keepOutOfBandInline(newFD)
                c.data = try loop.add(fd: newFD, kind: .connected, context: .tcp(c), readable: false)
            } catch {
                byHandle[h] = nil
                stack.tcp.abort(h, now: now)
                refund(c)
                return .fail(error.rawValue, .none)
            }
            newFD = -1
            register(c)
        }
        // The plug makes POLLOUT wait for the outcome (also after an interrupted blocking connect).
        c.plug = plug
        if plug != nil { plugOwners.add(c, now: now) }
        plug = nil
        if nonblocking { return .fail(EINPROGRESS, .info(c.info)) }   // at once, like Linux
        wait(Waiter(socket: call.socket, header: call.header, connection: c, newSocket: newSocket != nil), call.peer)
        return .pending
    }

    /// Linux's tcp_disconnect: the connection goes (reset if it is live) and the socket is
    /// unconnected, with its options and an explicit bind. Its name forgets the source address
    /// unless the app bound one and goes on showing the port number: ANY:eph.
    func disconnect(_ c: Connection, now: Instant) {
        if let h = c.handle {
            byHandle[h] = nil
            stack?.tcp.abort(h, now: now)
            refundTuned(c)
            c.handle = nil
        }
        let bound = c.binding?.local ?? c.parkedBind
        c.phase = bound != nil ? .bound : .unbound
        c.reportedConnected = false
        if let l = c.local {
            let any = c.family == AF_INET6 ? IPAddress.v6Any : IPAddress.v4Any
            c.local = IPEndpoint(bound?.address ?? any, l.port)
        }
        c.outbound = .open
        c.inbound = .open
        if let p = c.plug { c.plug = nil; unplug(p, drainingFrom: c.data) }
        if let d = c.data { loop.setNotifyWritable(d, false) }
    }

    /// A disconnected socket's pair goes with its connection, as Linux's queues do: nothing the
    /// old connection left in it (the peer's unread bytes, its EOF, what the app wrote since) may
    /// reach a new one, which gets a new pair (RENEW). Our end closes with a byte sent from the
    /// app end `appEnd` (if given) unread in it, so the app end shows POLLERR|POLLHUP as Linux's
    /// disconnected socket does. The app's close can no longer be seen: the name lingers.
    func dropPair(_ c: Connection, appEnd: Int32) {
        guard let d = c.data else { return }
        if appEnd >= 0 && !d.isClosed {
            var b: UInt8 = 0
            _ = Glibc.send(appEnd, &b, 1, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
        }
        loop.close(d)
        c.data = nil
        linger(c)
    }

    /// Ends a plug: the app end's send buffer restored (waking writers and pollers), and with
    /// `drainingFrom` our end, the filler dropped so the app's own bytes come next.
    func unplug(_ p: Plug, drainingFrom d: LoopSocket?) {
        if let d, !d.isClosed {
            var left = p.filler
            while left > 0 {
                let chunk = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<min(left, scratch.count)])
                guard case .processed(let n)? = try? sys.recv(d.fd, into: chunk), n > 0 else { break }
                left -= n
            }
        }
        var v = p.sndbuf
        if v > 0 { _ = Glibc.setsockopt(p.appEnd, SOL_SOCKET, SO_SNDBUF, &v, socklen_t(MemoryLayout<Int32>.size)) }
        sys.close(p.appEnd)
    }

    func bind(_ call: inout RPCCall, _ sr: ztrpc_sock_req, newSocket: (key: FDKey, fd: Int32)?,
              preOptions: [SocketOptionRecord] = []) -> RPCOutcome {
        let ep = Wire.local(sr.addr, family: Wire.family(sr))
        guard let n = newSocket else {
            guard let fd = call.fds.first, let key = FDKey.of(fd), let c = lookup(key) else {
                return .fail(ENOTSOCK, .none)
            }
            guard c.phase == .unbound else { return .fail(EINVAL, .none) }
            if let e = reserve(ep, for: c) { return .fail(e, .none) }
            c.phase = .bound
            return .ok(.info(c.info))
        }
        let c = Connection(key: n.key, pid: sr.ownerPID(peer: call.peer.pid), uid: call.peer.uid)
        c.family = Wire.family(sr)
        c.v6Only = sr.v6Only
        c.seccomp = sr.fromSeccomp
        c.options = SocketOptions(sr.opts)
        applyPreOptions(call, c, preOptions)
        // A bound socket has no rings yet: they are charged when it connects.
        if let e = chargeNew(c, bytes: 0) { sys.close(n.fd); return .fail(e, .none) }
        if let e = reserve(ep, for: c) { sys.close(n.fd); refund(c); return .fail(e, .none) }
        do {
            // Not read until connected: only a hangup (the app closed it) matters here.
            sys.keepOutOfBandInline(n.fd)
            c.data = try loop.add(fd: n.fd, kind: .connected, context: .tcp(c), readable: false)
        } catch {
            sys.close(n.fd)
            unreserve(c)
            refund(c)
            return .fail(error.rawValue, .none)
        }
        c.phase = .bound
        register(c)
        return .ok(.info(c.info))
    }

    /// LISTEN: `call.fds` = [the socket, daemon end of the accept channel, app end of it].
    /// `udpForget` drops a stale UDP entry under the channel's identity.
    func listen(_ call: inout RPCCall, _ lr: ztrpc_listen_req, _ c: Connection, udpForget: (FDKey) -> Void) -> RPCOutcome {
        guard let stack else { return .fail(ENETDOWN, .none) }
        // Linux clamps to net.core.somaxconn (4096 by default); 0 stays 0 (one connection waits).
        let backlog = lr.backlog < 0 || lr.backlog > 4096 ? Int32(4096) : lr.backlog
        if c.phase == .listening {
            c.backlog = backlog
            if let h = c.handle { stack.tcp.setBacklog(h, Int(backlog)) }
            return .ok(.none)
        }
        guard c.phase == .bound || c.phase == .unbound else { return .fail(EINVAL, .none) }
        guard call.fds.count >= 3, call.fds[1] >= 0, call.fds[2] >= 0,
              Self.isUnixSocket(call.fds[1], type: Int32(SOCK_SEQPACKET.rawValue)),
              Self.isUnixSocket(call.fds[2], type: Int32(SOCK_SEQPACKET.rawValue)),
              let newKey = FDKey.of(call.fds[2]) else { return .fail(EBADF, .none) }
        guard Trust.ownsSocketpairEnd(call.fds[1], peer: call.peer) else { return .fail(EBADF, .none) }
        let implicitBind = c.phase == .unbound
        let wildcard = IPEndpoint(c.family == AF_INET6 ? IPAddress.v6Any : IPAddress.v4Any, 0)
        if implicitBind, let e = reserve(wildcard, for: c) { return .fail(e, .none) }
        // A failure below must not leave the implicit bind's port reserved.
        func undoImplicitBind() {
            guard implicitBind else { return }
            unreserve(c)
            c.local = nil
            c.phase = .unbound
        }
        guard let binding = c.binding else { undoImplicitBind(); return .fail(EINVAL, .none) }
        let h: SocketHandle
        do {
            h = try stack.tcp.listen(binding: binding, backlog: Int(backlog), now: Self.now())
        } catch {
            undoImplicitBind()
            return .fail(Wire.errno(error), .none)
        }
        for o in c.options.tcpOptions { try? stack.tcp.setOption(h, o, now: Self.now()) }
        let chFD = call.take(1)!
        let channel: LoopSocket
        do {
            try Sys.makeNonBlockingSocket(chFD)
            // Never read: the library plugged the app end with filler messages so that the
            // listener never polls writable, as on Linux. The listener's close is the hang-up.
            channel = try loop.add(fd: chFD, kind: .connected, context: .acceptChannel(c), readable: false)
        } catch {
            sys.close(chFD)
            stack.tcp.abort(h, now: Self.now())
            undoImplicitBind()
            return .fail(error.rawValue, .none)
        }
        // The old data socket is replaced by the accept channel (the library dup3()s fds[2]).
        if let old = c.data { loop.close(old) }
        c.data = channel
        rekey(c, newKey, udpForget: udpForget)
        c.handle = h
        byHandle[h] = c
        // Connections in the accept channel are still in Linux's accept queue: they count
        // against the backlog when the stack decides whether a new handshake may complete.
        stack.tcp.setHeldByDriver(h) { [weak self, weak c] room in
            guard let self, let c else { return 0 }
            return self.unaccepted(c, room: room)
        }
        c.backlog = backlog
        c.phase = .listening
        return .ok(.none)
    }

    /// RENEW: `call.fds` = [the socket, daemon end of a new data socketpair, its app end]. A
    /// socket left unconnected by a failed connect gets the data pair a new connection needs
    /// (ztrpc.h); options, binding and secret stay.
    func renew(_ call: inout RPCCall, _ c: Connection, udpForget: (FDKey) -> Void) -> RPCOutcome {
        guard c.phase == .unbound || c.phase == .bound, c.data == nil else { return .fail(EINVAL, .none) }
        let stream = Int32(SOCK_STREAM.rawValue)
        guard call.fds.count >= 3, call.fds[1] >= 0, call.fds[2] >= 0,
              Self.isUnixSocket(call.fds[1], type: stream), Self.isUnixSocket(call.fds[2], type: stream),
              let newKey = FDKey.of(call.fds[2]) else { return .fail(EBADF, .none) }
        guard Trust.ownsSocketpairEnd(call.fds[1], peer: call.peer) else { return .fail(EBADF, .none) }
        // A name that lingered gave back what it held (its charge, its port): a socket again.
        let charged = c.charge == nil
        if charged, let e = chargeNew(c, bytes: 0) { return .fail(e, .none) }
        func undo(_ e: Int32) -> RPCOutcome {
            if c.parkedBind != nil { unreserve(c) }
            if charged { refund(c) }
            return .fail(e, .none)
        }
        if let p = c.parkedBind, let e = reserve(p, for: c) { return undo(e) }
        let fd = call.take(1)!
        do {
            try Sys.makeNonBlockingSocket(fd)
            // Not read until connected: only a hangup (the app closed it) matters before.
            sys.keepOutOfBandInline(fd)
            c.data = try loop.add(fd: fd, kind: .connected, context: .tcp(c), readable: false)
        } catch {
            sys.close(fd)
            return undo(error.rawValue)
        }
        c.parkedBind = nil
        rekey(c, newKey, udpForget: udpForget)
        c.droppedInput = false
        c.appShutRead = false
        c.urgentRoomGiven = false
        c.emptyReadOns = 0
        return .ok(.info(c.info))
    }
}
