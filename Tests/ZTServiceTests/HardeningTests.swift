import Glibc
import CSandbox
import CShims
import CZTRPC
import Foundation
import Logging
import ZTControl
import NetStack
import PhyLoop
import Testing
@testable @_spi(Fuzzing) import ZTService

// Issue 12: the daemon's trust boundaries on a real loop, real sockets and a peer stack —
// per-user budgets, the confused-deputy check, privileged ports, the stack's own services,
// oversized datagrams, and who closes a network's TAP.

/// A BIND (new TCP socket) to `port` on the rig's stack address; the reply and the app end.
private func bindTCP(_ rig: Rig, port: UInt16, address: IPv4Address? = nil) -> (hdr: ztrpc_rep_hdr?, app: Int32) {
    let (app, daemon) = makePair(streamType)
    var sr = ztrpc_sock_req()
    sr.addr = Wire.addr(IPEndpoint(address ?? rig.stackIP, port))
    sr.proto = IPProtocol.tcp
    sr.flags = ZTRPC_F_NEW
    let r = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_BIND, body: $0, fds: [app, daemon]) }
    Glibc.close(daemon)
    return (r?.hdr, app)
}

/// A new UDP socket (UDP_OPEN); the reply and the app end.
private func openUDP(_ rig: Rig) -> (hdr: ztrpc_rep_hdr?, app: Int32) {
    let (app, daemon) = makePair(seqpacket)
    var sr = ztrpc_sock_req()
    sr.proto = IPProtocol.udp
    sr.flags = ZTRPC_F_NEW
    let r = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_UDP_OPEN, body: $0, fds: [app, daemon]) }
    Glibc.close(daemon)
    return (r?.hdr, app)
}

/// A stream socket connected to a named listener: unnamed on our side, named on the peer's.
private func namedConnection() throws -> (client: Int32, server: Int32, listener: Int32, path: String) {
    let path = NSTemporaryDirectory() + "zt-named-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
    let l = cshim_socket_cloexec(AF_UNIX, streamType, 0)
    try #require(cshim_bind_unix(l, path) == 0 && listen(l, 4) == 0)
    let c = cshim_socket_cloexec(AF_UNIX, streamType, 0)
    try #require(cshim_connect_unix(c, path) == 0)
    let s = accept(l, nil, nil)
    try #require(s >= 0)
    return (c, s, l, path)
}

@Suite struct BudgetTests {
    @Test func budgetsCountAndRefuseWithLinuxErrnos() {
        let b = UserBudgets(.init(tcpSockets: 2, udpSockets: 1, bufferBytes: 1000, pendingRequests: 5))
        #expect(b.take(uid: 7, kind: .tcp, bytes: 400) == nil)
        #expect(b.take(uid: 7, kind: .tcp, bytes: 700) == .memory(limit: 1000))
        #expect(b.take(uid: 7, kind: .tcp, bytes: 600) == nil)
        #expect(b.take(uid: 7, kind: .tcp, bytes: 0) == .sockets(.tcp, limit: 2))
        #expect(UserBudgets.Refusal.sockets(.tcp, limit: 2).errno == EMFILE)
        #expect(UserBudgets.Refusal.memory(limit: 1).errno == ENOBUFS)
        // Another user is not affected.
        #expect(b.take(uid: 8, kind: .tcp, bytes: 1000) == nil)
        #expect(b.take(uid: 7, kind: .udp, bytes: 0) == nil)
        #expect(b.take(uid: 7, kind: .udp, bytes: 0) == .sockets(.udp, limit: 1))
        #expect(b.grow(uid: 8, bytes: 1) == .memory(limit: 1000))
        b.give(uid: 7, kind: .tcp, bytes: 400)
        b.give(uid: 7, kind: .tcp, bytes: 600)
        b.give(uid: 7, kind: .udp, bytes: 0)
        #expect(b.usage(of: 7) == UserBudgets.Usage())
        #expect(b.usage(of: 8) == UserBudgets.Usage(tcpSockets: 1, udpSockets: 0, bufferBytes: 1000))
        // New limits apply to new sockets.
        b.setLimits(.init(tcpSockets: 1, udpSockets: 1, bufferBytes: 1000, pendingRequests: 5))
        #expect(b.take(uid: 8, kind: .tcp, bytes: 0) == .sockets(.tcp, limit: 1))
        #expect(UserBudgets.autoBufferBytes > 1 << 20)
    }

