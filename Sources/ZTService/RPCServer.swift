import CShims
import CZTRPC
import LinuxNet
import Logging
import NetStack
import PhyLoop
import SystemPackage
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

/// Who may use a network's RPC socket besides root and ztapd's own user ([Access]).
struct AccessList: Sendable, Equatable {
    var uids: Set<UInt32> = []
    var gids: Set<UInt32> = []

    init() {}

    /// Users and groups as config files list them: names or numeric ids (names that do not
    /// resolve are skipped).
    init(users: [String], groups: [String]) {
        for u in users {
            if let n = UInt32(u) { uids.insert(n) } else if let v = UserDB.uid(forUser: u) { uids.insert(v) }
        }
        for g in groups {
            if let n = UInt32(g) { gids.insert(n) } else if let v = UserDB.gid(forGroup: g) { gids.insert(v) }
        }
    }

    /// Root and ztapd's own user always; else a listed uid, or a listed group among the
    /// primary one and `groups(uid)` (asked only when groups are listed at all).
    func permits(uid: UInt32, gid: UInt32, groups: (UInt32) -> [UInt32]) -> Bool {
        if uid == 0 || uid == geteuid() || uids.contains(uid) { return true }
        if gids.isEmpty { return false }
        if gids.contains(gid) { return true }
        return groups(uid).contains { gids.contains($0) }
    }
}

/// One connection on RUN_DIR/NAME.sock: exactly one request, exactly one reply.
final class RPCPeer {
    let pid: Int32
    let uid: UInt32
    let gid: UInt32
    let allowed: Bool
    let opened: Instant
    var requested = false
    /// Set while the answer waits for a connect outcome.
    var waiter: Waiter?
    var waitingOn: Connection?
    init(pid: Int32, uid: UInt32, gid: UInt32, allowed: Bool, opened: Instant) {
        self.pid = pid; self.uid = uid; self.gid = gid; self.allowed = allowed; self.opened = opened
    }
}

/// The daemon side of the intercept for one network: the RPC listener, the intercepted sockets
/// (`Connection`, `UDPConnection`) and the byte pumps between their socketpairs and NetStack.
/// Runs on the network's loop thread only.
final class InterceptHub {
    private let loop: PhyLoop<NetworkLoop>
    private let driver: StackDriver
    private let logger: Logger
    private let network: String
    let path: String
    var access: AccessList
    private var listener: LoopSocket?

    private var tcp: [FDKey: Connection] = [:]
    private var udp: [FDKey: UDPConnection] = [:]
    private var byHandle: [SocketHandle: Connection] = [:]
    private var udpByHandle: [SocketHandle: UDPConnection] = [:]
    /// Bound and listening TCP sockets by port (EADDRINUSE, ephemeral ports for bind).
    private var reservations: [UInt16: [Connection]] = [:]
    /// Non-blocking CONNECTs waiting at most ~5 ms.
    private var timed: [Waiter] = []
    private var peerCount = 0
    private var nextIdleScan: Instant?
    private var uidGroups: [UInt32: [UInt32]] = [:]
    private var random = SystemRandomNumberGenerator()

    /// Pending RPC connections at most, in all and per user; more are closed at once. A blocking
    /// connect holds one until its outcome, so the bounds are generous; the per-user one keeps a
    /// flood from one user from locking the others out.
    let maxPeers = 4096
    let maxPeersPerUID = 512
    private var peersByUID: [UInt32: Int] = [:]
    private var refusedPeers: UInt64 = 0
    /// An RPC connection that sends nothing for this long is closed.
    let peerIdle = Duration.seconds(10)
    /// How long a non-blocking CONNECT may wait for its outcome before EINPROGRESS.
    let nonblockingWait = Duration.milliseconds(5)

    private let requestBuffer: UnsafeMutableRawBufferPointer
    private let replyBuffer: UnsafeMutableRawBufferPointer
    private let datagramBuffer: UnsafeMutableRawBufferPointer

    init(network: String, path: String, access: AccessList, loop: PhyLoop<NetworkLoop>, driver: StackDriver,
         logger: Logger) throws(Errno) {
        self.network = network
        self.path = path
        self.access = access
        self.loop = loop
        self.driver = driver
        self.logger = logger
        requestBuffer = .allocate(byteCount: Int(ZTRPC_MAX_MSG) + 64, alignment: 16)
        replyBuffer = .allocate(byteCount: Int(ZTRPC_MAX_MSG), alignment: 16)
        datagramBuffer = .allocate(byteCount: 65536 + 64, alignment: 16)
        do {
            try openListener()
        } catch {
            requestBuffer.deallocate(); replyBuffer.deallocate(); datagramBuffer.deallocate()
            throw error
        }
    }

    deinit {
        requestBuffer.deallocate()
        replyBuffer.deallocate()
        datagramBuffer.deallocate()
    }

    private var stack: NetStack? { driver.netStack }
    private static func now() -> Instant { Instant(nanoseconds: Sys.monotonicNanoseconds()) }

