import Glibc
import CShims
import CZTRPC
import NetStack
import PhyLoop
import SystemPackage
import Testing
@testable import ZTService

/// TCP and UDP bridge lifecycles on a real loop, real socketpairs and a real peer stack, with
/// faults injected into the syscall layer.
@Suite struct BridgeTests {
    @Test func blockingConnectThenEchoThroughTheStack() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0 && hdr?.err == 0)
        #expect(rig.hub.tcp.count == 1)
        let msg = Array("hello through ztap".utf8)
        Rig.writeAll(app, msg)
        var got: [UInt8] = []
        rig.run { got += Rig.drain(app); return got.count >= msg.count }
        #expect(got == msg)
        let c = try #require(rig.hub.tcp.byKey.values.first)
        #expect(c.isConnected && c.bytesOut == UInt64(msg.count) && c.bytesIn == UInt64(msg.count))
    }

    /// The offload path end to end: virtio headers on the device, super-segments both ways
    /// (the daemon's stack gathers them from the send ring into one write), checksums left
    /// alone, and in-order data handed from the frame straight to the app's socket.
    @Test func echoWithOffloadsThroughTheStack() throws {
        let rig = try Rig(vnet: true)
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0 && hdr?.err == 0)
        let msg = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) }
        var sent = 0
        var got: [UInt8] = []
        rig.run(limit: 100_000) {
            if sent < msg.count {
                let n = msg.withUnsafeBytes { Glibc.send(app, $0.baseAddress! + sent, min(65536, msg.count - sent),
                                                          Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                if n > 0 { sent += n }
            }
            got += Rig.drain(app)
            return got.count >= msg.count
        }
        #expect(got.count == msg.count)
        let same = got == msg; #expect(same, "echoed bytes differ")
        let stack = try #require(rig.loop.driver.netStack)
        #expect(stack.transmitOffloads == .all)
        #expect(stack.counters.superFramesOut > 0 && stack.counters.superFramesIn > 0)
        #expect(rig.peer.counters.superFramesIn > 0 && rig.peer.counters.superFramesOut > 0)
        #expect(stack.counters.droppedChecksum == 0 && stack.counters.droppedMalformed == 0)
        let c = try #require(rig.hub.tcp.byKey.values.first)
        #expect(c.bytesIn == UInt64(msg.count) && c.bytesOut == UInt64(msg.count))
    }

    @Test func refusedConnectLeavesNothingBehind() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 4444)
        defer { Glibc.close(app) }
        #expect(hdr?.result == -1 && hdr?.err == ECONNREFUSED)
        rig.settle(5)
        #expect(rig.hub.tcp.count == 0 && rig.hub.tcp.byHandle.isEmpty)
    }

    @Test func nonBlockingConnectIsEINPROGRESSAtOnceAndWritableOnlyWhenConnected() throws {
        let rig = try Rig()
        let (app, rpc) = rig.startConnect(port: 7, nonblocking: true)
        defer { Glibc.close(app) }
        // Only the daemon's loop runs (the peer never answers yet): the reply still comes at once.
        var reply: [UInt8] = []
        for _ in 0..<50 where reply.isEmpty {
            try rig.loop.turn(maxWait: 1_000_000)
            var b = [UInt8](repeating: 0, count: 128)
            let n = b.withUnsafeMutableBytes { Glibc.recv(rpc, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { reply = Array(b[0..<n]) }
        }
        Glibc.close(rpc)
        let hdr = reply.withUnsafeBytes { RPCCodec.decodeReply($0)?.0 }
        #expect(hdr?.result == -1 && hdr?.err == EINPROGRESS)
        // Plugged: not writable, and SO_ERROR answers 0 at once.
        #expect(Rig.events(app) & Int16(POLLOUT) == 0)
        #expect(soError(rig, app) == 0)
        // The handshake ends: writable, and the filler never reaches the peer.
        #expect(rig.run { Rig.events(app) & Int16(POLLOUT) != 0 })
        #expect(soError(rig, app) == 0)
        Rig.writeAll(app, Array("after the plug".utf8))
        var got: [UInt8] = []
        rig.run { got += Rig.drain(app); return got.count >= 14 }
        #expect(got == Array("after the plug".utf8))
        var sndbuf: Int32 = 0
        var l = socklen_t(4)
        Glibc.getsockopt(app, SOL_SOCKET, SO_SNDBUF, &sndbuf, &l)
        #expect(sndbuf > 100_000, "the app end's send buffer is restored")
        // The next CONNECT reports the success once, then EISCONN (Linux's SS_CONNECTING path).
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(rig.peerIP, 7))
        sr.proto = IPProtocol.tcp
        #expect(rig.request(ZTRPC_OP_CONNECT, sr, socket: app)?.hdr.result == 0)
        #expect(rig.request(ZTRPC_OP_CONNECT, sr, socket: app)?.hdr.err == EISCONN)
    }

    @Test func failedNonBlockingConnectShowsPOLLERRAndKeepsItsError() throws {
        let rig = try Rig()
        let (app, rpc) = rig.startConnect(port: 4446, nonblocking: true)
        defer { Glibc.close(app) }
        #expect(rig.reply(rpc)?.hdr.err == EINPROGRESS)
        let want = Int16(POLLIN | POLLOUT)
        #expect(rig.run { Rig.events(app, want) & Int16(POLLERR) != 0 })
        let ev = Rig.events(app, want)
        #expect(ev & Int16(POLLOUT) != 0 && ev & Int16(POLLHUP) != 0, "as Linux shows a refused connect")
        #expect(soError(rig, app) == ECONNREFUSED)
        #expect(soError(rig, app) == 0, "reported once")
        #expect(rig.hub.tcp.count == 1, "kept for its SO_ERROR: the app's close cannot be seen any more")
    }

    @Test func appCloseDrainsAndReleasesEverything() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 9)   // discard
        #expect(hdr?.result == 0)
        Rig.writeAll(app, [UInt8](repeating: 0x41, count: 200_000))
        Glibc.close(app)
        #expect(rig.run { rig.hub.tcp.count == 0 && rig.hub.tcp.byHandle.isEmpty })
        // Every byte reaches the peer's discard service (the stack finishes on its own), then
        // the FIN: the peer's side closes.
        var received: UInt64 = 0
        var peerClosed = false
        rig.run {
            rig.peer.tcp.forEachConnection { _, i in
                received = max(received, i.bytesReceived)
                if i.state == .closeWait || i.state == .lastAck { peerClosed = true }
            }
            return received == 200_000 && (peerClosed || rig.peer.tcp.connectionCount == 0)
        }
        #expect(received == 200_000)
    }

    /// Linux resets a connection closed with received bytes unread. Here those bytes may sit in
    /// the stack's ring while the app's end of the pair is empty (it read all it had), and the
    /// close makes our delivery fail (EPIPE) so they are dropped before the stack is told: still
    /// a reset, not a FIN (after a FIN the peer's next data is answered with a reset, and its
    /// writes then fail with EPIPE and SIGPIPE instead of ECONNRESET).
    @Test func appCloseWithBytesStillInTheRingResets() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)   // echo: sends back what it got, then nothing
        #expect(hdr?.result == 0)
        let c = try #require(rig.hub.tcp.byKey.values.first)
        // More than the pair holds: the rest of the echo waits in the ring.
        let total = 1 << 20
        var sent = 0
        let chunk = [UInt8](repeating: 0x61, count: 65536)
        #expect(rig.run {
            if sent < total {
                let n = chunk.withUnsafeBytes { Glibc.send(app, $0.baseAddress, min($0.count, total - sent), Int32(MSG_DONTWAIT)) }
                if n > 0 { sent += n }
            }
            return sent == total && c.bytesOut == UInt64(total) && c.data?.wantsWritable == true
        }, "sent \(sent), the pair full")
        rig.settle(20)
        let stack = try #require(rig.hub.tcp.stack)
        let h = try #require(c.handle)
        #expect((stack.tcp.receiveBuffer(h)?.count ?? 0) > 0, "the ring holds echoed bytes")
        #expect(Rig.drain(app).count > 0)
        let flags = rig.watchFINsAndRSTs()
        Glibc.close(app)
        #expect(rig.run { rig.hub.tcp.count == 0 })
        rig.settle(20)
        #expect(flags.fins == 0 && flags.resets >= 1, "fins \(flags.fins) resets \(flags.resets)")
        #expect(stack.tcp.connectionCount == 0, "reset: nothing left in FIN-WAIT or TIME-WAIT")
    }

    /// The control: everything read, then closed: a FIN, and the connection waits in TIME-WAIT.
    @Test func appCloseWithEverythingReadSendsFIN() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 9)   // discard: sends nothing
        #expect(hdr?.result == 0)
        Rig.writeAll(app, [UInt8](repeating: 0x41, count: 1000))
        let flags = rig.watchFINsAndRSTs()
        Glibc.close(app)
        let stack = try #require(rig.hub.tcp.stack)
        #expect(rig.run { rig.hub.tcp.count == 0 })
        rig.settle(20)
        var states: [String] = []
        stack.tcp.forEachConnection { _, i in states.append("\(i.state)") }
        #expect(stack.tcp.connectionCount == 1, "\(states)")
        #expect(flags.fins == 1 && flags.resets == 0, "fins \(flags.fins) resets \(flags.resets)")
    }

    @Test func appNotReadingClosesTheWindowThenCatchesUp() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 19)   // chargen: sends as fast as it may
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let c = try #require(rig.hub.tcp.byKey.values.first)
        #expect(rig.run { c.data?.wantsWritable == true }, "socketpair full: waiting for EPOLLOUT")
        let before = c.bytesIn
        rig.settle(20)
        #expect(c.bytesIn == before, "nothing moves while the app does not read")
        var total = 0
        rig.run { total += Rig.drain(app).count; return total > 1_000_000 }
        #expect(total > 1_000_000)
    }

    @Test func injectedEAGAINOnDeliveryIsBackPressureNotLoss() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let c = try #require(rig.hub.tcp.byKey.values.first)
        let ours = try #require(c.data?.fd)
        rig.faults.inject(Fault(call: .sendmsg, fd: ours, effect: .errno(EAGAIN)))
        rig.faults.inject(Fault(call: .sendmsg, fd: ours, effect: .short(3)))
        let msg = Array("0123456789".utf8)
        Rig.writeAll(app, msg)
        var got: [UInt8] = []
        rig.run { got += Rig.drain(app); return got.count >= msg.count }
        #expect(got == msg)
        #expect(rig.faults.pending == 0)
    }

    @Test func eintrEverywhereChangesNothing() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let c = try #require(rig.hub.tcp.byKey.values.first)
        let ours = try #require(c.data?.fd)
        rig.faults.inject(Fault(call: .recvmsg, fd: ours, effect: .errno(EINTR), times: 5))
        rig.faults.inject(Fault(call: .sendmsg, fd: ours, effect: .errno(EINTR), times: 5))
        let msg = [UInt8](repeating: 0x5A, count: 50_000)
        Rig.writeAll(app, msg)
        var got: [UInt8] = []
        rig.run { got += Rig.drain(app); return got.count >= msg.count }
        #expect(got == msg)
    }

    @Test func epipeOnDeliveryDiscardsInputButKeepsSending() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let c = try #require(rig.hub.tcp.byKey.values.first)
        Glibc.shutdown(app, Int32(SHUT_RD))
        Rig.writeAll(app, Array("abc".utf8))
        #expect(rig.run { c.inbound == .discarding })
        Rig.writeAll(app, Array("def".utf8))
        #expect(rig.run { c.bytesOut == 6 }, "the app's writes still reach the stack")
    }

    @Test func halfCloseSendsFINAndKeepsReceiving() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        let c = try #require(rig.hub.tcp.byKey.values.first)
        Rig.writeAll(app, Array("bye".utf8))
        Glibc.shutdown(app, Int32(SHUT_WR))
        var got: [UInt8] = []
        rig.run { got += Rig.drain(app); return got.count >= 3 && c.outbound == .finQueued }
        #expect(got == Array("bye".utf8))
        #expect(c.outbound == .finQueued)
        // The echo service closes after our FIN: the app reads EOF.
        #expect(rig.run { c.inbound == .eofDelivered })
        #expect(Glibc.recv(app, nil, 0, Int32(MSG_DONTWAIT)) == 0)
    }

    @Test func listenAcceptDeliversAConnectionOverTheChannel() throws {
        let rig = try Rig()
        // BIND 10.77.0.2:8080 (new socket), then LISTEN with an accept channel.
        let (app, daemon) = makePair(streamType)
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(rig.stackIP, 8080))
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW
        let b = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_BIND, body: $0, fds: [app, daemon]) }
        Glibc.close(daemon)
        #expect(b?.hdr.result == 0)
        let (chApp, chDaemon) = makePair(seqpacket)
        var lr = ztrpc_listen_req()
        lr.backlog = 8
        let l = rig.request(ZTRPC_OP_LISTEN, lr, socket: app, extra: [chDaemon, chApp])
        Glibc.close(chDaemon); Glibc.close(app)
        #expect(l?.hdr.result == 0)
        // A second bind to the port is refused while it listens.
        let (app2, daemon2) = makePair(streamType)
        let b2 = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_BIND, body: $0, fds: [app2, daemon2]) }
        Glibc.close(daemon2); Glibc.close(app2)
        #expect(b2?.hdr.err == EADDRINUSE)
        // The peer connects; the channel carries one accept message with one fd.
        let h = try rig.peer.tcpConnect(local: IPEndpoint(rig.peerIP, 0), remote: IPEndpoint(rig.stackIP, 8080),
                                        now: NetworkLoop.now())
        /// The next accept message on the channel and its fd (-1: none came).
        func accepted() -> (msg: ztrpc_accept_msg, fd: Int32) {
            var got = (msg: ztrpc_accept_msg(), fd: Int32(-1))
            rig.run {
                if let a = Rig.takeAccept(chApp), a.fds.count == 1 {
                    #expect(a.size == MemoryLayout<ztrpc_accept_msg>.size)
                    got = (a.msg, a.fds[0])
                }
                return got.fd >= 0
            }
            return got
        }
        let (msg, fd) = accepted()
        #expect(Wire.endpoint(msg.local) == IPEndpoint(rig.stackIP, 8080))
        #expect(Wire.endpoint(msg.peer).address == IPAddress(rig.peerIP))
        // The end comes non-blocking, with its identity and secret (ztrpc.h).
        #expect(msg.flags & ZTRPC_AM_NONBLOCK != 0 && fcntl(fd, F_GETFL) & O_NONBLOCK != 0)
        #expect(FDKey.of(fd) == FDKey(dev: msg.dev, ino: msg.ino))
        #expect(rig.hub.tcp.lookup(FDKey(dev: msg.dev, ino: msg.ino))?.secret ==
                UInt64(msg.secret.0) | UInt64(msg.secret.1) << 32)
        #expect(fd >= 0)
        defer { Glibc.close(fd); Glibc.close(chApp) }
        // Bytes from the peer arrive on the accepted fd.
        _ = try Array("ping".utf8).withUnsafeBytes { try rig.peer.tcp.send(h, $0, now: NetworkLoop.now()) }
        var got: [UInt8] = []
        rig.run { got += Rig.drain(fd); return got.count >= 4 }
        #expect(got == Array("ping".utf8))
        // The loop's idle moments made a pair for the next connection (SparePairs): the
        // second one accepted is that pair's app end.
        #expect(rig.run { rig.hub.tcp.spares.pairs.count == 1 })
        let spare = rig.hub.tcp.spares.pairs[0]
        _ = try rig.peer.tcpConnect(local: IPEndpoint(rig.peerIP, 0), remote: IPEndpoint(rig.stackIP, 8080),
                                    now: NetworkLoop.now())
        let second = accepted().fd
        defer { Glibc.close(second) }
        #expect(second >= 0 && FDKey.of(second) == spare.key && rig.hub.tcp.lookup(spare.key) != nil)
    }

    @Test func unacceptedConnectionsInTheChannelCountAgainstTheBacklog() throws {
        // Linux holds backlog + 1 connections the app has not accepted and drops further SYNs.
        let rig = try Rig()
        let chApp = try #require(rig.listenTCP(port: 8082, backlog: 1))
        defer { Glibc.close(chApp) }
        #expect(TCPBridge.acceptMessageCharge > 0)
        var peers: [SocketHandle] = []
        for _ in 0..<3 {
            peers.append(try rig.peer.tcpConnect(local: IPEndpoint(rig.peerIP, 0),
                                                 remote: IPEndpoint(rig.stackIP, 8082), now: NetworkLoop.now()))
            rig.settle(30)
        }
        func queued() -> Int {
            var n: Int32 = 0
            return ioctl(chApp, UInt(FIONREAD), &n) == 0 ? Int(n) / MemoryLayout<ztrpc_accept_msg>.size : -1
        }
        #expect(queued() == 2)
        #expect(rig.peer.tcp.info(peers[0])?.state == .established)
        #expect(rig.peer.tcp.info(peers[1])?.state == .established)
        #expect(rig.peer.tcp.info(peers[2])?.state == .synSent, "its SYN was dropped")
        // The app accepts one: the third's retransmitted SYN (after ~1 s) finds room.
        guard let a = Rig.takeAccept(chApp) else { Issue.record("no accept message"); return }
        #expect(a.fds.count == 1)
        defer { for f in a.fds { Glibc.close(f) } }
        #expect(rig.run(limit: 8000) { rig.peer.tcp.info(peers[2])?.state == .established })
        #expect(rig.run { queued() == 2 })
    }

    @Test func emfileDuringAcceptAbortsThatConnectionOnly() throws {
        let rig = try Rig()
        let chApp = try #require(rig.listenTCP(port: 8081, backlog: 8))
        defer { Glibc.close(chApp) }
        rig.faults.inject(Fault(call: .socketpair, fd: nil, effect: .errno(EMFILE)))
        let first = try rig.peer.tcpConnect(local: IPEndpoint(rig.peerIP, 0), remote: IPEndpoint(rig.stackIP, 8081),
                                            now: NetworkLoop.now())
        #expect(rig.run { rig.peer.tcp.info(first)?.state != .established && rig.faults.pending == 0 })
        _ = try rig.peer.tcpConnect(local: IPEndpoint(rig.peerIP, 0), remote: IPEndpoint(rig.stackIP, 8081),
                                    now: NetworkLoop.now())
        var fds = 0
        rig.run {
            if let a = Rig.takeAccept(chApp) { fds += a.fds.count; for f in a.fds { Glibc.close(f) } }
            return fds >= 1
        }
        #expect(fds == 1, "the listener survives and delivers the next connection")
    }

    @Test func malformedRequestGetsEPROTOOverTheRealSocket() throws {
        let rig = try Rig()
        let s = rig.send(op: 0, body: UnsafeRawBufferPointer(start: nil, count: 0), raw: [1, 2, 3])
        let r = rig.reply(s)
        #expect(r?.hdr.result == -1 && r?.hdr.err == EPROTO)
        // A request naming no fd at all is EBADF, an unknown fd ENOTSOCK.
        #expect(rig.call(op: ZTRPC_OP_GETNAME, body: UnsafeRawBufferPointer(start: nil, count: 0))?.hdr.err == EBADF)
        let (x, y) = makePair(streamType)
        defer { Glibc.close(x); Glibc.close(y) }
        #expect(rig.call(op: ZTRPC_OP_GETNAME, body: UnsafeRawBufferPointer(start: nil, count: 0), fds: [x])?.hdr.err == ENOTSOCK)
    }

    @Test func udpDatagramsBothWays() throws {
        let rig = try Rig()
        // `app` is closed below, as part of the test: no deferred close (a second close of the
        // number could take an fd another test running in parallel has just been given).
        let (app, daemon) = makePair(seqpacket)
        var sr = ztrpc_sock_req()
        sr.proto = IPProtocol.udp
        sr.flags = ZTRPC_F_NEW
        let r = withUnsafeBytes(of: &sr) { rig.call(op: ZTRPC_OP_UDP_OPEN, body: $0, fds: [app, daemon]) }
        Glibc.close(daemon)
        #expect(r?.hdr.result == 0)
        let info = ztrpc_sockinfo(bytes: r?.body ?? [])
        #expect(Wire.endpoint(info.local).port != 0)
        // One message = header (destination: the peer's UDP echo) + payload.
        var msg = withUnsafeBytes(of: RPCCodec.datagramHeader(from: IPEndpoint(rig.peerIP, 7))) { Array($0) }
        msg += Array("udp!".utf8)
        _ = msg.withUnsafeBytes { Glibc.send(app, $0.baseAddress, $0.count, 0) }
        var back: [UInt8] = []
        rig.run { back = Rig.drain(app); return !back.isEmpty }
        #expect(back.count == MemoryLayout<ztrpc_dgram>.size + 4)
        let from = back.withUnsafeBytes { RPCCodec.datagramDestination($0) }
        #expect(from == .some(IPEndpoint(rig.peerIP, 7)))
        #expect(Array(back[MemoryLayout<ztrpc_dgram>.size...]) == Array("udp!".utf8))
        // The app closes its end: the socket is gone.
        Glibc.close(app)
        #expect(rig.run { rig.hub.udp.count == 0 })
    }

    @Test func staleInodeIsFinishedBeforeReuse() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        #expect(hdr?.result == 0)
        let key = try #require(FDKey.of(app))
        Glibc.close(app)   // the hangup is not processed yet: nothing has stepped
        #expect(rig.hub.tcp.lookup(key) == nil, "a lookup finds the closed end and finishes the entry")
    }
}

/// SO_ERROR of the app end, asked through the hub as the library does (nil: no answer).
func soError(_ rig: Rig, _ app: Int32) -> Int32? {
    var so = ztrpc_sockopt()
    so.level = SOL_SOCKET; so.name = SO_ERROR; so.optlen = 4
    let r = rig.request(ZTRPC_OP_GETSOCKOPT, so, socket: app)
    return r.map { b in b.body.withUnsafeBytes { $0.load(fromByteOffset: 16, as: Int32.self) } }
}