    @Test func tcpSocketBudgetGivesEMFILEAndEverythingIsGivenBack() throws {
        let uid = getuid()
        let rig = try Rig(budgets: UserBudgets(.init(tcpSockets: 2, udpSockets: 8, bufferBytes: 1 << 30)))
        let a = rig.connectTCP(port: 7), b = bindTCP(rig, port: 6000)
        #expect(a.reply?.result == 0 && b.hdr?.result == 0)
        let c = rig.connectTCP(port: 7)
        #expect(c.reply?.result == -1 && c.reply?.err == EMFILE)
        let d = bindTCP(rig, port: 6001)
        #expect(d.hdr?.err == EMFILE)
        #expect(rig.hub.tcp.count == 2 && rig.budgets.usage(of: uid).tcpSockets == 2)
        // The connection's rings at their initial sizes (64K + 64K; they may grow to 256K each
        // here, asking first); the bound socket has none yet.
        #expect(rig.budgets.usage(of: uid).bufferBytes == 128 << 10)
        for fd in [a.app, b.app, c.app, d.app] { Glibc.close(fd) }
        #expect(rig.run { rig.hub.tcp.count == 0 && rig.hub.tcp.byHandle.isEmpty })
        #expect(rig.budgets.usage(of: uid) == UserBudgets.Usage())
        // Room again.
        let e = rig.connectTCP(port: 7)
        #expect(e.reply?.result == 0)
        Glibc.close(e.app)
    }

