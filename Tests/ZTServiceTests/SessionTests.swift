import Glibc
import CShims
import CZTRPC
import NetStack
import PhyLoop
import Testing
@testable import ZTService

/// RPC sessions (ztrpc.h ZTRPC_OP_KEEP) on a real loop: one connection carries request after
/// request, each judged by the credentials it carries.
@Suite struct SessionTests {
    /// Sends `op` with ZTRPC_OP_KEEP on session `s` with the given ids; returns the reply, or nil
    /// when ztapd hung up.
    static func ask(_ rig: Rig, _ s: Int32, op: UInt16, body: [UInt8], fds: [Int32] = [],
                    uid: UInt32 = getuid(), gid: UInt32 = getgid(), creds: Bool = true) -> ztrpc_rep_hdr? {
        var msg = [UInt8](repeating: 0, count: 2048)
        let n = msg.withUnsafeMutableBytes { m in
            body.withUnsafeBytes { RPCCodec.encodeRequest(op: op | ZTRPC_OP_KEEP, id: 7, body: $0, into: m) }
        }
        let sent = msg.withUnsafeBytes { m in
            fds.withUnsafeBufferPointer { f in
                creds ? cshim_send_with_creds(s, m.baseAddress, n, getpid(), uid, gid, f.baseAddress, Int32(f.count))
                      : Int(Glibc.send(s, m.baseAddress, n, Int32(MSG_NOSIGNAL)))
            }
        }
        guard sent == n else { return nil }
        var buf = [UInt8](repeating: 0, count: 2048)
        var got = -1
        rig.run(limit: 3000) {
            got = buf.withUnsafeMutableBytes { Glibc.recv(s, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            return got >= 0
        }
        guard got > 0 else { return nil }
        return buf.withUnsafeBytes { RPCCodec.decodeReply(UnsafeRawBufferPointer(rebasing: $0[0..<got]))?.0 }
    }

    static func connectBody(_ rig: Rig) -> [UInt8] {
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(rig.peerIP, 7))
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW
        return withUnsafeBytes(of: &sr) { Array($0) }
    }

    @Test func oneConnectionCarriesRequestAfterRequest() throws {
        let rig = try Rig()
        let s = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        defer { Glibc.close(s) }
        #expect(cshim_connect_unix(s, rig.rpcPath) == 0)
        var apps: [Int32] = []
        defer { apps.forEach { Glibc.close($0) } }
        for _ in 0..<3 {
            let (app, daemon) = makePair(streamType)
            apps.append(app)
            let r = Self.ask(rig, s, op: ZTRPC_OP_CONNECT, body: Self.connectBody(rig), fds: [app, daemon])
            Glibc.close(daemon)
            #expect(r?.result == 0 && r?.op == ZTRPC_OP_CONNECT)
            #expect(Self.ask(rig, s, op: ZTRPC_OP_GETNAME, body: [], fds: [app])?.result == 0)
        }
        #expect(rig.hub.tcp.count == 3)
        #expect(rig.hub.peerCount == 1)   // still one connection
    }

    @Test func eachRequestIsJudgedByItsOwnCredentials() throws {
        // [Access] lets nobody in but root and ztapd's own user.
        let rig = try Rig()
        let s = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        defer { Glibc.close(s) }
        #expect(cshim_connect_unix(s, rig.rpcPath) == 0)
        let (a1, d1) = makePair(streamType)
        defer { Glibc.close(a1) }
        #expect(Self.ask(rig, s, op: ZTRPC_OP_CONNECT, body: Self.connectBody(rig), fds: [a1, d1])?.result == 0)
        Glibc.close(d1)
        // The same session, a request sent as another user (root may claim any uid): refused.
        guard getuid() == 0 else { return }
        let (a2, d2) = makePair(streamType)
        defer { Glibc.close(a2); Glibc.close(d2) }
        let r = Self.ask(rig, s, op: ZTRPC_OP_CONNECT, body: Self.connectBody(rig), fds: [a2, d2], uid: 4242, gid: 4242)
        #expect(r?.result == -1 && r?.err == EACCES)
        // Held sockets stay usable for anyone holding them.
        #expect(Self.ask(rig, s, op: ZTRPC_OP_GETNAME, body: [], fds: [a1], uid: 4242, gid: 4242)?.result == 0)
    }

    @Test func aSecondRequestWhileAReplyIsDueEndsTheSession() throws {
        let rig = try Rig()
        let s = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        defer { Glibc.close(s) }
        #expect(cshim_connect_unix(s, rig.rpcPath) == 0)
        // A blocking connect to a host that does not answer ARP: its reply is due for seconds.
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(IPv4Address(10, 77, 0, 99), 7))
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW
        let (a, d) = makePair(streamType)
        defer { Glibc.close(a) }
        var msg = [UInt8](repeating: 0, count: 512)
        let n = msg.withUnsafeMutableBytes { m in
            withUnsafeBytes(of: &sr) { RPCCodec.encodeRequest(op: ZTRPC_OP_CONNECT | ZTRPC_OP_KEEP, id: 1, body: $0, into: m) }
        }
        let sent = msg.withUnsafeBytes { m in
            [a, d].withUnsafeBufferPointer { cshim_send_with_creds(s, m.baseAddress, n, getpid(), getuid(), getgid(), $0.baseAddress, 2) }
        }
        Glibc.close(d)
        #expect(sent == n)
        rig.run(limit: 200) { rig.hub.tcp.count == 1 }
        #expect(rig.hub.tcp.count == 1)
        // The library never does this: a hostile client does, and loses the session.
        #expect(Self.ask(rig, s, op: ZTRPC_OP_GETNAME, body: [], fds: [a]) == nil)
        #expect(rig.hub.peerCount == 0)
    }
}
