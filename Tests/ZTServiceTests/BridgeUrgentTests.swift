import Glibc
import CShims
import CZTRPC
import NetStack
import PhyLoop
import Testing
@testable import ZTService

/// The peer's urgent byte on its way to the app (TCPPump's `sendUrgent`): never alone at the
/// head of a socket the app has emptied, where the app's read would start at it and the unix
/// socket drop it. A real loop, real socketpairs and a peer NetStack that sends urgent data.
@Suite struct BridgeUrgentTests {
    /// A connection from the peer, accepted: the peer's handle, the app's end, ztapd's entry.
    func acceptedFromPeer(_ rig: Rig, port: UInt16) throws -> (h: SocketHandle, app: Int32, c: Connection) {
        let ch = try #require(rig.listenTCP(port: port, backlog: 4))
        defer { Glibc.close(ch) }
        let h = try rig.peer.tcpConnect(local: IPEndpoint(rig.peerIP, 0), remote: IPEndpoint(rig.stackIP, port),
                                        now: NetworkLoop.now())
        var fd: Int32 = -1
        rig.run {
            if let a = Rig.takeAccept(ch), a.fds.count == 1 { fd = a.fds[0] }
            return fd >= 0
        }
        #expect(fd >= 0)
        let c = try #require(FDKey.of(fd).flatMap { rig.hub.tcp.lookup($0) })
        return (h, fd, c)
    }

    func peerSends(_ rig: Rig, _ h: SocketHandle, _ s: String, urgentAhead: Int = 0) throws {
        if urgentAhead > 0 { rig.peer.tcp.markUrgent(h, pending: urgentAhead) }
        _ = try Array(s.utf8).withUnsafeBytes { try rig.peer.tcp.send(h, $0, now: NetworkLoop.now()) }
    }

    /// One read (a second one would start at the out-of-band byte and drop it).
    func readOnce(_ fd: Int32) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 64)
        let n = b.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, 64, Int32(MSG_DONTWAIT)) }
        return n > 0 ? Array(b[0..<n]) : []
    }

    func atMark(_ fd: Int32) -> Int32 {
        var mark: Int32 = -1
        return ioctl(fd, UInt(SIOCATMARK), &mark) == 0 ? mark : -1
    }

    func recvOOB(_ fd: Int32) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8)
        let n = b.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, 8, Int32(MSG_OOB | MSG_DONTWAIT)) }
        return n > 0 ? Array(b[0..<n]) : []
    }

    func sndbuf(_ fd: Int32) -> Int32 {
        var v: Int32 = 0
        var l = socklen_t(4)
        _ = getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &l)
        return v
    }

    @Test func theByteBeforeTheMarkWaitsForTheUrgentOneAndGoesWithIt() throws {
        let rig = try Rig()
        let (h, app, _) = try acceptedFromPeer(rig, port: 8091)
        defer { Glibc.close(app) }
        // "ab" first; then "x" with the urgent pointer one byte past it: the urgent byte is
        // still on its way, and "x" (the byte before the mark) must wait for it.
        try peerSends(rig, h, "ab")
        var got: [UInt8] = []
        #expect(rig.run { got += Rig.drain(app); return got.count == 2 })
        try peerSends(rig, h, "x", urgentAhead: 2)
        rig.settle(30)
        #expect(Rig.drain(app).isEmpty, "the byte before the mark was handed over alone")
        try peerSends(rig, h, "U")
        #expect(rig.run { Rig.events(app, Int16(POLLPRI)) & Int16(POLLPRI) != 0 })
        // The app's read returns "x" and stops at the mark; the urgent byte is out of band.
        #expect(readOnce(app) == Array("x".utf8))
        #expect(atMark(app) == 1)
        #expect(recvOOB(app) == Array("U".utf8))
    }

    @Test func aFullSocketGetsRoomOnceForThePeersUrgentByte() throws {
        let rig = try Rig()
        let (h, app, c) = try acceptedFromPeer(rig, port: 8092)
        defer { Glibc.close(app) }
        let end = try #require(c.data?.fd)
        let before = sndbuf(end)
        // The app has read everything; its socket says "full" (EAGAIN) as the urgent byte comes.
        rig.faults.inject(Fault(call: .sendmsg, fd: end, effect: .errno(EAGAIN)))
        try peerSends(rig, h, "U", urgentAhead: 1)
        #expect(rig.run { Rig.events(app, Int16(POLLPRI)) & Int16(POLLPRI) != 0 }, "the urgent byte waited")
        #expect(c.urgentRoomGiven && sndbuf(end) == before + TCPBridge.urgentRoomBytes)
        #expect(atMark(app) == 1 && recvOOB(app) == Array("U".utf8))
        // Once per connection: the next one waits until the socket takes it, with no more room.
        rig.faults.inject(Fault(call: .sendmsg, fd: end, effect: .errno(EAGAIN)))
        try peerSends(rig, h, "V", urgentAhead: 1)
        #expect(rig.run { Rig.events(app, Int16(POLLPRI)) & Int16(POLLPRI) != 0 })
        #expect(sndbuf(end) == before + TCPBridge.urgentRoomBytes)
        #expect(recvOOB(app) == Array("V".utf8))
    }
}