    /// Found by the rpc fuzz target's charge invariant: CONNECT of a new socket to 0.0.0.0:0
    /// (connect(AF_UNSPEC)) answered without keeping the socket, but kept its charge.
    @Test func aNewSocketDroppedAtOnceGivesItsChargeBack() throws {
        let uid = getuid()
        let rig = try Rig(budgets: UserBudgets(.init(tcpSockets: 2, udpSockets: 8, bufferBytes: 1 << 30)))
        for _ in 0..<3 {
            let (app, daemon) = makePair(streamType)
            var sr = ztrpc_sock_req()
            sr.proto = IPProtocol.tcp
            sr.flags = ZTRPC_F_NEW
            let r = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_CONNECT, body: $0, fds: [app, daemon]) }
            Glibc.close(app); Glibc.close(daemon)
            #expect(r?.hdr.result == 0)
            #expect(rig.budgets.usage(of: uid) == UserBudgets.Usage())
        }
    }

    /// Found by the rpc fuzz target after IPv6 met the budgets: a new socket refused for its
    /// family (an AF_INET one to an IPv6 address, an IPV6_V6ONLY one to ::ffff:a.b.c.d) kept
    /// its charge.
    @Test func aNewSocketRefusedForItsFamilyGivesItsChargeBack() throws {
        let uid = getuid()
        let rig = try Rig(budgets: UserBudgets(.init(tcpSockets: 2, udpSockets: 8, bufferBytes: 1 << 30)))
        let cases: [(IPEndpoint, UInt8, UInt16, Int32)] = [
            (IPEndpoint(IPAddress("fd77::1")!, 7), UInt8(AF_INET), 0, EAFNOSUPPORT),
            (IPEndpoint(rig.peerIP, 7), UInt8(AF_INET6), ZTRPC_F_V6ONLY, ENETUNREACH),
        ]
        for (dst, family, flags, err) in cases + cases {
            let (app, daemon) = makePair(streamType)
            var sr = ztrpc_sock_req()
            sr.addr = Wire.addr(dst)
            sr.proto = IPProtocol.tcp
            sr.family = family
            sr.flags = ZTRPC_F_NEW | ZTRPC_F_NONBLOCK | flags
            let r = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_CONNECT, body: $0, fds: [app, daemon]) }
            Glibc.close(app); Glibc.close(daemon)
            #expect(r?.hdr.result == -1 && r?.hdr.err == err)
            #expect(rig.budgets.usage(of: uid) == UserBudgets.Usage())
        }
    }

    @Test func bufferMemoryBudgetGivesENOBUFS() throws {
        let uid = getuid()
        // One connection's rings (64K + 64K to start with) fit, a second's do not.
        let rig = try Rig(budgets: UserBudgets(.init(tcpSockets: 100, udpSockets: 8, bufferBytes: 200 << 10)))
        let a = rig.connectTCP(port: 7)
        #expect(a.reply?.result == 0)
        let b = rig.connectTCP(port: 7)
        #expect(b.reply?.err == ENOBUFS)
        // A bound socket costs no rings until it connects, and then is refused the same way.
        let c = bindTCP(rig, port: 6002)
        #expect(c.hdr?.result == 0)
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(rig.peerIP, 7))
        sr.proto = IPProtocol.tcp
        #expect(rig.request(ZTRPC_OP_CONNECT, sr, socket: c.app)?.hdr.err == ENOBUFS)
        // SO_RCVBUF growing the live connection's ring past the budget is refused too.
        var so = ztrpc_sockopt()
        so.level = SOL_SOCKET; so.name = SO_RCVBUF; so.optlen = 4
        withUnsafeMutableBytes(of: &so) { $0.storeBytes(of: Int32(4 << 20), toByteOffset: 16, as: Int32.self) }
        #expect(rig.request(ZTRPC_OP_SETSOCKOPT, so, socket: a.app)?.hdr.err == ENOBUFS)
        #expect(rig.budgets.usage(of: uid).bufferBytes == 128 << 10)
        // Autotuning asks before the rings grow: within the budget the growth is charged, past
        // it refused (the rings stay), and shrinking gives it back.
        let h = try #require(rig.hub.tcp.byHandle.first?.key)
        #expect(rig.hub.tcp.ringsMayGrow(h, by: 64 << 10))
        #expect(rig.budgets.usage(of: uid).bufferBytes == 192 << 10)
        #expect(!rig.hub.tcp.ringsMayGrow(h, by: 64 << 10))
        #expect(rig.budgets.usage(of: uid).bufferBytes == 192 << 10)
        rig.hub.tcp.ringsShrank(h, by: 1 << 20)   // never more than the growth
        #expect(rig.budgets.usage(of: uid).bufferBytes == 128 << 10)
        #expect(rig.hub.tcp.ringsMayGrow(h, by: 32 << 10))
        #expect(!rig.hub.tcp.ringsMayGrow(SocketHandle(index: 999, generation: 1), by: 1))
        for fd in [a.app, b.app, c.app] { Glibc.close(fd) }
        #expect(rig.run { rig.hub.tcp.count == 0 && rig.hub.tcp.byHandle.isEmpty })
        #expect(rig.budgets.usage(of: uid) == UserBudgets.Usage())
    }

    @Test func acceptedConnectionsOverTheListenersBudgetAreReset() throws {
        let rig = try Rig(budgets: UserBudgets(.init(tcpSockets: 2, udpSockets: 8, bufferBytes: 1 << 30)))
        let (hdr, app) = bindTCP(rig, port: 8090)
        #expect(hdr?.result == 0)
        let (chApp, chDaemon) = makePair(seqpacket)
        defer { Glibc.close(chApp) }
        var lr = ztrpc_listen_req()
        lr.backlog = 8
        #expect(rig.request(ZTRPC_OP_LISTEN, lr, socket: app, extra: [chDaemon, chApp])?.hdr.result == 0)
        Glibc.close(chDaemon); Glibc.close(app)
        // The listener is one socket; the first accepted connection the second; the next is reset.
        let first = try rig.peer.tcpConnect(local: IPEndpoint(rig.peerIP, 0), remote: IPEndpoint(rig.stackIP, 8090),
                                            now: NetworkLoop.now())
        var accepted: [Int32] = []
        rig.run {
            if let a = Rig.takeAccept(chApp) { accepted += a.fds }
            return !accepted.isEmpty
        }
        #expect(accepted.count == 1 && rig.peer.tcp.info(first)?.state == .established)
        let second = try rig.peer.tcpConnect(local: IPEndpoint(rig.peerIP, 0), remote: IPEndpoint(rig.stackIP, 8090),
                                             now: NetworkLoop.now())
        #expect(rig.run { rig.peer.tcp.info(second) == nil || rig.peer.tcp.info(second)?.state == .closed })
        #expect(rig.hub.tcp.count == 2)
        for fd in accepted { Glibc.close(fd) }
    }

    @Test func udpSocketBudgetGivesEMFILE() throws {
        let uid = getuid()
        let rig = try Rig(budgets: UserBudgets(.init(tcpSockets: 8, udpSockets: 1, bufferBytes: 1 << 30)))
        let a = openUDP(rig), b = openUDP(rig)
        #expect(a.hdr?.result == 0 && b.hdr?.err == EMFILE)
        #expect(rig.budgets.usage(of: uid).udpSockets == 1 && rig.budgets.usage(of: uid).bufferBytes > 0)
        Glibc.close(a.app); Glibc.close(b.app)
        #expect(rig.run { rig.hub.udp.count == 0 })
        #expect(rig.budgets.usage(of: uid) == UserBudgets.Usage())
    }
}

