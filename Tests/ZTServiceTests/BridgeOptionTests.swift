import Glibc
import CShims
import CZTRPC
import NetStack
import PhyLoop
import SystemPackage
import Testing
@testable import ZTService


/// Socket options through the hub on a real loop and real socketpairs: round trips, the cork and
/// the one-way channel (ordering against the data and the next request, identity, bounds).
@Suite struct BridgeOptionTests {
    @Test func socketOptionsRoundTripThroughTheHub() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        var so = ztrpc_sockopt()
        so.level = Int32(IPPROTO_TCP); so.name = TCP_NODELAY; so.optlen = 4
        withUnsafeMutableBytes(of: &so.value) { $0.storeBytes(of: Int32(1), as: Int32.self) }
        #expect(rig.request(ZTRPC_OP_SETSOCKOPT, so, socket: app)?.hdr.result == 0)
        so.optlen = 4
        let r = rig.request(ZTRPC_OP_GETSOCKOPT, so, socket: app)
        let v = r.map { b in b.body.withUnsafeBytes { $0.load(fromByteOffset: 16, as: Int32.self) } }
        #expect(v == 1)
        so.name = 9999
        #expect(rig.request(ZTRPC_OP_GETSOCKOPT, so, socket: app)?.hdr.err == ENOPROTOOPT)
    }

    /// A TCP option message with ZTRPC_OP_NOREPLY on `channel` (nil: a new connection, which
    /// the first such message makes the process's channel). Returns the connection.
    @discardableResult
    func sendUnanswered(_ rig: Rig, _ app: Int32, name: Int32, value: Int32, on channel: Int32? = nil,
                        op: UInt16 = ZTRPC_OP_SETSOCKOPT) -> Int32 {
        var so = ztrpc_sockopt()
        so.level = Int32(IPPROTO_TCP); so.name = name; so.optlen = 4
        withUnsafeMutableBytes(of: &so.value) { $0.storeBytes(of: value, as: Int32.self) }
        guard let channel else {
            return withUnsafeBytes(of: &so) { rig.send(op: op | ZTRPC_OP_NOREPLY, body: $0, fds: [app]) }
        }
        var msg = [UInt8](repeating: 0, count: 256)
        let n = msg.withUnsafeMutableBytes { m in
            withUnsafeBytes(of: &so) { RPCCodec.encodeRequest(op: op | ZTRPC_OP_NOREPLY, id: 1, body: $0, into: m) }
        }
        let sent = msg.withUnsafeBytes { m in
            [app].withUnsafeBufferPointer { f in try? Sys.live.sendWithFDs(channel, UnsafeRawBufferPointer(rebasing: m[0..<n]), fds: f) }
        }
        #expect(sent != nil)
        return channel
    }

    /// Whether the daemon hung up `s` (EOF) within a few steps.
    func hungUp(_ rig: Rig, _ s: Int32) -> Bool {
        var got = -1
        var buf = [UInt8](repeating: 0, count: 64)
        rig.run(limit: 200) {
            got = buf.withUnsafeMutableBytes { Glibc.recv(s, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            return got >= 0
        }
        return got == 0
    }

    @Test func unansweredCorkTakesTheBytesWrittenBeforeItFirst() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 9)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let key = try #require(FDKey.of(app))
        let h = try #require(rig.hub.tcp.lookup(key)?.handle)
        let notSent = { rig.hub.tcp.stack?.tcp.info(h)?.notSentBytes }
        // Written, then corked, with nothing stepped in between: the daemon sees both at once.
        Rig.writeAll(app, [UInt8](repeating: 0x41, count: 100))
        let ch = sendUnanswered(rig, app, name: TCP_CORK, value: 1)
        defer { Glibc.close(ch) }
        let applied = { rig.hub.replier.counters.requests[RPCCounters.index(ZTRPC_OP_SETSOCKOPT)] }
        #expect(rig.run(limit: 200) { applied() == 1 })
        rig.step()
        #expect(notSent() == 0, "the bytes before the cork left uncorked")
        #expect(rig.tcpOption(app, TCP_CORK) == 1)
        // Bytes after it wait for the uncork, which comes over the same connection.
        Rig.writeAll(app, [UInt8](repeating: 0x42, count: 50))
        rig.settle(5)
        #expect(notSent() == 50)
        sendUnanswered(rig, app, name: TCP_CORK, value: 0, on: ch)
        #expect(rig.run(limit: 200) { applied() == 2 })
        rig.step()
        #expect(notSent() == 0)
        #expect(!hungUp(rig, ch), "the channel stays open")
    }

    /// An app socket connected to the peer's discard port, and its connection in the bridge.
    @Test func readOnSettlesAfterAYoungConnectionsShortReadsFindNothing() throws {
        let rig = try Rig()
        let (app, _, c) = try rig.connectedApp()
        defer { Glibc.close(app) }
        let end = try #require(c.data?.fd)
        rig.settle(5)
        // While young, a short read is followed by another (an app that closes right after its
        // last write gets its FIN sent with those bytes); each that finds nothing counts.
        var readsPerWrite: [Int] = []
        for i in 0..<6 {
            let before = rig.faults.recvmsgCount(end)
            Rig.writeAll(app, [UInt8](repeating: UInt8(i), count: 10))
            #expect(rig.run(limit: 200) { c.bytesOut == UInt64(10 * (i + 1)) })
            rig.settle(3)
            readsPerWrite.append(rig.faults.recvmsgCount(end) - before)
        }
        #expect(readsPerWrite == [2, 2, 2, 2, 1, 1])
        #expect(c.emptyReadOns == TCPBridge.readOnLimit)
    }

    /// A connection past its first writes (readOnSettlesAfter...: a short read ends a pump) with
    /// the process's one-way channel open (one option applied); `applied` counts the options.
    func settledWithChannel(_ rig: Rig) throws -> (app: Int32, c: Connection, end: Int32, ch: Int32,
                                                   applied: () -> Int) {
        let (app, _, c) = try rig.connectedApp()
        let end = try #require(c.data?.fd)
        c.emptyReadOns = TCPBridge.readOnLimit
        let ch = sendUnanswered(rig, app, name: TCP_NODELAY, value: 1)
        let applied = { Int(rig.hub.replier.counters.requests[RPCCounters.index(ZTRPC_OP_SETSOCKOPT)]) }
        #expect(rig.run(limit: 200) { applied() == 1 })
        rig.settle(5)
        return (app, c, end, ch, applied)
    }

    @Test func aBatchOfTogglesReadsWhatTheAppWroteOnce() throws {
        let rig = try Rig()
        let (app, c, end, ch, applied) = try settledWithChannel(rig)
        defer { Glibc.close(app); Glibc.close(ch) }
        let h = try #require(c.handle)
        // Written and toggled four times with nothing stepped in between: the daemon takes the
        // four toggles as one batch, and the bytes before them in one read.
        let reads = rig.faults.recvmsgCount(end)
        Rig.writeAll(app, [UInt8](repeating: 0x41, count: 100))
        sendUnanswered(rig, app, name: TCP_CORK, value: 1, on: ch)
        Rig.writeAll(app, [UInt8](repeating: 0x42, count: 50))
        sendUnanswered(rig, app, name: TCP_CORK, value: 0, on: ch)
        sendUnanswered(rig, app, name: TCP_CORK, value: 1, on: ch)
        sendUnanswered(rig, app, name: TCP_CORK, value: 0, on: ch)
        #expect(rig.run(limit: 200) { applied() == 5 })
        rig.settle(5)
        #expect(rig.hub.tcp.stack?.tcp.info(h)?.notSentBytes == 0, "all of it went out")
        #expect(c.bytesOut == 150)
        #expect(rig.faults.recvmsgCount(end) - reads == 2,
                "one read by the batch's first toggle, one by the socket's own readiness (which finds it empty if it comes second)")
        #expect(rig.tcpOption(app, TCP_CORK) == 0)
    }

    @Test func aReadinessReportedBeforeTheSocketWasEmptiedReadsNothing() throws {
        let rig = try Rig()
        let (app, c, end, ch, applied) = try settledWithChannel(rig)
        defer { Glibc.close(app); Glibc.close(ch) }
        // The channel turns readable first, the app's socket second: one epoll_wait reports
        // both, the option's read takes the bytes, and the socket's readiness, reported before
        // that read emptied it, makes no read of its own (it would say EAGAIN).
        let reads = rig.faults.recvmsgCount(end)
        sendUnanswered(rig, app, name: TCP_NODELAY, value: 0, on: ch)
        Rig.writeAll(app, [UInt8](repeating: 0x43, count: 80))
        #expect(rig.run(limit: 200) { applied() == 2 && c.bytesOut == 80 })
        rig.settle(5)
        #expect(rig.faults.recvmsgCount(end) - reads == 1)
        // Later readiness is read as always.
        Rig.writeAll(app, [UInt8](repeating: 0x44, count: 20))
        #expect(rig.run(limit: 200) { c.bytesOut == 100 })
        // A hang-up reported with a readiness is seen even so: the close goes out as a FIN.
        sendUnanswered(rig, app, name: TCP_NODELAY, value: 1, on: ch)
        Glibc.shutdown(app, Int32(SHUT_WR))
        #expect(rig.run(limit: 200) { c.outbound != .open })
    }

    @Test func oneWayMessagesComeBeforeTheProcesssNextRequest() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 9)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let ch = sendUnanswered(rig, app, name: TCP_QUICKACK, value: 1)
        defer { Glibc.close(ch) }
        rig.settle(3)
        // Sent one-way, then asked at once on a request of its own: the answer sees it.
        for v: Int32 in [1, 0, 1] {
            sendUnanswered(rig, app, name: TCP_NODELAY, value: v, on: ch)
            #expect(rig.tcpOption(app, TCP_NODELAY) == v)
        }
    }

    /// A one-way option naming its socket by reference (ztrpc.h "References"): no fd travels.
    func sendByReference(_ rig: Rig, on channel: Int32, name: Int32, value: Int32, ref: ztrpc_sockref) {
        struct Body { var so = ztrpc_sockopt(); var ref = ztrpc_sockref() }
        var b = Body()
        b.so.level = Int32(IPPROTO_TCP); b.so.name = name; b.so.optlen = 4
        withUnsafeMutableBytes(of: &b.so.value) { $0.storeBytes(of: value, as: Int32.self) }
        b.ref = ref
        #expect(MemoryLayout<Body>.size == RPCCodec.sockoptSize + RPCCodec.sockrefSize)
        var msg = [UInt8](repeating: 0, count: 256)
        let n = msg.withUnsafeMutableBytes { m in
            withUnsafeBytes(of: &b) { RPCCodec.encodeRequest(op: ZTRPC_OP_SETSOCKOPT | ZTRPC_OP_NOREPLY, id: 1, body: $0, into: m) }
        }
        #expect(msg.withUnsafeBytes { Glibc.send(channel, $0.baseAddress, n, 0) } == n)
    }

    @Test func aOneWayOptionNamesItsSocketByIdentityAndSecret() throws {
        let rig = try Rig()
        let (app, key, c) = try rig.connectedApp()
        defer { Glibc.close(app) }
        #expect(c.secret != 0)
        // The library learns the secret from the socket's sockinfo.
        let name = try #require(rig.request(ZTRPC_OP_GETNAME, Int32(0), socket: app))
        let info = name.body.withUnsafeBytes { $0.loadUnaligned(as: ztrpc_sockinfo.self) }
        #expect(UInt64(info.secret.0) | UInt64(info.secret.1) << 32 == c.secret)
        let ch = sendUnanswered(rig, app, name: TCP_NODELAY, value: 0)
        defer { Glibc.close(ch) }
        let applied = { rig.hub.replier.counters.requests[RPCCounters.index(ZTRPC_OP_SETSOCKOPT)] }
        #expect(rig.run(limit: 200) { applied() == 1 })
        let good = ztrpc_sockref(dev: key.dev, ino: key.ino, secret: c.secret)
        sendByReference(rig, on: ch, name: TCP_NODELAY, value: 1, ref: good)
        #expect(rig.run(limit: 200) { applied() == 2 })
        #expect(rig.tcpOption(app, TCP_NODELAY) == 1)
        // A wrong secret, another identity, or no secret: dropped, and the channel goes on.
        for bad in [ztrpc_sockref(dev: key.dev, ino: key.ino, secret: c.secret ^ 1),
                    ztrpc_sockref(dev: key.dev, ino: key.ino &+ 1, secret: c.secret),
                    ztrpc_sockref(dev: key.dev, ino: key.ino, secret: 0)] {
            sendByReference(rig, on: ch, name: TCP_NODELAY, value: 0, ref: bad)
        }
        rig.settle(5)
        #expect(applied() == 2)
        #expect(rig.tcpOption(app, TCP_NODELAY) == 1)
        #expect(!hungUp(rig, ch))
        sendByReference(rig, on: ch, name: TCP_CORK, value: 1, ref: good)
        #expect(rig.run(limit: 200) { applied() == 3 })
        #expect(rig.tcpOption(app, TCP_CORK) == 1)
    }

    @Test func aLongRunOfOneWayMessagesIsAppliedInOrderAndLeavesNoFD() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 9)
        #expect(hdr?.result == 0)
        let key = try #require(FDKey.of(app))
        let ch = sendUnanswered(rig, app, name: TCP_NODELAY, value: 0)
        defer { Glibc.close(ch) }
        let applied = { rig.hub.replier.counters.requests[RPCCounters.index(ZTRPC_OP_SETSOCKOPT)] }
        #expect(rig.run(limit: 200) { applied() == 1 })
        // More than two of the daemon's batches (16 messages each), queued before it reads one,
        // each passing the socket's fd: applied in order.
        for i in 0..<40 { sendUnanswered(rig, app, name: TCP_NODELAY, value: Int32(i % 2), on: ch) }
        #expect(rig.run(limit: 200) { applied() == 41 })
        #expect(rig.tcpOption(app, TCP_NODELAY) == 1)
        #expect(!hungUp(rig, ch))
        // An empty message ends the channel; the messages behind it in the same batch are not
        // applied, but the fds they carried are closed with them.
        sendUnanswered(rig, app, name: TCP_NODELAY, value: 0, on: ch)
        #expect(Glibc.send(ch, "", 0, 0) == 0)
        for _ in 0..<3 { sendUnanswered(rig, app, name: TCP_NODELAY, value: 0, on: ch) }
        #expect(hungUp(rig, ch))
        #expect(applied() == 42)
        // No copy of the app's end is left in the daemon: its close ends the connection.
        Glibc.close(app)
        #expect(rig.run(limit: 500) { rig.hub.tcp.lookup(key) == nil })
    }

    @Test func otherRequestsMayNotGoUnanswered() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 9)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        // TCP_MAXSEG can fail (EINVAL), so the library must wait for it: dropped, not applied.
        let before = rig.tcpOption(app, TCP_MAXSEG)
        let s1 = sendUnanswered(rig, app, name: TCP_MAXSEG, value: 600)
        #expect(hungUp(rig, s1))
        Glibc.close(s1)
        #expect(rig.tcpOption(app, TCP_MAXSEG) == before)
        let s2 = sendUnanswered(rig, app, name: TCP_NODELAY, value: 1, op: ZTRPC_OP_GETSOCKOPT)
        #expect(hungUp(rig, s2))
        Glibc.close(s2)
        // On a channel, a message it may not carry is dropped and the channel goes on.
        let ch = sendUnanswered(rig, app, name: TCP_NODELAY, value: 0)
        defer { Glibc.close(ch) }
        sendUnanswered(rig, app, name: TCP_MAXSEG, value: 600, on: ch)
        sendUnanswered(rig, app, name: TCP_NODELAY, value: 1, on: ch)
        rig.settle(3)
        #expect(rig.tcpOption(app, TCP_NODELAY) == 1)
        #expect(rig.tcpOption(app, TCP_MAXSEG) == before)
    }

    @Test func aUserGetsBoundedChannels() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 9)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        var open: [Int32] = []
        defer { for s in open { Glibc.close(s) } }
        for _ in 0..<rig.hub.maxChannelsPerUID { open.append(sendUnanswered(rig, app, name: TCP_NODELAY, value: 1)) }
        rig.settle(5)
        #expect(!open.contains { Rig.events($0, Int16(POLLIN)) != 0 }, "all open, none answered")
        // One more is applied but not kept: the library then uses requests of their own.
        let extra = sendUnanswered(rig, app, name: TCP_NODELAY, value: 0)
        defer { Glibc.close(extra) }
        #expect(hungUp(rig, extra))
        #expect(rig.tcpOption(app, TCP_NODELAY) == 0)
    }

    @Test func failedReplyDeliveryKeepsTheOutcomeForSOError() throws {
        let rig = try Rig()
        // A blocking connect whose reply cannot be sent (ENOBUFS): the library (interrupted, say)
        // asks SO_ERROR later.
        let (app, rpc) = rig.startConnect(port: 4445, nonblocking: false)
        defer { Glibc.close(app) }
        rig.settle(2)
        rig.faults.inject(Fault(call: .sendmsg, fd: nil, effect: .errno(ENOBUFS)))
        #expect(rig.reply(rpc) == nil, "no reply arrived")
        #expect(soError(rig, app) == ECONNREFUSED)
    }
}
