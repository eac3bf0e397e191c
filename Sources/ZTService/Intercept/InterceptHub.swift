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

/// The daemon side of the intercept for one network: owns the RPC listener (RUN_DIR/NAME.sock)
/// and its peers, decodes each request and routes it to the TCP or UDP bridge; routes loop and
/// stack events the same way. It holds no socket state of its own. Loop thread only.
final class InterceptHub {
    let loop: any SocketLoop
    let driver: StackDriver
    let logger: Logger
    let network: String
    let path: String
    let access: AccessPolicy
    let tcp: TCPBridge
    let udp: UDPBridge
    /// Every socket end ztapd holds, by identity (HeldEnds.swift).
    let held: HeldEnds
    let replier: RPCReplier
    private var listener: LoopSocket?
    var sys: Sys { loop.sys }
    private var stack: NetStack? { driver.netStack }

    /// Pending RPC connections at most, in all and per user; more are closed at once. A blocking
    /// connect holds one until its outcome, so the bounds are generous; the per-user one keeps a
    /// flood from one user from locking the others out.
    let maxPeers = 4096
    var maxPeersPerUID: Int { gate.budgets.limits.pendingRequests }
    let gate: BudgetGate
    var peerCount = 0
    var peersByUID: [UInt32: Int] = [:]
    private(set) var refusedPeers: UInt64 = 0
    private var nextIdleScan: Instant?
    /// An RPC connection that sends nothing for this long is closed.
    let peerIdle = Duration.seconds(10)

    private let requestBuffer: UnsafeMutableRawBufferPointer

    /// Each process's one-way channel (ztrpc.h ZTRPC_OP_NOREPLY), by pid: read before that
    /// process's other requests, so its options apply in the order it set them. Channels count
    /// as peers; a user gets at most `maxChannelsPerUID` (the library falls back to requests).
    var channels: [Int32: LoopSocket] = [:]
    var channelsByUID: [UInt32: Int] = [:]
    var channelCount = 0
    let maxChannelsPerUID = 128
    /// One-way messages taken from a channel per wake-up: one busy process cannot hold the loop.
    let channelBatch = 64
    /// One recvmmsg's worth of one-way messages (reused; loop thread only).
    private let channelMessages = MessageBatch(slots: 16, slotSize: Int(ZTRPC_MAX_MSG) + 64)
    /// One read of a pipe channel (PipeChannel.swift): ~110 of its 72-byte messages.
    let pipeBuffer: UnsafeMutableRawBufferPointer = .allocate(byteCount: 8192, alignment: 16)

    /// `interfaceName`: the network's TAP (the device SO_BINDTODEVICE accepts).
    init(network: String, path: String, access: AccessList, loop: any SocketLoop, driver: StackDriver,
         logger: Logger, interfaceName: String? = nil, budgets: UserBudgets = UserBudgets()) throws(Errno) {
        gate = BudgetGate(budgets: budgets, logger: logger, network: network)
        self.network = network
        self.path = path
        self.access = AccessPolicy(access)
        let held = HeldEnds(loop)
        self.held = held
        self.loop = held
        self.driver = driver
        self.logger = logger
        let loop: any SocketLoop = held
        replier = RPCReplier(loop: loop)
        tcp = TCPBridge(loop: loop, driver: driver, replier: replier, logger: logger, network: network, gate: gate)
        udp = UDPBridge(loop: loop, driver: driver, gate: gate)
        let env = OptionEnvironment(interfaceName: interfaceName)
        tcp.optionEnv = env
        udp.optionEnv = env
        requestBuffer = .allocate(byteCount: Int(ZTRPC_MAX_MSG) + 64, alignment: 16)
        do {
            try openListener()
        } catch {
            requestBuffer.deallocate()
            pipeBuffer.deallocate()
            throw error
        }
        tcp.attachDirectReceive()
    }

    deinit {
        requestBuffer.deallocate()
        pipeBuffer.deallocate()
    }

    static func now() -> Instant { Instant(nanoseconds: Sys.monotonicNanoseconds()) }