@Suite struct TrustTests {
    @Test func onlyTheCallersOwnUnnamedSocketpairEndIsAccepted() throws {
        let me = RPCPeer(pid: getpid(), uid: getuid(), gid: getgid(), allowed: true, opened: .zero)
        let (x, y) = makePair(streamType)
        defer { Glibc.close(x); Glibc.close(y) }
        #expect(Trust.ownsSocketpairEnd(y, peer: me))
        // Created by another process (SO_PEERCRED names the creator) or by another user.
        #expect(!Trust.ownsSocketpairEnd(y, peer: RPCPeer(pid: getpid() + 1, uid: getuid(), gid: 0, allowed: true, opened: .zero)))
        #expect(!Trust.ownsSocketpairEnd(y, peer: RPCPeer(pid: getpid(), uid: getuid() + 1, gid: 0, allowed: true, opened: .zero)))
        // A connection to a named server: never, on either side.
        let n = try namedConnection()
        defer { Glibc.close(n.client); Glibc.close(n.server); Glibc.close(n.listener); unlink(n.path) }
        #expect(!Trust.ownsSocketpairEnd(n.client, peer: me))
        #expect(!Trust.ownsSocketpairEnd(n.server, peer: me))
    }

    @Test func aForeignDaemonEndIsRefusedWithEBADFAndNothingIsKept() throws {
        let rig = try Rig()
        let n = try namedConnection()
        defer { Glibc.close(n.server); Glibc.close(n.listener); unlink(n.path) }
        let (app, other) = makePair(streamType)
        defer { Glibc.close(app); Glibc.close(other) }
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(rig.peerIP, 19))   // chargen: it would pump bytes at once
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW
        let r = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_CONNECT, body: $0, fds: [app, n.client]) }
        Glibc.close(n.client)
        #expect(r?.hdr.result == -1 && r?.hdr.err == EBADF)
        #expect(rig.hub.tcp.count == 0 && rig.hub.tcp.byHandle.isEmpty)
        rig.settle(20)
        #expect(Rig.drain(n.server).count == 0, "ztapd never wrote into the foreign connection")
    }

    /// Found by the rpc fuzz target: handing back an end ztapd already holds (the app end of a
    /// bound socket as the daemon end of a new one, or a kept copy of a daemon end) made ztapd
    /// hold both ends of one pair; neither hung up and the entries piled up for good.
    @Test func endsZtapdAlreadyHoldsAreNotANewPair() throws {
        let rig = try Rig()
        let (s0, s1) = makePair(streamType)
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(rig.stackIP, 6100))
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW
        let b = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_BIND, body: $0, fds: [s0, s1]) }
        #expect(b?.hdr.result == 0)
        var cr = ztrpc_sock_req()
        cr.addr = Wire.addr(IPEndpoint(rig.peerIP, 7))
        cr.proto = IPProtocol.tcp
        cr.flags = ZTRPC_F_NEW
        // The pair the other way round: s0 is the bound socket's app end, s1 ztapd's end of it.
        let swapped = withUnsafeBytes(of: &cr) { rig.call(op: ZTRPC_OP_CONNECT, body: $0, fds: [s1, s0]) }
        #expect(swapped?.hdr.err == EBADF)
        // A fresh app end with the kept copy of ztapd's end as the "daemon end".
        let (x, y) = makePair(streamType)
        let kept = withUnsafeBytes(of: &cr) { rig.call(op: ZTRPC_OP_CONNECT, body: $0, fds: [x, s1]) }
        #expect(kept?.hdr.err == EBADF)
        #expect(rig.hub.tcp.count == 1)
        for fd in [s0, s1, x, y] { Glibc.close(fd) }
        #expect(rig.run { rig.hub.tcp.count == 0 && rig.hub.socketCount == 0 })
    }

    @Test func capabilityIsReadFromProcAndFallsBackToUIDZero() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000000400\n"
        #expect(Trust.hasNetBindService(status: status) == true)
        #expect(Trust.hasNetBindService(status: "CapEff:\t0000000000001000\n") == false)
        #expect(Trust.hasNetBindService(status: "Name:\tx\n") == nil)
        let (x, y) = makePair(streamType)   // SO_PEERPIDFD names ourselves
        defer { Glibc.close(x); Glibc.close(y) }
        let root = RPCPeer(pid: getpid(), uid: 0, gid: 0, allowed: true, opened: .zero)
        let user = RPCPeer(pid: getpid(), uid: 1000, gid: 1000, allowed: true, opened: .zero)
        func reader(_ capEff: String?, uidMap: String = "0 0 4294967295\n") -> (String) -> String? {
            { path in
                if path.hasSuffix("/status") { return capEff.map { "CapEff:\t\($0)\n" } }
                return uidMap
            }
        }
        let peerPidfd = cshim_peer_pidfd(y)
        if peerPidfd >= 0 {
            Glibc.close(peerPidfd)
            // Readable: the capability decides, whatever the uid (Linux checks capabilities).
            #expect(Trust.mayBindPrivileged(rpcFD: y, peer: user, read: reader("0000000000000400")))
            #expect(!Trust.mayBindPrivileged(rpcFD: y, peer: root, read: reader("0000000000000000")))
            // The capability of another user namespace does not count here.
            #expect(!Trust.mayBindPrivileged(rpcFD: y, peer: user, read: { p in
                p.hasSuffix("/status") ? "CapEff:\t000001ffffffffff\n" : (p.contains("self") ? "0 0 4294967295\n" : "0 1000 1\n")
            }))
        }
        // Hidden /proc (ProtectProc=invisible) or no pidfd: uid 0 only.
        #expect(Trust.mayBindPrivileged(rpcFD: y, peer: root, read: reader(nil)))
        #expect(!Trust.mayBindPrivileged(rpcFD: y, peer: user, read: reader(nil)))
        #expect(!Trust.mayBindPrivileged(rpcFD: -1, peer: user, read: reader("0000000000000400")))
    }

    @Test func privilegedPortsFollowTheCapabilityOrTheNetworkKey() throws {
        // The test process: root with every capability normally (CI); then binding 80 works.
        let mine = Trust.readSmallFile("/proc/self/status").flatMap(Trust.hasNetBindService) ?? false
        let rig = try Rig()
        let (hdr, app) = bindTCP(rig, port: 80)
        defer { Glibc.close(app) }
        #expect(hdr?.result == (mine ? 0 : -1))
        if !mine { #expect(hdr?.err == EACCES) }
        var granted = AccessList()
        granted.privilegedPorts = true
        let rig2 = try Rig(access: granted)
        let (hdr2, app2) = bindTCP(rig2, port: 81)
        defer { Glibc.close(app2) }
        #expect(hdr2?.result == 0)
    }

    @Test func theStacksServicesCannotBeShadowed() throws {
        let rig = try Rig(stackServices: ["echo", "discard"])
        for (port, address) in [(UInt16(7), rig.stackIP), (7, IPv4Address(0, 0, 0, 0)), (9, rig.stackIP)] {
            let (hdr, app) = bindTCP(rig, port: port, address: address)
            Glibc.close(app)
            #expect(hdr?.err == EADDRINUSE, "port \(port) on \(address)")
        }
        let (hdr, app) = bindTCP(rig, port: 19)   // chargen is off here: free
        Glibc.close(app)
        #expect(hdr?.result == 0)
    }
}