    private func openListener() throws(Errno) {
        let fd = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        // A file left by a previous run of this network is stale: the daemon's control socket
        // already guarantees only one ztapd per run directory.
        unlink(path)
        guard cshim_bind_unix(fd, path) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw Errno(rawValue: e)
        }
        // Everyone may connect; SO_PEERCRED decides (refused peers get EACCES in a reply).
        _ = chmod(path, 0o666)
        guard Glibc.listen(fd, 512) == 0 else {
            let e = errno
            Glibc.close(fd)
            unlink(path)
            throw Errno(rawValue: e)
        }
        do {
            try Sys.setNonBlocking(fd)
            listener = try loop.add(fd: fd, kind: .listener, context: .rpcListener)
        } catch {
            Glibc.close(fd)
            unlink(path)
            throw error
        }
    }

    /// Called when the loop shuts down (the sockets themselves are closed by `closeAll`).
    func shutdown() {
        unlink(path)
        if let stack {
            for (h, _) in byHandle { stack.tcp.abort(h, now: Self.now()) }
            for (h, _) in udpByHandle { stack.udpClose(h) }
        }
        byHandle.removeAll()
        udpByHandle.removeAll()
        tcp.removeAll()
        udp.removeAll()
    }

    /// The stack was replaced (reconfigure): every intercepted socket lost its stack side.
    func stackReplaced() {
        // Sockets apps can name, plus those only draining after their app closed.
        var all = Array(tcp.values)
        for c in byHandle.values where tcp[c.key] !== c { all.append(c) }
        // Handles of the old stack may name sockets of the new one: forget them all before
        // anything below could pass one to the new stack.
        byHandle.removeAll()
        udpByHandle.removeAll()
        for c in all {
            c.handle = nil
            for (conn, _) in c.undelivered { conn.handle = nil }
        }
        for c in all {
            c.pendingError = ECONNRESET
            if tcp[c.key] === c { fail(c) } else { removeTCP(c) }
        }
        for u in Array(udp.values) { removeUDP(u) }
    }

    // MARK: - Access

    func isAllowed(uid: UInt32, gid: UInt32) -> Bool {
        access.permits(uid: uid, gid: gid) { uid in
            // Cached: a connect storm from one user must not read /etc/group per request.
            if let g = uidGroups[uid] { return g }
            let g = UserDB.groups(ofUID: uid)
            if uidGroups.count > 1024 { uidGroups.removeAll() }
            uidGroups[uid] = g
            return g
        }
    }

    // MARK: - RPC channel

    func acceptPeer(fd: Int32) -> NetworkLoop.Context? {
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
        let allowed = isAllowed(uid: uid, gid: gid)
        if !allowed {
            logger.notice("rpc: refusing uid \(uid) (pid \(pid)): not in [Access]", metadata: ["network": "\(network)"])
        }
        peerCount += 1
        peersByUID[uid, default: 0] += 1
        let now = Self.now()
        if nextIdleScan == nil { nextIdleScan = now + peerIdle }
        return .rpc(RPCPeer(pid: pid, uid: uid, gid: gid, allowed: allowed, opened: now))
    }

    func peerClosed(_ peer: RPCPeer) {
        peerCount -= 1
        if let n = peersByUID[peer.uid], n > 1 { peersByUID[peer.uid] = n - 1 } else { peersByUID[peer.uid] = nil }
        if let w = peer.waiter, let c = peer.waitingOn {
            // The library gave up waiting (signal, SO_SNDTIMEO): the connect goes on.
            c.waiters.removeAll { $0 === w }
            timed.removeAll { $0 === w }
        }
        peer.waiter = nil
        peer.waitingOn = nil
    }

    /// A request as received: the fds not taken over by a handler are closed afterwards.
    struct Request {
        let socket: LoopSocket
        let peer: RPCPeer
        let op: UInt16
        let id: UInt32
        let body: UnsafeRawBufferPointer
        var fds: [Int32]

        /// Takes fd `i` out of the request (the caller keeps it).
        mutating func take(_ i: Int) -> Int32? {
            guard i < fds.count, fds[i] >= 0 else { return nil }
            let fd = fds[i]
            fds[i] = -1
            return fd
        }
    }

    enum Body {
        case none
        case info(ztrpc_sockinfo)
        case opt(ztrpc_sockopt)
    }

    enum Outcome {
        case ok(Body)
        case fail(Int32, Body)
        case pending
    }

    func readRPC(_ socket: LoopSocket, _ peer: RPCPeer) {
        var fds = [Int32](repeating: -1, count: Int(ZTRPC_MAX_FDS))
        var nfds: Int32 = 0
        var truncated: Int32 = 0
        let n = fds.withUnsafeMutableBufferPointer { p in
            cshim_recv_with_fds(socket.fd, requestBuffer.baseAddress, requestBuffer.count, p.baseAddress,
                                Int32(ZTRPC_MAX_FDS), &nfds, &truncated, Int32(MSG_DONTWAIT))
        }
        if n < 0 {
            let e = errno
            if e == EAGAIN || e == EINTR { return }
            loop.close(socket)
            return
        }
        var request = Request(socket: socket, peer: peer, op: 0, id: 0, body: UnsafeRawBufferPointer(start: nil, count: 0),
                              fds: Array(fds[0..<Int(nfds)]))
        defer { for fd in request.fds where fd >= 0 { cshim_close_untrusted(fd) } }
        if n == 0 || peer.requested {
            // EOF, or a second message on a one-request channel: hang up.
            loop.close(socket)
            return
        }
        peer.requested = true
        let msg = UnsafeRawBufferPointer(rebasing: requestBuffer[0..<n])
        guard n >= Wire.reqHeaderSize else {
            reply(socket, op: 0, id: 0, result: -1, err: EPROTO, body: .none)
            return
        }
        let hdr = msg.loadUnaligned(as: ztrpc_req_hdr.self)
        guard hdr.magic == ZTRPC_MAGIC, hdr.version == ZTRPC_VERSION else {
            reply(socket, op: hdr.op, id: hdr.id, result: -1, err: EPROTO, body: .none)
            return
        }
        guard truncated == 0, n <= Int(ZTRPC_MAX_MSG), Int(hdr.len) == n - Wire.reqHeaderSize else {
            reply(socket, op: hdr.op, id: hdr.id, result: -1, err: truncated != 0 ? EMSGSIZE : EPROTO, body: .none)
            return
        }
        guard peer.allowed else {
            reply(socket, op: hdr.op, id: hdr.id, result: -1, err: EACCES, body: .none)
            return
        }
        request = Request(socket: socket, peer: peer, op: hdr.op, id: hdr.id,
                          body: UnsafeRawBufferPointer(rebasing: msg[Wire.reqHeaderSize...]), fds: request.fds)
        let outcome: Outcome
        switch hdr.op {
        case ZTRPC_OP_CONNECT: outcome = opConnect(&request)
        case ZTRPC_OP_BIND: outcome = opBind(&request, udpOpen: false)
        case ZTRPC_OP_UDP_OPEN: outcome = opBind(&request, udpOpen: true)
        case ZTRPC_OP_LISTEN: outcome = opListen(&request)
        case ZTRPC_OP_GETSOCKOPT: outcome = opGetsockopt(&request)
        case ZTRPC_OP_SETSOCKOPT: outcome = opSetsockopt(&request)
        case ZTRPC_OP_GETNAME: outcome = opGetname(&request)
        default: outcome = .fail(EOPNOTSUPP, .none)
        }
        switch outcome {
        case .ok(let b): reply(socket, op: hdr.op, id: hdr.id, result: 0, err: 0, body: b)
        case .fail(let e, let b): reply(socket, op: hdr.op, id: hdr.id, result: -1, err: e, body: b)
        case .pending: break
        }
    }

    /// Sends the one reply of an RPC connection and closes it. False if the peer was gone.
    @discardableResult
    private func reply(_ socket: LoopSocket, op: UInt16, id: UInt32, result: Int32, err: Int32, body: Body) -> Bool {
        guard !socket.isClosed else { return false }
        let p = replyBuffer.baseAddress!
        var len = 0
        switch body {
        case .none: break
        case .info(let i):
            withUnsafeBytes(of: i) { (p + Wire.repHeaderSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            len = MemoryLayout<ztrpc_sockinfo>.size
        case .opt(let o):
            withUnsafeBytes(of: o) { (p + Wire.repHeaderSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            len = MemoryLayout<ztrpc_sockopt>.size
        }
        let hdr = ztrpc_rep_hdr(magic: ZTRPC_MAGIC, version: ZTRPC_VERSION, op: op, id: id, result: result,
                                err: err, len: UInt32(len))
        withUnsafeBytes(of: hdr) { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let n = Glibc.send(socket.fd, p, Wire.repHeaderSize + len, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
        loop.close(socket)
        return n == Wire.repHeaderSize + len
    }

    // MARK: - Lookups

    /// The socket named by fds[0], after dropping a stale entry whose app end is gone (inode reuse).
    private func lookup(_ r: Request) -> (Connection?, UDPConnection?) {
        guard let fd = r.fds.first, fd >= 0, let key = FDKey.of(fd) else { return (nil, nil) }
        if let c = tcp[key] {
            if isStale(c.data) { appGone(c); if tcp[key] === c { return (c, nil) } else { return (nil, nil) } }
            return (c, nil)
        }
        if let u = udp[key] {
            if isStale(u.data) { removeUDP(u); return (nil, nil) }
            return (nil, u)
        }
        return (nil, nil)
    }

    /// True if our end shows that the app's end was closed (a hangup not processed yet).
    private func isStale(_ s: LoopSocket?) -> Bool {
        guard let s, !s.isClosed else { return false }
        var p = pollfd(fd: s.fd, events: 0x2000 /* POLLRDHUP */, revents: 0)
        return Glibc.poll(&p, 1, 0) == 1 && p.revents & Int16(POLLHUP) != 0
    }

    /// Validates and takes the new socketpair of a ZTRPC_F_NEW request: (identity, daemon end).
    private func takeNew(_ r: inout Request, type: Int32) -> (FDKey, Int32)? {
        guard r.fds.count >= 2, r.fds[0] >= 0, r.fds[1] >= 0,
              Wire.isUnixSocket(r.fds[0], type: type), Wire.isUnixSocket(r.fds[1], type: type),
              let key = FDKey.of(r.fds[0]) else { return nil }
        do { try Sys.setNonBlocking(r.fds[1]) } catch { return nil }
        // A leftover entry with this inode belongs to a socket that is gone: finish it first.
        if let old = tcp[key] { appGone(old); if tcp[key] === old { removeTCP(old) } }
        if let old = udp[key] { removeUDP(old) }
        return (key, r.take(1)!)
    }

    // MARK: - Ops

    private func opConnect(_ r: inout Request) -> Outcome {
        let sr = Wire.body(ztrpc_sock_req.self, from: r.body, zero: ztrpc_sock_req())
        let isNew = sr.flags & ZTRPC_F_NEW != 0
        if sr.proto == IPProtocol.udp { return udpConnect(&r, sr, isNew: isNew) }
        guard sr.proto == IPProtocol.tcp else { return .fail(EPROTONOSUPPORT, .none) }
        guard let stack else { return .fail(ENETDOWN, .none) }
        let dst = Wire.endpoint(sr.addr)
        let c: Connection
        var newFD: Int32 = -1
        if isNew {
            guard let (key, fd) = takeNew(&r, type: Int32(SOCK_STREAM.rawValue)) else { return .fail(EBADF, .none) }
            c = Connection(key: key, pid: r.peer.pid, uid: r.peer.uid)
            c.options = SocketOptions(sr.opts)
            newFD = fd
        } else {
            guard let found = lookup(r).0 else { return .fail(r.fds.isEmpty ? EBADF : ENOTSOCK, .none) }
            c = found
        }
        var closeNew = true
        defer { if closeNew && newFD >= 0 { Glibc.close(newFD) } }
        if dst.address.isUnspecified && dst.port == 0 {
            // connect(AF_UNSPEC): drop the connection (RST), the socket becomes unconnected.
            if let h = c.handle, c.state == .connecting || c.state == .connected {
                byHandle[h] = nil
                stack.tcp.abort(h, now: Self.now())
                c.handle = nil
                c.state = c.reservation != nil ? .bound : .unbound
                c.appEOF = false; c.finDelivered = false; c.appReadClosed = false; c.closingWithInput = false
                if let d = c.data {
                    if c.writeBlocked { c.writeBlocked = false; loop.setNotifyWritable(d, false) }
                }
            }
            return .ok(.info(c.info))
        }
        switch c.state {
        case .connecting: return .fail(EALREADY, .info(c.info))
        case .connected:
            if !c.connectReported { c.connectReported = true; return .ok(.info(c.info)) }
            return .fail(EISCONN, .info(c.info))
        case .closed:
            let e = c.pendingError
            c.pendingError = 0
            return .fail(e != 0 ? e : EISCONN, .info(c.info))
        case .listening: return .fail(EISCONN, .info(c.info))
        case .unbound, .bound: break
        }
        let h: SocketHandle
        do {
            h = try stack.tcpConnect(local: c.local ?? IPv4Endpoint(.any, 0), remote: dst, now: Self.now())
        } catch {
            return .fail(Wire.errno(error), .none)
        }
        for o in c.options.tcpOptions { try? stack.tcp.setOption(h, o, now: Self.now()) }
        c.handle = h
        byHandle[h] = c
        c.local = stack.tcp.localEndpoint(h)
        c.remote = dst
        c.state = .connecting
        c.connectReported = false
        if isNew {
            do {
                c.data = try loop.add(fd: newFD, kind: .stream, context: .tcp(c), readable: false)
            } catch {
                byHandle[h] = nil
                stack.tcp.abort(h, now: Self.now())
                return .fail(error.rawValue, .none)
            }
            closeNew = false
            tcp[c.key] = c
        }
        let nonblocking = sr.flags & ZTRPC_F_NONBLOCK != 0
        let w = Waiter(socket: r.socket, op: r.op, id: r.id, kind: .connect(nonblocking: nonblocking),
                       deadline: nonblocking ? Self.now() + nonblockingWait : nil)
        wait(w, r.peer, on: c)
        return .pending
    }

    private func wait(_ w: Waiter, _ peer: RPCPeer, on c: Connection) {
        c.waiters.append(w)
        if w.deadline != nil { timed.append(w) }
        peer.waiter = w
        peer.waitingOn = c
    }

    private func opBind(_ r: inout Request, udpOpen: Bool) -> Outcome {
        let sr = Wire.body(ztrpc_sock_req.self, from: r.body, zero: ztrpc_sock_req())
        let isNew = sr.flags & ZTRPC_F_NEW != 0
        guard let stack else { return .fail(ENETDOWN, .none) }
        let ep = udpOpen ? IPv4Endpoint(.any, 0) : Wire.endpoint(sr.addr)
        guard ep.address.isUnspecified || stack.addresses.contains(where: { $0.address == ep.address }) else {
            return .fail(EADDRNOTAVAIL, .none)
        }
        if sr.proto == IPProtocol.udp {
            guard isNew else { return .fail(lookup(r).1 != nil ? EINVAL : ENOTSOCK, .none) }
            switch udpCreate(&r, sr, local: ep) {
            case .success(let u): return .ok(.info(udpInfo(u)))
            case .failure(let e): return .fail(e.rawValue, .none)
            }
        }
        guard sr.proto == IPProtocol.tcp, !udpOpen else { return .fail(EPROTONOSUPPORT, .none) }
        if !isNew {
            guard let c = lookup(r).0 else { return .fail(ENOTSOCK, .none) }
            guard c.state == .unbound else { return .fail(EINVAL, .none) }
            if let e = reserve(ep, for: c) { return .fail(e, .none) }
            c.state = .bound
            return .ok(.info(c.info))
        }
        guard let (key, fd) = takeNew(&r, type: Int32(SOCK_STREAM.rawValue)) else { return .fail(EBADF, .none) }
        let c = Connection(key: key, pid: r.peer.pid, uid: r.peer.uid)
        c.options = SocketOptions(sr.opts)
        if let e = reserve(ep, for: c) { Glibc.close(fd); return .fail(e, .none) }
        do {
            // Not read until connected: only a hangup (the app closed it) matters here.
            c.data = try loop.add(fd: fd, kind: .stream, context: .tcp(c), readable: false)
        } catch {
            Glibc.close(fd)
            unreserve(c)
            return .fail(error.rawValue, .none)
        }
        c.state = .bound
        tcp[key] = c
        return .ok(.info(c.info))
    }

    /// Takes `ep` (port 0: an ephemeral port) for `c`; returns an errno on conflict.
    private func reserve(_ ep: IPv4Endpoint, for c: Connection) -> Int32? {
        var port = ep.port
        if port == 0 {
            var found: UInt16?
            let start = UInt16(truncatingIfNeeded: random.next() % 16384)
            for i in 0..<UInt16(16384) {
                let p = 49152 &+ (start &+ i) % 16384
                if reservations[p] == nil && !stackListens(port: p) { found = p; break }
            }
            guard let f = found else { return EADDRINUSE }
            port = f
        } else {
            for other in reservations[port] ?? [] where other !== c {
                guard let oa = other.reservation?.address else { continue }
                let overlap = oa.isUnspecified || ep.address.isUnspecified || oa == ep.address
                if !overlap { continue }
                let reuse = c.options.reuseAddr && other.options.reuseAddr && other.state != .listening
                let reusePort = c.options.reusePort && other.options.reusePort && c.uid == other.uid
                if !reuse && !reusePort { return EADDRINUSE }
            }
        }
        let local = IPv4Endpoint(ep.address, port)
        c.reservation = local
        c.local = local
        reservations[port, default: []].append(c)
        return nil
    }

    private func stackListens(port: UInt16) -> Bool {
        var found = false
        stack?.tcp.forEachConnection { _, info in
            if info.state == .listen && info.local.port == port { found = true }
        }
        return found
    }

    private func unreserve(_ c: Connection) {
        guard let r = c.reservation else { return }
        c.reservation = nil
        reservations[r.port]?.removeAll { $0 === c }
        if reservations[r.port]?.isEmpty == true { reservations[r.port] = nil }
    }

    private func opListen(_ r: inout Request) -> Outcome {
        let lr = Wire.body(ztrpc_listen_req.self, from: r.body, zero: ztrpc_listen_req())
        guard let stack else { return .fail(ENETDOWN, .none) }
        let (found, u) = lookup(r)
        if u != nil { return .fail(EOPNOTSUPP, .none) }
        guard let c = found else { return .fail(r.fds.isEmpty ? EBADF : ENOTSOCK, .none) }
        let backlog = lr.backlog <= 0 || lr.backlog > 4096 ? Int32(4096) : lr.backlog
        if c.state == .listening {
            c.backlog = backlog
            return .ok(.none)
        }
        guard c.state == .bound || c.state == .unbound else { return .fail(EINVAL, .none) }
        guard r.fds.count >= 3, r.fds[1] >= 0, r.fds[2] >= 0,
              Wire.isUnixSocket(r.fds[1], type: Int32(SOCK_SEQPACKET.rawValue)),
              Wire.isUnixSocket(r.fds[2], type: Int32(SOCK_SEQPACKET.rawValue)),
              let newKey = FDKey.of(r.fds[2]) else { return .fail(EBADF, .none) }
        let implicitBind = c.state == .unbound
        if implicitBind, let e = reserve(IPv4Endpoint(.any, 0), for: c) { return .fail(e, .none) }
        // A failure below must not leave the implicit bind's port reserved.
        func undoImplicitBind() {
            guard implicitBind else { return }
            unreserve(c)
            c.local = nil
            c.state = .unbound
        }
        guard let local = c.local else { undoImplicitBind(); return .fail(EINVAL, .none) }
        let h: SocketHandle
        do {
            h = try stack.tcp.listen(local: local, backlog: Int(backlog), now: Self.now())
        } catch {
            undoImplicitBind()
            return .fail(Wire.errno(error), .none)
        }
        for o in c.options.tcpOptions { try? stack.tcp.setOption(h, o, now: Self.now()) }
        let chFD = r.take(1)!
        let channel: LoopSocket
        do {
            try Sys.setNonBlocking(chFD)
            channel = try loop.add(fd: chFD, kind: .stream, context: .acceptChannel(c))
        } catch {
            Glibc.close(chFD)
            stack.tcp.abort(h, now: Self.now())
            undoImplicitBind()
            return .fail(error.rawValue, .none)
        }
        // The old data socket is replaced by the accept channel (the library dup3()s fds[2]).
        if let old = c.data { loop.close(old) }
        c.data = channel
        if tcp[c.key] === c { tcp[c.key] = nil }
        // A leftover entry under the new identity belongs to a socket that is gone.
        if let old = tcp[newKey], old !== c { removeTCP(old) }
        if let old = udp[newKey] { removeUDP(old) }
        c.key = newKey
        tcp[newKey] = c
        c.handle = h
        byHandle[h] = c
        c.backlog = backlog
        c.state = .listening
        return .ok(.none)
    }

    private func opGetname(_ r: inout Request) -> Outcome {
        let (c, u) = lookup(r)
        if let c { return .ok(.info(c.info)) }
        if let u { return .ok(.info(udpInfo(u))) }
        return .fail(r.fds.isEmpty ? EBADF : ENOTSOCK, .none)
    }

    private func opGetsockopt(_ r: inout Request) -> Outcome {
        var so = Wire.body(ztrpc_sockopt.self, from: r.body, zero: ztrpc_sockopt())
        let (c, u) = lookup(r)
        guard c != nil || u != nil else { return .fail(r.fds.isEmpty ? EBADF : ENOTSOCK, .none) }
        let o = c?.options ?? u!.options
        var ints: (Int32, Int32)?
        var single: Int32?
        var raw: [UInt8]?
        switch (so.level, so.name) {
        case (SOL_SOCKET, SO_ERROR):
            if let c {
                if c.state == .connecting {
                    let w = Waiter(socket: r.socket, op: r.op, id: r.id, kind: .soError, deadline: nil)
                    wait(w, r.peer, on: c)
                    return .pending
                }
                single = c.pendingError
                c.pendingError = 0
            } else {
                single = 0
            }
        case (SOL_SOCKET, SO_REUSEADDR): single = o.reuseAddr ? 1 : 0
        case (SOL_SOCKET, SO_REUSEPORT): single = o.reusePort ? 1 : 0
        case (SOL_SOCKET, SO_KEEPALIVE): single = o.keepAlive ? 1 : 0
        case (SOL_SOCKET, SO_LINGER): ints = (o.lingerOn, o.lingerSecs)
        case (SOL_SOCKET, SO_RCVBUF):
            single = o.rcvbuf > 0 ? Int32(SocketOptions.clampBuffer(o.rcvbuf) * 2)
                : Int32(clamping: stack?.tcp.config.receiveBufferSize ?? 0)
        case (SOL_SOCKET, SO_SNDBUF):
            single = o.sndbuf > 0 ? Int32(SocketOptions.clampBuffer(o.sndbuf) * 2)
                : Int32(clamping: stack?.tcp.config.sendBufferSize ?? 0)
        case (Int32(IPPROTO_TCP), TCP_NODELAY) where c != nil: single = o.noDelay ? 1 : 0
        case (Int32(IPPROTO_TCP), TCP_KEEPIDLE) where c != nil: single = o.keepIdle
        case (Int32(IPPROTO_TCP), TCP_KEEPINTVL) where c != nil: single = o.keepIntvl
        case (Int32(IPPROTO_TCP), TCP_KEEPCNT) where c != nil: single = o.keepCnt
        case (Int32(IPPROTO_TCP), 13 /* TCP_CONGESTION */) where c != nil:
            let algo = c?.handle.flatMap { stack?.tcp.info($0)?.congestionControl } ?? .cubic
            raw = Array((algo == .cubic ? "cubic" : "reno").utf8) + [0]
        case (Int32(IPPROTO_TCP), 2 /* TCP_MAXSEG */) where c != nil:
            single = Int32(c?.handle.flatMap { stack?.tcp.info($0)?.mss } ?? 536)
        case (Int32(IPPROTO_TCP), 11 /* TCP_INFO */) where c != nil:
            // Only the first 16 bytes of struct tcp_info fit the wire: state, flags, rto, ato.
            var b = [UInt8](repeating: 0, count: 16)
            if let h = c?.handle, let i = stack?.tcp.info(h) {
                b[0] = Self.linuxTCPState(i.state)
                b[2] = UInt8(truncatingIfNeeded: min(i.retransmissions, 255))
                withUnsafeBytes(of: UInt32(truncatingIfNeeded: i.rto.nanoseconds / 1000).littleEndian) { b.replaceSubrange(8..<12, with: $0) }
            } else {
                b[0] = 7 // TCP_CLOSE
            }
            raw = b
        case (Int32(IPPROTO_IP), 1 /* IP_TOS */): single = o.tos
        case (SOL_SOCKET, 6 /* SO_BROADCAST */) where u != nil: single = o.broadcast ? 1 : 0
        default: return .fail(ENOPROTOOPT, .none)
        }
        withUnsafeMutableBytes(of: &so.value) { v in
            v.initializeMemory(as: UInt8.self, repeating: 0)
            if let raw {
                let n = min(raw.count, v.count)
                for k in 0..<n { v[k] = raw[k] }
                so.optlen = UInt32(n)
            } else if let s = single {
                v.storeBytes(of: s, toByteOffset: 0, as: Int32.self)
                so.optlen = 4
            } else if let (a, b) = ints {
                v.storeBytes(of: a, toByteOffset: 0, as: Int32.self)
                v.storeBytes(of: b, toByteOffset: 4, as: Int32.self)
                so.optlen = 8
            }
        }
        return .ok(.opt(so))
    }

    /// Linux's numbering of TCP states (include/net/tcp_states.h) for TCP_INFO.
    static func linuxTCPState(_ s: TCPState) -> UInt8 {
        switch s {
        case .established: return 1
        case .synSent: return 2
        case .synReceived: return 3
        case .finWait1: return 4
        case .finWait2: return 5
        case .timeWait: return 6
        case .closed: return 7
        case .closeWait: return 8
        case .lastAck: return 9
        case .listen: return 10
        case .closing: return 11
        }
    }

    private func opSetsockopt(_ r: inout Request) -> Outcome {
        let so = Wire.body(ztrpc_sockopt.self, from: r.body, zero: ztrpc_sockopt())
        let (c, u) = lookup(r)
        guard c != nil || u != nil else { return .fail(r.fds.isEmpty ? EBADF : ENOTSOCK, .none) }
        var o = c?.options ?? u!.options
        let (v0, v1) = withUnsafeBytes(of: so.value) { ($0.load(fromByteOffset: 0, as: Int32.self), $0.load(fromByteOffset: 4, as: Int32.self)) }
        guard so.optlen >= 4 else { return .fail(EINVAL, .none) }
        var apply: TCPOption?
        switch (so.level, so.name) {
        case (SOL_SOCKET, SO_REUSEADDR): o.reuseAddr = v0 != 0
        case (SOL_SOCKET, SO_REUSEPORT): o.reusePort = v0 != 0
        case (SOL_SOCKET, SO_KEEPALIVE): o.keepAlive = v0 != 0; apply = .keepAlive(o.keepAlive)
        case (SOL_SOCKET, SO_LINGER):
            guard so.optlen >= 8 else { return .fail(EINVAL, .none) }
            o.lingerOn = v0; o.lingerSecs = v1
            apply = .linger(v0 != 0 ? .seconds(UInt64(max(v1, 0))) : nil)
        case (SOL_SOCKET, SO_RCVBUF): o.rcvbuf = v0; apply = .receiveBufferSize(SocketOptions.clampBuffer(v0))
        case (SOL_SOCKET, SO_SNDBUF): o.sndbuf = v0; apply = .sendBufferSize(SocketOptions.clampBuffer(v0))
        case (Int32(IPPROTO_TCP), TCP_NODELAY) where c != nil: o.noDelay = v0 != 0; apply = .noDelay(o.noDelay)
        case (Int32(IPPROTO_TCP), TCP_KEEPIDLE) where c != nil:
            guard v0 >= 1 else { return .fail(EINVAL, .none) }
            o.keepIdle = v0
        case (Int32(IPPROTO_TCP), TCP_KEEPINTVL) where c != nil:
            guard v0 >= 1 else { return .fail(EINVAL, .none) }
            o.keepIntvl = v0
        case (Int32(IPPROTO_TCP), TCP_KEEPCNT) where c != nil:
            guard v0 >= 1 else { return .fail(EINVAL, .none) }
            o.keepCnt = v0
        case (Int32(IPPROTO_TCP), 13 /* TCP_CONGESTION */) where c != nil:
            let name = withUnsafeBytes(of: so.value) { b in String(decoding: b.prefix(Int(min(so.optlen, 16))).prefix { $0 != 0 }, as: UTF8.self) }
            switch name {
            case "cubic": apply = .congestionControl(.cubic)
            case "reno": apply = .congestionControl(.newReno)
            default: return .fail(ENOENT, .none)
            }
        case (Int32(IPPROTO_TCP), 2 /* TCP_MAXSEG */) where c != nil:
            // The stack derives the MSS from the MTU; a smaller request is accepted and ignored.
            guard v0 >= 0 else { return .fail(EINVAL, .none) }
        case (Int32(IPPROTO_IP), 1 /* IP_TOS */): o.tos = v0
        case (SOL_SOCKET, 6 /* SO_BROADCAST */) where u != nil: o.broadcast = v0 != 0
        default: return .fail(ENOPROTOOPT, .none)
        }
        if let c {
            c.options = o
            // Buffer sizes can only change while the stack's rings are empty; like a late
            // SO_RCVBUF on Linux that has no visible effect, a refusal is not an error.
            if let h = c.handle, let a = apply { try? stack?.tcp.setOption(h, a, now: Self.now()) }
        } else if let u {
            u.options = o
        }
        return .ok(.none)
    }

    // MARK: - Waiters and timers

    /// Answers every RPC waiting on `c` now that its connect outcome is known.
    private func settle(_ c: Connection) {
        let ws = c.waiters
        c.waiters.removeAll()
        for w in ws { answer(w, c) }
    }

    private func answer(_ w: Waiter, _ c: Connection) {
        if w.deadline != nil { timed.removeAll { $0 === w } }
        if case .rpc(let peer) = w.socket.context { peer.waiter = nil; peer.waitingOn = nil }
        switch w.kind {
        case .connect(let nonblocking):
            switch c.state {
            case .connected:
                if reply(w.socket, op: w.op, id: w.id, result: 0, err: 0, body: .info(c.info)) { c.connectReported = true }
            case .connecting:
                reply(w.socket, op: w.op, id: w.id, result: -1, err: EINPROGRESS, body: .info(c.info))
            default:
                let e = c.pendingError != 0 ? c.pendingError : ECONNREFUSED
                let delivered = reply(w.socket, op: w.op, id: w.id, result: -1, err: e, body: .info(c.info))
                if delivered {
                    c.pendingError = 0
                    // A failed blocking connect leaves the app with its kernel socket: the
                    // library closes the socketpair, so our state for it goes too.
                    if !nonblocking { removeTCP(c) }
                }
            }
        case .soError:
            var so = ztrpc_sockopt()
            so.level = SOL_SOCKET
            so.name = SO_ERROR
            so.optlen = 4
            let e = c.state == .connected ? 0 : c.pendingError
            withUnsafeMutableBytes(of: &so.value) { $0.storeBytes(of: e, toByteOffset: 0, as: Int32.self) }
            if reply(w.socket, op: w.op, id: w.id, result: 0, err: 0, body: .opt(so)) { c.pendingError = 0 }
        }
    }

    /// Earliest instant `runTimers` has work.
    var nextDeadline: Instant? {
        var d = nextIdleScan
        for w in timed { if let t = w.deadline, d == nil || t < d! { d = t } }
        return d
    }

    func runTimers(now: Instant) {
        if !timed.isEmpty {
            let due = timed.filter { $0.deadline! <= now }
            for w in due {
                if case .rpc(let peer) = w.socket.context, let c = peer.waitingOn {
                    c.waiters.removeAll { $0 === w }
                    answer(w, c)
                } else {
                    timed.removeAll { $0 === w }
                }
            }
        }
        if let t = nextIdleScan, t <= now {
            nextIdleScan = nil
            var idle: [LoopSocket] = []
            loop.forEach { s in
                if case .rpc(let p) = s.context, p.waiter == nil, now - p.opened >= peerIdle { idle.append(s) }
            }
            for s in idle { loop.close(s) }
            if peerCount - idle.count > 0 { nextIdleScan = now + .seconds(1) }
        }
    }

    // MARK: - Stack events

    func stackEvent(_ e: SocketEvent) {
        switch e {
        case .connected(let h):
            guard let c = byHandle[h], let stack else { return }
            c.state = .connected
            c.local = stack.tcp.localEndpoint(h) ?? c.local
            c.remote = stack.tcp.remoteEndpoint(h) ?? c.remote
            if let d = c.data { loop.setNotifyReadable(d, true) }
            settle(c)
            pumpOut(c)
        case .readable(let h):
            if let c = byHandle[h] { pumpOut(c) } else if let u = udpByHandle[h] { udpDeliver(u) }
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
            c.state = .closed
            if let rx = stack?.tcp.receiveBuffer(h), rx.count > 0, !c.appReadClosed, let d = c.data, !d.isClosed {
                // The app has not taken everything yet: keep the handle, whose receive ring
                // still holds the bytes, until pumpOut has delivered them (then the FIN).
                c.closingWithInput = true
                settle(c)
                return
            }
            releaseClosed(c, h)
        }
    }

    /// The connection closed normally and the app has all its bytes: drop the stack's handle and
    /// give the app its EOF.
    private func releaseClosed(_ c: Connection, _ h: SocketHandle) {
        c.closingWithInput = false
        byHandle[h] = nil
        stack?.tcp.release(h, now: Self.now())
        c.handle = nil
        if !c.finDelivered, let d = c.data, !d.isClosed {
            Glibc.shutdown(d.fd, Int32(SHUT_WR))
            c.finDelivered = true
        }
        settle(c)
    }

    /// The TCP connection ended with an error: the app reads EOF, SO_ERROR tells why.
    private func fail(_ c: Connection) {
        if let h = c.handle {
            byHandle[h] = nil
            stack?.tcp.release(h, now: Self.now())
            c.handle = nil
        }
        if c.state == .listening {
            removeTCP(c)
            return
        }
        c.state = .closed
        if let d = c.data, !d.isClosed {
            if !c.finDelivered { Glibc.shutdown(d.fd, Int32(SHUT_WR)); c.finDelivered = true }
            // Keep reading (and dropping) so the app's close is still seen as a hangup.
            loop.setNotifyReadable(d, true)
        }
        settle(c)
    }

    // MARK: - TCP data path

    /// App -> stack: readv from the daemon end straight into the send buffer's free regions.
    func pumpIn(_ c: Connection) {
        guard let d = c.data, !d.isClosed else { return }
        guard let h = c.handle, let stack, c.state == .connected || c.state == .closed else {
            if c.handle == nil { drainDiscard(c, d) }
            return
        }
        guard let tx = stack.tcp.sendBuffer(h) else { drainDiscard(c, d); return }
        while true {
            let (a, b) = tx.freeRegions()
            if a.count == 0 {
                // Send buffer full: stop reading; the stack's .writable resumes us.
                if !c.readPaused { c.readPaused = true; loop.setNotifyReadable(d, false) }
                return
            }
            do {
                switch try Sys.recvv(d.fd, a, b) {
                case .processed(0):
                    appEOF(c, d)
                    return
                case .processed(let n):
                    stack.tcp.commitSend(h, n, now: Self.now())
                    c.bytesOut &+= UInt64(n)
                    if n < a.count + b.count { resumeReading(c, d); return }
                case .wouldBlock:
                    resumeReading(c, d)
                    return
                }
            } catch {
                // ECONNRESET from a unix socket: the app end is gone.
                appGone(c)
                return
            }
        }
    }

    private func resumeReading(_ c: Connection, _ d: LoopSocket) {
        if c.readPaused || d.suspended {
            c.readPaused = false
            if !c.appEOF { loop.setNotifyReadable(d, true) }
        }
    }

    /// EOF on the daemon end: a half-close (shutdown SHUT_WR: FIN) or a full close (hangup).
    private func appEOF(_ c: Connection, _ d: LoopSocket) {
        var p = pollfd(fd: d.fd, events: 0x2000 /* POLLRDHUP */, revents: 0)
        let hup = Glibc.poll(&p, 1, 0) == 1 && p.revents & Int16(POLLHUP) != 0
        if hup {
            finish(c)
            return
        }
        if !c.appEOF, let h = c.handle {
            c.appEOF = true
            try? stack?.tcp.shutdownWrite(h, now: Self.now())
        }
        // Level-triggered EOF must not spin; the full close arrives as a hangup.
        loop.setNotifyReadable(d, false)
    }

    /// Reads and drops what the app writes to a connection that is over.
    private func drainDiscard(_ c: Connection, _ d: LoopSocket) {
        let buf = datagramBuffer
        while true {
            let n = Glibc.recv(d.fd, buf.baseAddress, buf.count, Int32(MSG_DONTWAIT))
            if n > 0 { continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return }
            appEOF(c, d)
            return
        }
    }

    /// Stack -> app: writev from the receive buffer's readable regions; EAGAIN = the app is not
    /// reading, so the ring stays full and the advertised window closes.
    func pumpOut(_ c: Connection) {
        guard let d = c.data, !d.isClosed, c.state != .listening else { return }
        guard let h = c.handle, let stack, let rx = stack.tcp.receiveBuffer(h) else {
            // Nothing left to deliver: a level-triggered EPOLLOUT must not keep firing.
            if c.writeBlocked { c.writeBlocked = false; loop.setNotifyWritable(d, false) }
            if c.closingWithInput, let h = c.handle { releaseClosed(c, h) }
            return
        }
        while rx.count > 0 {
            if c.appReadClosed {
                stack.tcp.consume(h, rx.count, now: Self.now())
                break
            }
            let (a, b) = rx.readableRegions()
            do {
                switch try Sys.sendv(d.fd, a, b) {
                case .processed(let n):
                    stack.tcp.consume(h, n, now: Self.now())
                    c.bytesIn &+= UInt64(n)
                case .wouldBlock:
                    if !c.writeBlocked { c.writeBlocked = true; loop.setNotifyWritable(d, true) }
                    return
                }
            } catch {
                // EPIPE: the app shut down reading or closed; its hangup follows if closed.
                c.appReadClosed = true
            }
        }
        if c.writeBlocked { c.writeBlocked = false; loop.setNotifyWritable(d, false) }
        if c.closingWithInput {
            releaseClosed(c, h)
        } else if !c.finDelivered && stack.tcp.isPeerClosed(h) {
            Glibc.shutdown(d.fd, Int32(SHUT_WR))
            c.finDelivered = true
        }
    }

    /// The app's end is closed (hangup): finish sending what it wrote, then close.
    func appGone(_ c: Connection) {
        if c.state == .listening { removeTCP(c); return }
        guard let h = c.handle, c.state == .connected, let stack else {
            removeTCP(c)
            return
        }
        if c.options.lingerOn != 0 && c.options.lingerSecs == 0 {
            // SO_LINGER {1, 0}: reset at once.
            byHandle[h] = nil
            stack.tcp.abort(h, now: Self.now())
            c.handle = nil
            removeTCP(c)
            return
        }
        // No app can name this socket any more (its end is closed; the inode may be reused
        // by a new socket): it only drains now, found through its stack handle.
        if tcp[c.key] === c { tcp[c.key] = nil }
        c.appEOF = false
        if let tx = stack.tcp.sendBuffer(h), tx.free == 0 {
            // Nothing can be read now. Re-arming the fd would only bring the (unmaskable) hangup
            // straight back: stay suspended; the stack's .writable calls pumpIn, which reads.
            c.readPaused = true
            return
        }
        c.readPaused = false
        if let d = c.data { loop.setNotifyReadable(d, true) }
        // Reads the rest; EOF with HUP ends in finish(c). A full send buffer waits for .writable.
        pumpIn(c)
    }

    /// Everything the app wrote is in the stack: graceful close (FIN after the queued bytes).
    private func finish(_ c: Connection) {
        if let h = c.handle {
            byHandle[h] = nil
            stack?.tcp.release(h, now: Self.now())
            c.handle = nil
        }
        removeTCP(c)
    }

    /// Forgets `c` entirely: its daemon end is closed, its port released.
    private func removeTCP(_ c: Connection) {
        if tcp[c.key] === c { tcp[c.key] = nil }
        if let h = c.handle {
            byHandle[h] = nil
            stack?.tcp.abort(h, now: Self.now())
            c.handle = nil
        }
        unreserve(c)
        for (conn, appEnd) in c.undelivered {
            Glibc.close(appEnd)
            removeTCP(conn)
        }
        c.undelivered.removeAll()
        if let d = c.data { loop.close(d); c.data = nil }
        c.state = .closed
        let ws = c.waiters
        c.waiters.removeAll()
        for w in ws {
            timed.removeAll { $0 === w }
            reply(w.socket, op: w.op, id: w.id, result: -1, err: c.pendingError != 0 ? c.pendingError : ECONNABORTED, body: .none)
        }
    }

    // MARK: - Accept

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
        while let nh = (try? stack.tcp.accept(h, now: Self.now())) ?? nil {
            var sv: [Int32] = [-1, -1]
            guard cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), &sv) == 0 else {
                logger.warning("accept: socketpair failed", metadata: ["network": "\(network)", "errno": "\(errno)"])
                stack.tcp.abort(nh, now: Self.now())
                return
            }
            guard let key = FDKey.of(sv[0]) else { Glibc.close(sv[0]); Glibc.close(sv[1]); stack.tcp.abort(nh, now: Self.now()); continue }
            let nc = Connection(key: key, pid: c.pid, uid: c.uid)
            nc.options = c.options
            nc.options.reuseAddr = false
            nc.handle = nh
            nc.state = .connected
            nc.connectReported = true
            nc.local = stack.tcp.localEndpoint(nh)
            nc.remote = stack.tcp.remoteEndpoint(nh)
            do {
                try Sys.setNonBlocking(sv[1])
                nc.data = try loop.add(fd: sv[1], kind: .stream, context: .tcp(nc))
            } catch {
                Glibc.close(sv[0]); Glibc.close(sv[1])
                stack.tcp.abort(nh, now: Self.now())
                continue
            }
            tcp[key] = nc
            byHandle[nh] = nc
            if !sendAccept(ch, nc, sv[0]) {
                c.undelivered.append((nc, sv[0]))
                loop.setNotifyWritable(ch, true)
                return
            }
            pumpOut(nc)
        }
    }

    /// One ztrpc_accept_msg + SCM_RIGHTS(app end). False if the channel is full (app not accepting).
    private func sendAccept(_ ch: LoopSocket, _ nc: Connection, _ appEnd: Int32) -> Bool {
        var msg = ztrpc_accept_msg(magic: ZTRPC_MAGIC, reserved: 0, local: Wire.addr(nc.local), peer: Wire.addr(nc.remote))
        var fd = appEnd
        let n = cshim_send_with_fds(ch.fd, &msg, MemoryLayout<ztrpc_accept_msg>.size, &fd, 1, Int32(MSG_DONTWAIT))
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return false }
        // Sent (the app holds the end now), or the listener is gone (its hangup cleans up).
        Glibc.close(appEnd)
        if n < 0 { removeTCP(nc) }
        return true
    }

    /// Something on the accept channel: the app never writes there, so this is its close.
    func acceptChannelReadable(_ c: Connection, _ s: LoopSocket) {
        let n = Glibc.recv(s.fd, datagramBuffer.baseAddress, datagramBuffer.count, Int32(MSG_DONTWAIT))
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
        if n > 0 { return }
        removeTCP(c)
    }

    // MARK: - UDP

    private func udpCreate(_ r: inout Request, _ sr: ztrpc_sock_req, local: IPv4Endpoint) -> Result<UDPConnection, Errno> {
        guard let stack else { return .failure(.networkDown) }
        guard let (key, fd) = takeNew(&r, type: Int32(SOCK_SEQPACKET.rawValue)) else { return .failure(.badFileDescriptor) }
        let h: SocketHandle
        do {
            h = try stack.udpOpen(local: local)
        } catch {
            Glibc.close(fd)
            return .failure(Errno(rawValue: Wire.errno(error)))
        }
        let u = UDPConnection(key: key, pid: r.peer.pid, uid: r.peer.uid, handle: h)
        u.options = SocketOptions(sr.opts)
        do {
            u.data = try loop.add(fd: fd, kind: .stream, context: .udp(u))
        } catch {
            Glibc.close(fd)
            stack.udpClose(h)
            return .failure(error)
        }
        udp[key] = u
        udpByHandle[h] = u
        return .success(u)
    }

    private func udpConnect(_ r: inout Request, _ sr: ztrpc_sock_req, isNew: Bool) -> Outcome {
        guard let stack else { return .fail(ENETDOWN, .none) }
        let u: UDPConnection
        if isNew {
            switch udpCreate(&r, sr, local: IPv4Endpoint(.any, 0)) {
            case .success(let x): u = x
            case .failure(let e): return .fail(e.rawValue, .none)
            }
        } else {
            guard let x = lookup(r).1 else { return .fail(ENOTSOCK, .none) }
            u = x
        }
        let dst = Wire.endpoint(sr.addr)
        do {
            try stack.udpConnect(u.handle, remote: dst.address.isUnspecified && dst.port == 0 ? nil : dst)
        } catch {
            if isNew { removeUDP(u) }
            return .fail(Wire.errno(error), .none)
        }
        return .ok(.info(udpInfo(u)))
    }

    private func udpInfo(_ u: UDPConnection) -> ztrpc_sockinfo {
        let remote = stack?.udpRemoteEndpoint(u.handle)
        var local = stack?.udpLocalEndpoint(u.handle)
        if let l = local, l.address.isUnspecified, let r = remote, let a = sourceAddress(for: r.address) {
            // A connected socket names the address it sends from, like Linux.
            local = IPv4Endpoint(a, l.port)
        }
        return ztrpc_sockinfo(proto: IPProtocol.udp, state: remote != nil ? ZTRPC_STATE_CONNECTED : ZTRPC_STATE_BOUND,
                              reserved0: 0, backlog: 0, local: Wire.addr(local), peer: Wire.addr(remote))
    }

    private func sourceAddress(for dst: IPv4Address) -> IPv4Address? {
        guard let addrs = stack?.addresses else { return nil }
        return addrs.first(where: { $0.contains(dst) })?.address ?? addrs.first?.address
    }

    /// App -> stack: one message = ztrpc_dgram + payload = one datagram.
    func udpReadable(_ u: UDPConnection, _ s: LoopSocket) {
        let buf = datagramBuffer
        let hdr = MemoryLayout<ztrpc_dgram>.size
        for _ in 0..<64 {
            let n = Glibc.recv(s.fd, buf.baseAddress, buf.count, Int32(MSG_DONTWAIT))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { return }
                removeUDP(u)
                return
            }
            if n == 0 {
                // SEQPACKET: zero bytes is the peer's close (a real message has at least the header).
                removeUDP(u)
                return
            }
            guard n >= hdr, let stack else { u.dropped &+= 1; continue }
            let a = buf.loadUnaligned(as: ztrpc_addr.self)
            let dst = Wire.endpoint(a)
            let to: IPv4Endpoint? = dst.address.isUnspecified && dst.port == 0 ? nil : dst
            do {
                try stack.udpSend(u.handle, to: to, UnsafeRawBufferPointer(rebasing: buf[hdr..<n]), now: Self.now())
                u.bytesOut &+= UInt64(n - hdr)
            } catch {
                u.dropped &+= 1
            }
        }
    }

    /// Stack -> app: every queued datagram, prefixed with its source. A full app socket drops
    /// (UDP semantics; memory stays bounded by the socketpair's buffer).
    func udpDeliver(_ u: UDPConnection) {
        guard let stack, let s = u.data, !s.isClosed else { return }
        let buf = datagramBuffer
        let hdr = MemoryLayout<ztrpc_dgram>.size
        if let e = stack.udpTakeError(u.handle), !u.appReadClosed {
            // An ICMP error for the connected peer: a payload-less message the library turns
            // into -1/errno on the app's next receive.
            var a = Wire.addr(stack.udpRemoteEndpoint(u.handle) ?? IPv4Endpoint(.any, 0))
            a.reserved = ZTRPC_DGRAM_ERROR | (UInt16(truncatingIfNeeded: Wire.errno(e)) & ZTRPC_DGRAM_ERRNO_MASK)
            buf.storeBytes(of: ztrpc_dgram(addr: a), as: ztrpc_dgram.self)
            _ = Glibc.send(s.fd, buf.baseAddress, hdr, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
        }
        while true {
            let r: (count: Int, length: Int, from: IPv4Endpoint)?
            do {
                r = try stack.udpReceiveDatagram(u.handle, into: UnsafeMutableRawBufferPointer(rebasing: buf[hdr...]))
            } catch { return }
            guard let r else { return }
            if u.appReadClosed { u.dropped &+= 1; continue }
            buf.storeBytes(of: ztrpc_dgram(addr: Wire.addr(r.from)), as: ztrpc_dgram.self)
            let n = Glibc.send(s.fd, buf.baseAddress, hdr + r.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            if n < 0 {
                if errno == EPIPE { u.appReadClosed = true }
                u.dropped &+= 1
            } else {
                u.bytesIn &+= UInt64(r.count)
            }
        }
    }

    func removeUDP(_ u: UDPConnection) {
        if udp[u.key] === u { udp[u.key] = nil }
        if udpByHandle[u.handle] === u {
            udpByHandle[u.handle] = nil
            stack?.udpClose(u.handle)
        }
        if let d = u.data { loop.close(d); u.data = nil }
    }

    // MARK: - Loop callbacks routed here

    func hangup(_ socket: LoopSocket) {
        switch socket.context {
        case .tcp(let c): appGone(c)
        case .acceptChannel(let c): removeTCP(c)
        case .udp(let u): removeUDP(u)
        case .rpc: loop.close(socket)
        default: break
        }
    }

    func writable(_ socket: LoopSocket) {
        switch socket.context {
        case .tcp(let c): pumpOut(c)
        case .acceptChannel(let c): deliverAccepts(c)
        default: break
        }
    }

    // MARK: - Listing

    /// Intercepted sockets with their owner; `handles` receives the stack handles listed here.
    func connections(network: String, handles: inout Set<SocketHandle>) -> [ConnectionInfo] {
        var out: [ConnectionInfo] = []
        let stack = self.stack
        for c in tcp.values {
            var state = c.state.displayName
            var bin = c.bytesIn, bout = c.bytesOut
            if let h = c.handle, let i = stack?.tcp.info(h) {
                state = i.state.displayName
                handles.insert(h)
                bin = max(bin, i.bytesReceived)
                bout = max(bout, i.bytesSent)
            }
            out.append(ConnectionInfo(network: network, proto: "tcp", local: c.local.map { "\($0)" } ?? "*:*",
                                      remote: c.state == .listening ? "*:*" : (c.remote.map { "\($0)" } ?? "*:*"),
                                      state: state, pid: c.pid, uid: c.uid, bytesIn: bin, bytesOut: bout))
        }
        for u in udp.values {
            let l = stack?.udpLocalEndpoint(u.handle).map { "\($0)" } ?? "*:*"
            let r = stack?.udpRemoteEndpoint(u.handle).map { "\($0)" } ?? "*:*"
            out.append(ConnectionInfo(network: network, proto: "udp", local: l, remote: r, state: "OPEN",
                                      pid: u.pid, uid: u.uid, bytesIn: u.bytesIn, bytesOut: u.bytesOut))
        }
        return out
    }

    var socketCount: Int { tcp.count + udp.count }
}
