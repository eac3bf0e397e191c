import Glibc
import CShims
import CZTRPC
import NetStack
import PhyLoop
import Testing
@testable import ZTService

/// A socket whose connection ended connects again, as Linux lets it: the error once (or
/// ECONNABORTED), then a new handshake over a new data pair (RENEW); a socket a connect() reported
/// connected answers EISCONN for good.
@Suite struct BridgeReconnectTests {
    /// CONNECT on an existing socket (fds[0] = its app end), plugged like the library's.
    func connect(_ rig: Rig, _ app: Int32, port: UInt16, nonblocking: Bool, plug: Bool = true) -> Int32 {
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(rig.peerIP, port))
        sr.proto = IPProtocol.tcp
        sr.flags = nonblocking ? ZTRPC_F_NONBLOCK : 0
        if plug { Rig.plug(app, &sr) }
        return withUnsafeBytes(of: &sr) { rig.send(op: ZTRPC_OP_CONNECT, body: $0, fds: [app]) }
    }

    /// RENEW: a new pair for `app`'s socket; the new app end on success.
    func renew(_ rig: Rig, _ app: Int32) -> (reply: ztrpc_rep_hdr?, info: ztrpc_sockinfo?, app: Int32) {
        let (newApp, daemon) = makePair(streamType)
        let r = rig.call(op: ZTRPC_OP_RENEW, body: UnsafeRawBufferPointer(start: nil, count: 0), fds: [app, daemon, newApp])
        Glibc.close(daemon)
        let info = r.flatMap { $0.body.count >= MemoryLayout<ztrpc_sockinfo>.size
            ? $0.body.withUnsafeBytes { $0.loadUnaligned(as: ztrpc_sockinfo.self) } : nil }
        return (r?.hdr, info, newApp)
    }

    func echo(_ rig: Rig, _ app: Int32, _ text: String) -> Bool {
        let msg = Array(text.utf8)
        Rig.writeAll(app, msg)
        var got: [UInt8] = []
        rig.run { got += Rig.drain(app); return got.count >= msg.count }
        return got == msg
    }

    @Test func failedNonBlockingConnectReportsOnceThenConnectsAnew() throws {
        let rig = try Rig()
        let (app, rpc) = rig.startConnect(port: 4446, nonblocking: true)
        defer { Glibc.close(app) }
        #expect(rig.reply(rpc)?.hdr.err == EINPROGRESS)
        #expect(rig.run { Rig.events(app) & Int16(POLLERR) != 0 })
        #expect(soError(rig, app) == ECONNREFUSED)
        let oldKey = try #require(FDKey.of(app))
        // The error was read: Linux's second connect says ECONNABORTED and disconnects.
        let second = rig.reply(connect(rig, app, port: 7, nonblocking: true, plug: false))
        #expect(second?.hdr.result == -1 && second?.hdr.err == ECONNABORTED)
        let c = try #require(rig.hub.tcp.lookup(oldKey))
        #expect(c.phase == .unbound && c.handle == nil && c.data == nil)
        // Its pair died with the failure: the next connect asks for a new one first.
        #expect(rig.reply(connect(rig, app, port: 7, nonblocking: true, plug: false))?.hdr.err == ZTRPC_E_RENEW)
        let (hdr, info, newApp) = renew(rig, app)
        defer { Glibc.close(newApp) }
        #expect(hdr?.result == 0)
        let newKey = try #require(FDKey.of(newApp))
        #expect(info?.dev == newKey.dev && info?.ino == newKey.ino, "known by the new app end")
        #expect(rig.hub.tcp.lookup(newKey) === c && rig.hub.tcp.byKey[oldKey] == nil)
        // The third connect is a new handshake over the new pair.
        #expect(rig.reply(connect(rig, newApp, port: 7, nonblocking: true))?.hdr.err == EINPROGRESS)
        #expect(rig.run { Rig.events(newApp) & Int16(POLLOUT) != 0 })
        #expect(soError(rig, newApp) == 0)
        #expect(echo(rig, newApp, "connected anew"))
        // It lingered as a name; now it has a pair again and outlives the linger.
        rig.hub.tcp.runTimers(now: NetworkLoop.now() + .seconds(120))
        #expect(rig.hub.tcp.lookup(newKey) === c)
    }

    @Test func renewIsOnlyForASocketWithoutItsPair() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let (r, _, newApp) = renew(rig, app)
        Glibc.close(newApp)
        #expect(r?.result == -1 && r?.err == EINVAL)
        #expect(echo(rig, app, "still the same pair"))
    }

    @Test func renewRefusesWhatIsNotANewStreamPair() throws {
        let rig = try Rig()
        let (app, rpc) = rig.startConnect(port: 4446, nonblocking: true)
        defer { Glibc.close(app) }
        #expect(rig.reply(rpc)?.hdr.err == EINPROGRESS)
        #expect(rig.run { Rig.events(app) & Int16(POLLERR) != 0 })
        #expect(rig.reply(connect(rig, app, port: 7, nonblocking: true, plug: false))?.hdr.err == ECONNREFUSED)
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        // No pair at all, the same end twice, a datagram pair: EBADF, and nothing changes.
        #expect(rig.call(op: ZTRPC_OP_RENEW, body: empty, fds: [app])?.hdr.err == EBADF)
        let (a, d) = makePair(streamType)
        #expect(rig.call(op: ZTRPC_OP_RENEW, body: empty, fds: [app, d, d])?.hdr.err == EBADF)
        let (sa, sd) = makePair(seqpacket)
        #expect(rig.call(op: ZTRPC_OP_RENEW, body: empty, fds: [app, sd, sa])?.hdr.err == EBADF)
        for fd in [a, d, sa, sd] { Glibc.close(fd) }
        let key = try #require(FDKey.of(app))
        let c = try #require(rig.hub.tcp.lookup(key))
        #expect(c.data == nil && c.phase == .unbound)
        // A socket ztapd does not know: ENOTSOCK, as for any op on it.
        let (stranger, strangerPeer) = makePair(streamType)
        defer { Glibc.close(stranger); Glibc.close(strangerPeer) }
        let r = renew(rig, stranger)
        Glibc.close(r.app)
        #expect(r.reply?.result == -1 && r.reply?.err == ENOTSOCK)
        #expect(renew(rig, app).reply?.result == 0, "the right request still works")
    }

    @Test func boundSocketsFailedBlockingConnectKeepsItUnconnectedAndItsPortForARenew() throws {
        let rig = try Rig()
        func bind(_ port: UInt16) -> (app: Int32, result: Int32?) {
            let (app, daemon) = makePair(streamType)
            var sr = ztrpc_sock_req()
            sr.addr = Wire.addr(IPEndpoint(rig.stackIP, port))
            sr.proto = IPProtocol.tcp
            sr.flags = ZTRPC_F_NEW
            let r = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_BIND, body: $0, fds: [app, daemon]) }
            Glibc.close(daemon)
            return (app, r?.hdr.result)
        }
        let (app, bound) = bind(5555)
        defer { Glibc.close(app) }
        #expect(bound == 0)
        let refused = rig.reply(connect(rig, app, port: 4447, nonblocking: false))
        #expect(refused?.hdr.err == ECONNREFUSED)
        let key = try #require(FDKey.of(app))
        let c = try #require(rig.hub.tcp.lookup(key))
        #expect(c.phase == .bound && c.local?.port == 5555, "unconnected, still bound, as on Linux")
        // Without its pair the app's close cannot be seen: the port is not held meanwhile.
        let (other, otherBound) = bind(5555)
        #expect(otherBound == 0)
        let busy = renew(rig, app)
        Glibc.close(busy.app)
        #expect(busy.reply?.err == EADDRINUSE && c.data == nil && c.parkedBind?.port == 5555,
                "a failed RENEW leaves the socket as it was")
        Glibc.close(other)
        #expect(rig.run { rig.hub.tcp.count == 1 })
        let (hdr, _, newApp) = renew(rig, app)
        defer { Glibc.close(newApp) }
        #expect(hdr?.result == 0 && c.binding?.local.port == 5555)
        #expect(rig.reply(connect(rig, newApp, port: 7, nonblocking: false))?.hdr.result == 0)
        #expect(c.local?.port == 5555, "connected from its bound port")
        #expect(echo(rig, newApp, "from 5555"))
    }

    @Test func aSocketReportedConnectedAnswersEISCONNAfterItsConnectionEnds() throws {
        let rig = try Rig()
        // Blocking: connect() said 0 (SS_CONNECTED).
        let (app, hdr) = rig.connectTCP(port: 9)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let key = try #require(FDKey.of(app))
        let c = try #require(rig.hub.tcp.lookup(key))
        c.pendingError = ECONNRESET
        rig.hub.tcp.fail(c)   // as a reset from the peer
        #expect(rig.reply(connect(rig, app, port: 9, nonblocking: false, plug: false))?.hdr.err == EISCONN)
        #expect(soError(rig, app) == ECONNRESET, "the error stays for SO_ERROR")
        // Non-blocking and never reported connected: the error once, and unconnected.
        let (nb, rpc) = rig.startConnect(port: 9, nonblocking: true)
        defer { Glibc.close(nb) }
        #expect(rig.reply(rpc)?.hdr.err == EINPROGRESS)
        #expect(rig.run { Rig.events(nb) & Int16(POLLOUT) != 0 })
        let nbKey = try #require(FDKey.of(nb))
        let d = try #require(rig.hub.tcp.lookup(nbKey))
        d.pendingError = ECONNRESET
        rig.hub.tcp.fail(d)
        #expect(rig.reply(connect(rig, nb, port: 9, nonblocking: true, plug: false))?.hdr.err == ECONNRESET)
        #expect(d.phase == .unbound && !d.reportedConnected)
        #expect(soError(rig, nb) == 0)
    }
}