@Suite struct DatagramAndLifecycleTests {
    @Test func anOversizedDatagramIsDroppedWholeNotCutShort() throws {
        let rig = try Rig()
        let (hdr, app) = openUDP(rig)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        var big = 256 << 10
        _ = setsockopt(app, SOL_SOCKET, SO_SNDBUF, &big, 4)
        let header = withUnsafeBytes(of: RPCCodec.datagramHeader(from: IPEndpoint(rig.peerIP, 7))) { Array($0) }
        let huge = header + [UInt8](repeating: 0x55, count: 70000)
        #expect(huge.withUnsafeBytes { Glibc.send(app, $0.baseAddress, $0.count, 0) } == huge.count)
        let small = header + Array("after".utf8)
        _ = small.withUnsafeBytes { Glibc.send(app, $0.baseAddress, $0.count, 0) }
        var back: [UInt8] = []
        rig.run { back = Rig.drain(app); return !back.isEmpty }
        // Only the small one comes back from the peer's echo; the big one was counted, not sent.
        #expect(Array(back.dropFirst(MemoryLayout<ztrpc_dgram>.size)) == Array("after".utf8))
        let u = try #require(rig.hub.udp.byKey.values.first)
        #expect(u.oversized == 1)
    }

    @Test func theTAPIsClosedOnlyOnceTheLoopThreadIsDone() throws {
        var p: [Int32] = [-1, -1]
        #expect(pipe(&p) == 0)
        defer { Glibc.close(p[1]) }
        let fd = p[0]
        func isOpen() -> Bool { fcntl(fd, F_GETFD) != -1 }
        // stop gave up waiting while the thread still runs: the fd stays open until it ends.
        let late = TapCloser { _ = Glibc.close(fd) }
        #expect(!late.release())
        #expect(isOpen())
        late.threadFinished()
        #expect(!isOpen())
        // The usual order: the thread ends, stop closes.
        var q: [Int32] = [-1, -1]
        #expect(pipe(&q) == 0)
        defer { Glibc.close(q[1]) }
        let fd2 = q[0]
        let usual = TapCloser { _ = Glibc.close(fd2) }
        usual.threadFinished()
        #expect(fcntl(fd2, F_GETFD) != -1)
        #expect(usual.release())
        #expect(fcntl(fd2, F_GETFD) == -1)
    }
}

