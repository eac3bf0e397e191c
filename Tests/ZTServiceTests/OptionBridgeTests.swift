import Glibc
import CShims
import CZTRPC
import NetStack
import PhyLoop
import SystemPackage
import Testing
@testable import ZTService

/// Socket options through the hub on a real loop and a real peer stack: options that travel with
/// the creating request reach the stack before its SYN, long values, TCP_INFO on the wire.
@Suite struct OptionBridgeTests {
    func record(_ level: Int32, _ name: Int32, _ v: Int32) -> ztrpc_sockopt {
        var so = ztrpc_sockopt()
        so.level = level; so.name = name; so.optlen = 4
        withUnsafeMutableBytes(of: &so.value) { $0.storeBytes(of: v, as: Int32.self) }
        return so
    }

    func bytes<T>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }

    func getopt(_ rig: Rig, _ app: Int32, _ level: Int32, _ name: Int32, len: UInt32 = 16) -> (err: Int32, value: [UInt8])? {
        var so = ztrpc_sockopt()
        so.level = level; so.name = name; so.optlen = len
        guard let r = rig.request(ZTRPC_OP_GETSOCKOPT, so, socket: app) else { return nil }
        guard r.hdr.result == 0 else { return (r.hdr.err, []) }
        let n = Int(r.body.withUnsafeBytes { $0.load(fromByteOffset: 8, as: UInt32.self) })
        return (0, Array(r.body[16..<(16 + n)]))
    }

    @Test func optionsBeforeConnectReachTheSYN() throws {
        let rig = try Rig()
        let (app, daemon) = makePair(streamType)
        defer { Glibc.close(app) }
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPv4Endpoint(rig.peerIP, 7))
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW
        Rig.plug(app, &sr)
        // The request, a ztrpc_optlist and two records: TCP_MAXSEG 1000 and IP_TTL 9.
        var body = bytes(sr) + bytes(ztrpc_optlist(count: 2, reserved: 0))
        body += bytes(record(Int32(IPPROTO_TCP), SocketOptionMap.TCP_MAXSEG, 1000))
        body += bytes(record(Int32(IPPROTO_IP), SocketOptionMap.IP_TTL, 9))
        let s = body.withUnsafeBytes { rig.send(op: ZTRPC_OP_CONNECT, body: $0, fds: [app, daemon]) }
        Glibc.close(daemon)
        #expect(rig.reply(s)?.hdr.result == 0)
        // The SYN advertised 1000: the connection's MSS is 1000 less the timestamp option.
        #expect(getopt(rig, app, Int32(IPPROTO_TCP), SocketOptionMap.TCP_MAXSEG)?.value == SocketOptionMap.le(Int32(988)))
        #expect(getopt(rig, app, Int32(IPPROTO_IP), SocketOptionMap.IP_TTL, len: 4)?.value == SocketOptionMap.le(Int32(9)))
        let c = try #require(rig.hub.tcp.byKey.values.first)
        #expect(c.handle.flatMap { rig.loop.driver.netStack?.tcp.socketOptions($0)?.timeToLive } == 9)
    }

    @Test func tcpInfoAndLongValuesOnTheWire() throws {
        let rig = try Rig()
        let (app, hdr) = rig.connectTCP(port: 7)
        defer { Glibc.close(app) }
        #expect(hdr?.result == 0)
        Rig.writeAll(app, Array("ping".utf8))
        var got: [UInt8] = []
        rig.run { got += Rig.drain(app); return got.count >= 4 }
        // TCP_INFO: all 280 bytes when the buffer is large enough, from the connection.
        let info = try #require(getopt(rig, app, Int32(IPPROTO_TCP), SocketOptionMap.TCP_INFO, len: 384))
        #expect(info.err == 0 && info.value.count == 280)
        #expect(info.value[0] == 1 && info.value[5] & 1 == 1)   // ESTABLISHED, timestamps
        let segsOut = info.value[136..<140].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let bytesAcked = info.value[120..<128].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        #expect(segsOut >= 3 && bytesAcked == 5)                  // SYN + "ping"
        #expect(getopt(rig, app, Int32(IPPROTO_TCP), SocketOptionMap.TCP_INFO, len: 104)?.value.count == 104)
        // A value longer than the struct's 16 bytes runs past it (ztrpc.h SETSOCKOPT).
        let opts: [UInt8] = [1, 1, 1, 1, 148, 4, 0, 0] + [UInt8](repeating: 1, count: 16)
        var so = ztrpc_sockopt()
        so.level = Int32(IPPROTO_IP); so.name = SocketOptionMap.IP_OPTIONS; so.optlen = UInt32(opts.count)
        withUnsafeMutableBytes(of: &so.value) { $0.copyBytes(from: opts.prefix(16)) }
        let req = bytes(so) + Array(opts[16...])
        let r = req.withUnsafeBytes { rig.call(op: ZTRPC_OP_SETSOCKOPT, body: $0, fds: [app]) }
        #expect(r?.hdr.result == 0)
        #expect(getopt(rig, app, Int32(IPPROTO_IP), SocketOptionMap.IP_OPTIONS, len: 64)?.value == opts)
        // And a privileged one, as root.
        so = record(SOL_SOCKET, SocketOptionMap.SO_MARK, 7)
        #expect(rig.request(ZTRPC_OP_SETSOCKOPT, so, socket: app)?.hdr.result == (geteuid() == 0 ? 0 : -1))
    }
}