    private func openListener() throws(Errno) {
        let fd = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        // A file left by a previous run of this network is stale: the daemon's control socket
        // already guarantees only one ztapd per run directory.
        unlink(path)
        guard cshim_bind_unix(fd, path) == 0 else {
            let e = errno
            sys.close(fd)
            throw Errno(rawValue: e)
        }
        // Everyone may connect; SO_PEERCRED decides (refused peers get EACCES in a reply), or on a
        // session each message's SCM_CREDENTIALS: accepted connections inherit SO_PASSCRED, so
        // even a session's first message arrives with them.
        _ = chmod(path, 0o666)
        var on: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, socklen_t(MemoryLayout<Int32>.size))
        guard Glibc.listen(fd, 512) == 0 else {
            let e = errno
            sys.close(fd)
            unlink(path)
            throw Errno(rawValue: e)
        }
        do {
            try Sys.setNonBlocking(fd)
            listener = try loop.add(fd: fd, kind: .listener, context: .rpcListener)
        } catch {
            sys.close(fd)
            unlink(path)
            throw error
        }
    }

    /// Called when the loop shuts down (the sockets themselves are closed by the loop).
    func shutdown() {
        unlink(path)
        tcp.shutdown()
        udp.shutdown()
    }

    /// The stack was replaced (reconfigure): every intercepted socket lost its stack side.
    func stackReplaced() {
        tcp.stackReplaced()
        udp.stackReplaced()
        tcp.attachDirectReceive()
    }

    var socketCount: Int { tcp.count + udp.count }

    // MARK: - RPC peers

    func acceptPeer(fd: Int32) -> LoopContext? {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        guard cshim_peercred(fd, &pid, &uid, &gid) == 0 else { return nil }
        guard peerCount < maxPeers, peersByUID[uid, default: 0] < maxPeersPerUID else {
            refusedPeers &+= 1
            // A flood must not flood the journal too: the 1st, 2nd, 4th, 8th... refusal.
            if refusedPeers & (refusedPeers &- 1) == 0 {
                logger.warning("rpc: too many pending requests, refusing (\(refusedPeers) so far)",
                               metadata: ["network": "\(network)", "pid": "\(pid)", "uid": "\(uid)"])
            }
            return nil
        }
        // Checked per request: a user outside [Access] may still use sockets it holds.
        let allowed = access.permits(uid: uid, gid: gid)
        peerCount += 1
        peersByUID[uid, default: 0] += 1
        let now = Self.now()
        if nextIdleScan == nil { nextIdleScan = now + peerIdle }
        return .rpc(RPCPeer(pid: pid, uid: uid, gid: gid, allowed: allowed, opened: now))
    }

    private(set) var refusedRequests: UInt64 = 0

    /// A session message's credentials become the peer's identity for this request.
    private func adopt(_ cr: ReceivedMessage.Credentials, _ peer: RPCPeer) {
        guard cr.pid != peer.pid || cr.uid != peer.uid || cr.gid != peer.gid else { return }
        peer.pid = cr.pid
        peer.uid = cr.uid
        peer.gid = cr.gid
        peer.allowed = access.permits(uid: cr.uid, gid: cr.gid)
    }

    /// One log line for the 1st, 2nd, 4th, 8th... refusal: a loop of refused calls must not
    /// flood the journal.
    private func logNotInAccess(_ peer: RPCPeer) {
        refusedRequests &+= 1
        guard refusedRequests & (refusedRequests &- 1) == 0 else { return }
        logger.notice("rpc: refusing uid \(peer.uid) (pid \(peer.pid)): not in [Access] (\(refusedRequests) refusals so far)",
                      metadata: ["network": "\(network)"])
    }

    func peerClosed(_ peer: RPCPeer) {
        if peer.channel {
            channelCount -= 1
            let uid = peer.openerUID, pid = peer.openerPID
            if let n = channelsByUID[uid], n > 1 { channelsByUID[uid] = n - 1 } else { channelsByUID[uid] = nil }
            if let s = channels[pid], case .rpc(let p) = s.context, p === peer { channels[pid] = nil }
        }
        peerCount -= 1
        let uid = peer.openerUID
        if let n = peersByUID[uid], n > 1 { peersByUID[uid] = n - 1 } else { peersByUID[uid] = nil }
        if let w = peer.waiter { tcp.cancel(w) }
        peer.waiter = nil
    }

    /// One request: receive, decode, authorize, route, reply (now or when a waiter settles).
    func readRPC(_ socket: LoopSocket, _ peer: RPCPeer) {
        if peer.channel {
            // Drained (up to the batch), not one message per readiness: a channel holds only
            // net.unix.max_dgram_qlen (10) messages, and a full one sends the library to a
            // request of its own with the fd (measured: nginx's keep-alive then made ~140/s).
            readChannel(socket, peer)
            return
        }
        var fdStore = [Int32](repeating: -1, count: Int(ZTRPC_MAX_FDS))
        let received: ReceivedMessage
        do {
            let r = try fdStore.withUnsafeMutableBufferPointer { p throws(Errno) in
                try sys.recvWithFDs(socket.fd, into: requestBuffer, fds: p)
            }
            guard case .processed(let m) = r else { return }
            received = m
        } catch {
            loop.close(socket)
            return
        }
        var call = RPCCall(socket: socket, peer: peer, header: RPCHeader(op: 0, id: 0),
                           fds: Array(fdStore[0..<received.fdCount]))
        targetFD = -1
        defer { closeReceived(call.fds) }
        if received.count == 0 || peer.requested {
            // EOF, or a second message on a one-request channel (or on a session before its
            // reply): hang up.
            loop.close(socket)
            return
        }
        if peer.session {
            // Every message on a session names its sender (ztrpc.h): judged by those ids.
            guard let cr = received.credentials else {
                loop.close(socket)
                return
            }
            adopt(cr, peer)
        }
        peer.requested = true
        let decoded = RPCCodec.decode(UnsafeRawBufferPointer(rebasing: requestBuffer[0..<received.count]),
                                      truncated: received.truncated)
        let request: RPCRequest
        switch decoded {
        case .failure(let f):
            if f.header.noReply { loop.close(socket) } else { replier.fail(socket, f.header, f.errno) }
            return
        case .success(let (h, r)):
            call = RPCCall(socket: socket, peer: peer, header: h, fds: call.fds)
            request = r
        }
        if call.header.keep, !peer.session, !call.header.noReply {
            // The connection becomes a session: it stays open after the reply.
            peer.session = true
            if let cr = received.credentials { adopt(cr, peer) }
        }
        if peer.session {
            if call.header.noReply {
                loop.close(socket)
                return
            }
            peer.lastActive = Self.now()
        }
        if call.header.noReply {
            // Nobody waits. The first such message makes the connection its process's channel.
            guard request.mayGoUnanswered else {
                logger.debug("unanswerable request dropped", metadata: ["network": "\(network)", "op": "\(call.header.op)"])
                loop.close(socket)
                return
            }
            applyUnanswered(request, call)
            guard channelsByUID[peer.openerUID, default: 0] < maxChannelsPerUID else {
                loop.close(socket)
                return
            }
            adoptChannel(socket, peer)
            // The channel is its opener's for good (its messages are judged by `peer`): no
            // credentials with each message, which the kernel would attach and hand over at a
            // cost on both sides (SO_PASSCRED came with the accept).
            var off: Int32 = 0
            _ = setsockopt(socket.fd, SOL_SOCKET, SO_PASSCRED, &off, socklen_t(MemoryLayout<Int32>.size))
            return
        }
        // What this process sent one-way before this request comes first: also when its channel
        // is so new that it still waits on the listener (a session's request can come out of
        // epoll before the listener that holds it; a process whose old channel was closed by
        // the app has a new one there too). One accept4, EAGAIN as a rule.
        // (A request that creates a socket has nothing one-way before it: none can name it yet.)
        if !request.createsNewSocket {
            if let l = listener, !l.isClosed { loop.acceptPending(l) }
            if let ch = channels[peer.pid], !ch.isClosed, case .rpc(let cp) = ch.context { readChannel(ch, cp) }
        }
        guard peer.allowed || !request.createsPresence else {
            logNotInAccess(peer)
            replier.fail(socket, call.header, EACCES)
            return
        }
        switch route(request, &call) {
        case .ok(let b): replier.ok(socket, call.header, b)
        case .fail(let e, let b): replier.fail(socket, call.header, e, b)
        case .pending: break
        }
    }

    /// Messages on a process's one-way channel, in recvmmsg batches of `channelMessages.slots`
    /// and at most `channelBatch` per call (level-triggered readiness brings the loop back for
    /// the rest). Anything but a one-way option is dropped.
    func readChannel(_ socket: LoopSocket, _ peer: RPCPeer) {
        if peer.pipe != nil {
            readPipeChannel(socket, peer)
            return
        }
        var fdStore = (Int32(-1), Int32(-1), Int32(-1))   // ZTRPC_MAX_FDS, on the stack
        var open = true
        for _ in 0..<(channelBatch / channelMessages.slots) {
            let got: Int
            do {
                guard case .processed(let n) = try sys.recvBatch(socket.fd, channelMessages) else { return }
                got = n
            } catch {
                loop.close(socket)
                return
            }
            tcp.beginOneWayBatch()
            defer { tcp.endOneWayBatch() }
            for i in 0..<got {
                let received = withUnsafeMutableBytes(of: &fdStore) { raw in
                    sys.takeMessage(channelMessages, i, fds: raw.bindMemory(to: Int32.self))
                }
                // A message by reference has no fds: no array is made.
                let fds: [Int32] = received.fdCount == 0 ? [] : withUnsafeBytes(of: &fdStore) {
                    Array($0.bindMemory(to: Int32.self).prefix(received.fdCount))
                }
                targetFD = -1
                defer { closeReceived(fds) }
                // An empty message is the channel's end (what comes after it in the batch is only
                // taken, for its fds).
                guard open, received.count > 0 else {
                    if open { open = false; loop.close(socket) }
                    continue
                }
                applyOneWay(channelMessages.payload(i, count: received.count), truncated: received.truncated,
                            socket, peer, fds: fds)
            }
            // A short batch: the channel was empty after it (no read has to say EAGAIN).
            if !open || got < channelMessages.slots { return }
        }
    }

    /// One message of a one-way channel (either kind): applied if it is a one-way option, else
    /// dropped (nobody waits for an answer).
    func applyOneWay(_ message: UnsafeRawBufferPointer, truncated: Bool, _ socket: LoopSocket, _ peer: RPCPeer,
                     fds: [Int32]) {
        guard case .success(let (h, request)) = RPCCodec.decode(message, truncated: truncated), h.noReply,
              request.mayGoUnanswered else {
            logger.debug("one-way channel: message dropped", metadata: ["network": "\(network)", "pid": "\(peer.pid)"])
            return
        }
        applyUnanswered(request, RPCCall(socket: socket, peer: peer, header: h, fds: fds))
    }

    /// `socket` becomes the one-way channel of `peer`'s opener, read before that process's other
    /// requests (`channels`); counted per user for `maxChannelsPerUID`.
    func adoptChannel(_ socket: LoopSocket, _ peer: RPCPeer) {
        peer.channel = true
        channelCount += 1
        channelsByUID[peer.openerUID, default: 0] += 1
        channels[peer.openerPID] = socket
    }

    /// A one-way option (RPCRequest.mayGoUnanswered): applied to the TCP socket fds[0] names,
    /// counted like a reply.
    func applyUnanswered(_ request: RPCRequest, _ call: RPCCall) {
        let c: Connection, r: SocketOptionRecord
        switch request {
        case .setsockopt(let x):
            guard case .tcp(let t) = target(call) else { return }
            (c, r) = (t, x)
        case .setsockoptByRef(let x, let ref):
            guard call.fds.isEmpty, let t = tcp.lookup(ref) else { return }
            (c, r) = (t, x)
        default:
            return
        }
        let failed: Bool
        switch tcp.setsockopt(call, c, r) {
        case .fail: failed = true
        default: failed = false
        }
        replier.counters.replied(op: call.header.op, failed: failed)
    }

    /// The socket fds[0] names: TCP, UDP or neither.
    private enum Target {
        case tcp(Connection)
        case udp(UDPConnection)
        case none
    }

    private func target(_ call: RPCCall) -> Target {
        guard let fd = call.fds.first, fd >= 0, let key = FDKey.of(fd) else { return .none }
        if let c = tcp.lookup(key) { targetFD = fd; return .tcp(c) }
        if let u = udp.lookup(key) { targetFD = fd; return .udp(u) }
        return .none
    }

    /// The received fd that `target` found to be the app end of one of our sockets (-1: none)
    /// in the message being handled: a unix socket, so its close needs no linger check.
    private var targetFD: Int32 = -1

    /// Closes what a message brought and nobody took. An fd of unknown kind may be a TCP socket
    /// with SO_LINGER whose last reference this is: `closeUntrusted` keeps that from blocking.
    private func closeReceived(_ fds: [Int32]) {
        for fd in fds where fd >= 0 {
            if fd == targetFD { sys.close(fd) } else { sys.closeUntrusted(fd) }
        }
        targetFD = -1
        held.expect(fd: -1, key: nil)
    }

    /// Validates and takes the new socketpair of a ZTRPC_F_NEW request: (identity, daemon end).
    private func takeNew(_ call: inout RPCCall, type: Int32) -> (key: FDKey, fd: Int32)? {
        // The daemon end's family is proven by ownsSocketpairEnd (an unnamed AF_UNIX name):
        // only its type is asked here.
        guard call.fds.count >= 2, call.fds[0] >= 0, call.fds[1] >= 0,
              TCPBridge.isUnixSocket(call.fds[0], type: type), TCPBridge.hasType(call.fds[1], type),
              let key = FDKey.of(call.fds[0]) else { return nil }
        guard Trust.ownsSocketpairEnd(call.fds[1], peer: call.peer),
              let daemonKey = freshPair(app: key, daemon: call.fds[1]) else {
            foreignSocket(call.peer)
            return nil
        }
        held.expect(fd: call.fds[1], key: daemonKey)
        do { try Sys.makeNonBlockingSocket(call.fds[1]) } catch { return nil }
        // A leftover entry with this inode belongs to a socket that is gone: finish it first.
        tcp.forget(key)
        udp.forget(key)
        return (key, call.take(1)!)
    }

    private func route(_ request: RPCRequest, _ call: inout RPCCall) -> RPCOutcome {
        let stream = Int32(SOCK_STREAM.rawValue), seqpacket = Int32(SOCK_SEQPACKET.rawValue)
        switch request {
        case .connect(let sr, let pre):
            let isNew = sr.flags & ZTRPC_F_NEW != 0
            if sr.proto == IPProtocol.udp {
                var n: (key: FDKey, fd: Int32)?
                if isNew {
                    guard stack != nil else { return .fail(ENETDOWN, .none) }
                    guard let x = takeNew(&call, type: seqpacket) else { return .fail(EBADF, .none) }
                    n = x
                }
                return udp.connect(call, sr, newSocket: n, preOptions: pre)
            }
            guard sr.proto == IPProtocol.tcp else { return .fail(EPROTONOSUPPORT, .none) }
            guard stack != nil else { return .fail(ENETDOWN, .none) }
            var n: (key: FDKey, fd: Int32)?
            if isNew {
                guard let x = takeNew(&call, type: stream) else { return .fail(EBADF, .none) }
                n = x
            }
            return tcp.connect(&call, sr, newSocket: n, preOptions: pre)
        case .bind(let sr, let pre), .udpOpen(let sr, let pre):
            var udpOpen = false
            if case .udpOpen = request { udpOpen = true }
            let isNew = sr.flags & ZTRPC_F_NEW != 0
            guard let stack else { return .fail(ENETDOWN, .none) }
            let ep = udpOpen ? sr.wildcard : Wire.local(sr.addr, family: Wire.family(sr))
            // An AF_INET socket binds IPv4 only; an IPV6_V6ONLY one no v4-mapped address (EINVAL).
            if let e = sr.familyError(ep.address, mapped: EINVAL) { return .fail(e, .none) }
            guard ep.address.isUnspecified || stack.isLocalAddress(ep.address) else {
                return .fail(EADDRNOTAVAIL, .none)
            }
            if let e = checkPrivilegedPort(ep.port, call) { return .fail(e, .none) }
            if sr.proto == IPProtocol.udp {
                var n: (key: FDKey, fd: Int32)?
                if isNew {
                    guard let x = takeNew(&call, type: seqpacket) else { return .fail(EBADF, .none) }
                    n = x
                }
                return udp.bind(call, sr, newSocket: n, local: ep, preOptions: pre)
            }
            guard sr.proto == IPProtocol.tcp, !udpOpen else { return .fail(EPROTONOSUPPORT, .none) }
            var n: (key: FDKey, fd: Int32)?
            if isNew {
                guard let x = takeNew(&call, type: stream) else { return .fail(EBADF, .none) }
                n = x
            }
            return tcp.bind(&call, sr, newSocket: n, preOptions: pre)
        case .listen(let lr):
            guard stack != nil else { return .fail(ENETDOWN, .none) }
            if call.fds.count >= 3, call.fds[1] >= 0, call.fds[2] >= 0, !isFreshPair(call.fds[2], call.fds[1]) {
                foreignSocket(call.peer)
                return .fail(EBADF, .none)
            }
            switch target(call) {
            case .tcp(let c): return tcp.listen(&call, lr, c, udpForget: { [udp] in udp.forget($0) })
            case .udp: return .fail(EOPNOTSUPP, .none)
            case .none: return .fail(call.notFoundErrno, .none)
            }
        case .getsockopt(let so):
            switch target(call) {
            case .tcp(let c): return tcp.getsockopt(call, c, so)
            case .udp(let u): return udp.getsockopt(call, u, so)
            case .none: return .fail(call.notFoundErrno, .none)
            }
        case .setsockopt(let so):
            switch target(call) {
            case .tcp(let c): return tcp.setsockopt(call, c, so)
            case .udp(let u): return udp.setsockopt(call, u, so)
            case .none: return .fail(call.notFoundErrno, .none)
            }
        case .setsockoptByRef:
            return .fail(EBADF, .none)   // decoded only one-way (RPCCodec): never answered
        case .getname:
            switch target(call) {
            case .tcp(let c): return .ok(.info(c.info))
            case .udp(let u): return .ok(.info(udp.info(u)))
            case .none: return .fail(call.notFoundErrno, .none)
            }
        case .renew:
            guard stack != nil else { return .fail(ENETDOWN, .none) }
            if call.fds.count >= 3, call.fds[1] >= 0, call.fds[2] >= 0, !isFreshPair(call.fds[2], call.fds[1]) {
                foreignSocket(call.peer)
                return .fail(EBADF, .none)
            }
            switch target(call) {
            case .tcp(let c): return tcp.renew(&call, c, udpForget: { [udp] in udp.forget($0) })
            case .udp: return .fail(EINVAL, .none)
            case .none: return .fail(call.notFoundErrno, .none)
            }
        case .channel:
            return registerPipeChannel(&call)
        case .unknown:
            return .fail(EOPNOTSUPP, .none)
        }
    }

    // MARK: - Trust

    private var trustThrottle = LogThrottle()

    /// A ZTRPC_F_NEW or LISTEN request handed over a socket that is not the caller's own
    /// socketpair end (see `Trust.ownsSocketpairEnd`): refused with EBADF like any bad fd.
    func foreignSocket(_ peer: RPCPeer) {
        guard let suppressed = trustThrottle.admit("foreign-\(peer.uid)") else { return }
        logger.warning("rpc: refusing a socket that is not the caller's own socketpair end",
                       metadata: ["network": "\(network)", "pid": "\(peer.pid)", "uid": "\(peer.uid)",
                                  "suppressed": "\(suppressed)"])
    }

    /// A new pair's ends (app end `app`, daemon end `daemon`) must be new to ztapd: neither an end
    /// it holds already nor the app end of a socket it serves. Else ztapd could end up holding
    /// both ends of one pair, which never hang up.
    func isFreshPair(_ app: Int32, _ daemon: Int32) -> Bool {
        guard let a = FDKey.of(app) else { return false }
        return freshPair(app: a, daemon: daemon) != nil
    }

    /// The daemon end's identity when both ends are new to ztapd (`isFreshPair`), else nil.
    func freshPair(app a: FDKey, daemon: Int32) -> FDKey? {
        guard let d = FDKey.of(daemon), a != d else { return nil }
        if held.holds(a) || held.holds(d) { return nil }
        return tcp.byKey[d] == nil && udp.byKey[d] == nil ? d : nil
    }

    /// Ports 1-1023 need CAP_NET_BIND_SERVICE (or the network's AllowPrivilegedPorts=): EACCES,
    /// as bind(2) gives.
    private func checkPrivilegedPort(_ port: UInt16, _ call: RPCCall) -> Int32? {
        guard port != 0, port < 1024, !access.list.privilegedPorts,
              !Trust.mayBindPrivileged(rpcFD: call.socket.fd, peer: call.peer) else { return nil }
        if let suppressed = trustThrottle.admit("privileged-\(call.peer.uid)") {
            logger.notice("rpc: uid \(call.peer.uid) may not bind port \(port) (below 1024: CAP_NET_BIND_SERVICE or AllowPrivilegedPorts=)",
                          metadata: ["network": "\(network)", "pid": "\(call.peer.pid)", "suppressed": "\(suppressed)"])
        }
        return EACCES
    }

    // MARK: - Timers

    /// Earliest instant `runTimers` has work.
    var nextDeadline: Instant? { earliest(earliest(nextIdleScan, tcp.nextDeadline), udp.nextDeadline) }

    func runTimers(now: Instant) {
        tcp.runTimers(now: now)
        udp.runTimers(now: now)
        if let t = nextIdleScan, t <= now {
            nextIdleScan = nil
            var idle: [LoopSocket] = []
            loop.forEach { s in
                // A channel lives as long as its process (one per process, bounded per user).
                if case .rpc(let p) = s.context, p.waiter == nil, !p.channel, now - p.lastActive >= peerIdle { idle.append(s) }
            }
            for s in idle { loop.close(s) }
            // Channels are never idle-closed: no rescans for them alone.
            if peerCount - channelCount - idle.count > 0 { nextIdleScan = now + .seconds(1) }
        }
    }

    // MARK: - Events routed here

    func stackEvent(_ e: SocketEvent) {
        if case .readable(let h) = e, tcp.byHandle[h] == nil {
            udp.stackReadable(h)
            return
        }
        tcp.stackEvent(e)
    }

    func readable(_ socket: LoopSocket) {
        switch socket.context {
        case .rpc(let peer): readRPC(socket, peer)
        case .tcp(let c): tcp.readable(c)
        case .acceptChannel: break   // never read (plugged by the library); its close is a hang-up
        case .udp(let u): udp.readable(u, socket)
        case .tap, .rpcListener, .capture: break
        }
    }

    func hangup(_ socket: LoopSocket) {
        switch socket.context {
        case .tcp(let c): tcp.appGone(c)
        case .acceptChannel(let c): tcp.remove(c)
        case .udp(let u): udp.remove(u)
        case .rpc: loop.close(socket)
        case .tap, .rpcListener, .capture: break
        }
    }

    func writable(_ socket: LoopSocket) {
        switch socket.context {
        case .tcp(let c): tcp.pumpOut(c)
        case .acceptChannel(let c): tcp.deliverAccepts(c)
        default: break
        }
    }

    /// Intercepted sockets with their owner; `handles` receives the stack handles listed here.
    func connections(network: String, handles: inout Set<SocketHandle>) -> [ConnectionInfo] {
        tcp.connections(network: network, handles: &handles) + udp.connections(network: network)
    }
}