@Suite struct SandboxListTests {
    @Test func theAllowListHoldsWhatZtapdNeedsAndNothingThatEscapes() {
        for needed in ["read", "recvmsg", "sendmsg", "epoll_wait", "accept4", "socket", "socketpair", "clone",
                       "ioctl", "openat", "rename", "futex", "pidfd_send_signal", "exit_group"] {
            #expect(zt_sandbox_allowed(needed) == 1, "\(needed)")
        }
        for escape in ["execve", "execveat", "fork", "vfork", "ptrace", "mount", "setuid", "capset", "kill",
                       "process_vm_writev", "bpf", "init_module", "unshare", "setns", "keyctl", "io_uring_setup",
                       "clone3", "memfd_create", "userfaultfd", "chroot", "open_by_handle_at"] {
            #expect(zt_sandbox_allowed(escape) == 0, "\(escape)")
        }
        #expect(zt_sandbox_allowed("no_such_call") == -1)
    }
}

@Suite struct FuzzSeedTests {
    /// The committed seeds of the rpc and control fuzz targets run through the same entry points
    /// in every `swift test` (the fuzzing itself is scripts/fuzz.sh).
    @Test func rpcAndControlSeedsRunClean() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz")
        for (target, run) in [("rpc", ServiceFuzz.rpc), ("control", ServiceFuzz.control)] as [(String, (UnsafeRawBufferPointer) -> Void)] {
            let dir = root.appendingPathComponent(target)
            let files = try FileManager.default.contentsOfDirectory(atPath: dir.path)
            #expect(files.count >= 20, "\(target) seeds")
            for f in files {
                let d = try Data(contentsOf: dir.appendingPathComponent(f))
                d.withUnsafeBytes { run($0) }
            }
        }
        // The rigs' scratch directories (named by pid); nothing uses them after this test.
        for name in ["ztap-fuzz-\(getpid())", "ztap-fuzz-control-\(getpid())"] {
            try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + name)
        }
    }
}

@Suite struct ControlInputTests {
    /// Found by the control fuzz target: a join option with a line break reached
    /// INIDocument.set's precondition and ended ztapd. Now it is an EINVAL answer.
    @Test func joinOptionsWithControlCharactersAreRefusedNotACrash() throws {
        let dir = NSTemporaryDirectory() + "ztsvc-join-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir + "/etc/networks.d", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let d = Daemon(options: DaemonOptions(configDir: dir + "/etc", runDir: dir + "/run"), logger: Logger(label: "test"))
        let peer = Daemon.ControlPeer(pid: getpid(), uid: 0, gid: 0, allowed: true)
        for bad in ["zt\r0", "zt\n[Access]", "a\u{7}b"] {
            var o = JoinOptions()
            o.interface = bad
            var r = ControlRequest(command: .join, name: "fz")
            r.join = o
            let answer = d.handle(r, peer: peer)
            #expect(!answer.ok && answer.errno == EINVAL && answer.error?.contains("Interface=") == true)
            var o2 = JoinOptions()
            o2.addresses = ["10.1.0.2/24\nAllowUsers=evil"]
            r.join = o2
            #expect(d.handle(r, peer: peer).errno == EINVAL)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/etc/networks.d").isEmpty)
    }
}
