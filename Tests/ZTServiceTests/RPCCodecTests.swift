import CShims
import Glibc
import CZTRPC
import NetStack
import Testing
@testable import ZTService

/// The wire codec: round trips and every way a request can be malformed.
@Suite struct RPCCodecTests {
    func encode(op: UInt16, id: UInt32 = 9, body: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 2048)
        let n = body.withUnsafeBytes { b in out.withUnsafeMutableBytes { RPCCodec.encodeRequest(op: op, id: id, body: b, into: $0) } }
        return Array(out[0..<n])
    }

    func decode(_ bytes: [UInt8], truncated: Bool = false) -> Result<(RPCHeader, RPCRequest), RPCDecodeFailure> {
        bytes.withUnsafeBytes { RPCCodec.decode($0, truncated: truncated) }
    }

    func bytes<T>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }

    @Test func connectRoundTrip() throws {
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(IPv4Address(10, 1, 2, 3), 8080))
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW | ZTRPC_F_NONBLOCK
        sr.opts.mask = ZTRPC_OPT_NODELAY
        sr.opts.bools = ZTRPC_OPT_NODELAY
        let (h, r) = try decode(encode(op: ZTRPC_OP_CONNECT, id: 77, body: bytes(sr))).get()
        #expect(h == RPCHeader(op: ZTRPC_OP_CONNECT, id: 77))
        guard case .connect(let got, _) = r else { Issue.record("not a connect: \(r)"); return }
        #expect(Wire.endpoint(got.addr) == IPEndpoint(IPv4Address(10, 1, 2, 3), 8080))
        #expect(got.flags == ZTRPC_F_NEW | ZTRPC_F_NONBLOCK)
        #expect(SocketOptions(got.opts).noDelay)
    }

    @Test func everyOpDecodes() throws {
        let ops: [(UInt16, (RPCRequest) -> Bool)] = [
            (ZTRPC_OP_BIND, { if case .bind = $0 { true } else { false } }),
            (ZTRPC_OP_UDP_OPEN, { if case .udpOpen = $0 { true } else { false } }),
            (ZTRPC_OP_LISTEN, { if case .listen = $0 { true } else { false } }),
            (ZTRPC_OP_GETSOCKOPT, { if case .getsockopt = $0 { true } else { false } }),
            (ZTRPC_OP_SETSOCKOPT, { if case .setsockopt = $0 { true } else { false } }),
            (ZTRPC_OP_GETNAME, { if case .getname = $0 { true } else { false } }),
            (ZTRPC_OP_RENEW, { if case .renew = $0 { true } else { false } }),
            (99, { if case .unknown(99) = $0 { true } else { false } }),
        ]
        for (op, check) in ops {
            let (h, r) = try decode(encode(op: op, body: [])).get()
            #expect(h.op == op)
            #expect(check(r), "op \(op) decoded as \(r)")
        }
    }

    @Test func shortHeaderIsEPROTOWithZeroHeader() {
        let r = decode([0x5A, 0x54, 0x52, 0x50, 1, 0])
        #expect(r.failure == RPCDecodeFailure(header: RPCHeader(op: 0, id: 0), errno: EPROTO))
    }

    @Test func badMagicAndVersionAreEPROTOEchoingTheHeader() {
        var m = encode(op: ZTRPC_OP_GETNAME, id: 5, body: [])
        m[0] ^= 0xFF
        #expect(decode(m).failure == RPCDecodeFailure(header: RPCHeader(op: ZTRPC_OP_GETNAME, id: 5), errno: EPROTO))
        var v = encode(op: ZTRPC_OP_GETNAME, id: 6, body: [])
        v[4] = UInt8(ZTRPC_VERSION + 1)   // a version this daemon does not speak
        #expect(decode(v).failure == RPCDecodeFailure(header: RPCHeader(op: ZTRPC_OP_GETNAME, id: 6), errno: EPROTO))
    }

    @Test func lengthMismatchIsEPROTO() {
        var m = encode(op: ZTRPC_OP_LISTEN, body: [1, 0, 0, 0, 0, 0, 0, 0])
        m.removeLast()   // header says 8, 7 follow
        #expect(decode(m).failure?.errno == EPROTO)
        m += [0, 0]      // 9 follow
        #expect(decode(m).failure?.errno == EPROTO)
    }

    @Test func truncatedMessageIsEMSGSIZE() {
        let m = encode(op: ZTRPC_OP_GETNAME, body: [])
        #expect(decode(m, truncated: true).failure?.errno == EMSGSIZE)
    }

    @Test func oversizedMessageIsEPROTO() {
        let m = encode(op: ZTRPC_OP_GETNAME, body: [UInt8](repeating: 0, count: Int(ZTRPC_MAX_MSG)))
        #expect(decode(m).failure?.errno == EPROTO)
    }

    @Test func shortBodyReadsAsZerosLongBodyIsCut() throws {
        // A listen body of 4 bytes (an older library): backlog 5, the rest zero.
        let (_, r) = try decode(encode(op: ZTRPC_OP_LISTEN, body: [5, 0, 0, 0])).get()
        guard case .listen(let lr) = r else { Issue.record("\(r)"); return }
        #expect(lr.backlog == 5 && lr.reserved == 0)
        // A getsockopt body longer than the struct (a newer library's additions): cut.
        var so = ztrpc_sockopt()
        so.level = 6; so.name = 1; so.optlen = 4
        let (_, r2) = try decode(encode(op: ZTRPC_OP_GETSOCKOPT, body: bytes(so) + [1, 2, 3, 4])).get()
        guard case .getsockopt(let got) = r2 else { Issue.record("\(r2)"); return }
        #expect(got.level == 6 && got.name == 1 && got.optlen == 4)
    }

    @Test func replyRoundTrip() throws {
        var out = [UInt8](repeating: 0, count: RPCCodec.maxReplySize)
        var info = ztrpc_sockinfo()
        info.proto = IPProtocol.udp
        info.state = ZTRPC_STATE_BOUND
        info.local = Wire.addr(IPEndpoint(IPv4Address(10, 0, 0, 2), 5353))
        let n = out.withUnsafeMutableBytes {
            RPCCodec.encodeReply(RPCHeader(op: ZTRPC_OP_BIND, id: 3), result: -1, errno: EADDRINUSE, body: .info(info), into: $0)
        }
        #expect(n == RPCCodec.replyHeaderSize + MemoryLayout<ztrpc_sockinfo>.size)
        let decoded = out.withUnsafeBytes { b in RPCCodec.decodeReply(UnsafeRawBufferPointer(rebasing: b[0..<n])).map { ($0.0, Array($0.1)) } }
        let (hdr, body) = try #require(decoded)
        #expect(hdr.op == ZTRPC_OP_BIND && hdr.id == 3 && hdr.result == -1 && hdr.err == EADDRINUSE)
        let back = ztrpc_sockinfo(bytes: body)
        #expect(Wire.endpoint(back.local) == IPEndpoint(IPv4Address(10, 0, 0, 2), 5353))
        #expect(back.state == ZTRPC_STATE_BOUND)
    }

    @Test func datagramFraming() {
        let h = RPCCodec.datagramHeader(from: IPEndpoint(IPv4Address(1, 2, 3, 4), 53))
        let bytes = withUnsafeBytes(of: h) { Array($0) }
        #expect(bytes.count == 24)
        #expect(bytes[0...11] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF])   // ::ffff:1.2.3.4
        #expect(bytes[12...15] == [1, 2, 3, 4])   // network order
        #expect(bytes[16...17] == [0, 53])
        let dst = bytes.withUnsafeBytes { RPCCodec.datagramDestination($0) }
        #expect(dst == .some(IPEndpoint(IPv4Address(1, 2, 3, 4), 53)))
        let connected = [UInt8](repeating: 0, count: 24).withUnsafeBytes { RPCCodec.datagramDestination($0) }
        #expect(connected == .some(nil))
        let v6 = IPEndpoint(IPAddress("fd00::7")!, 53)
        let h6 = RPCCodec.datagramHeader(from: v6)
        #expect(withUnsafeBytes(of: h6) { RPCCodec.datagramDestination($0) } == .some(v6))
        let short = [UInt8](repeating: 0, count: 23).withUnsafeBytes { RPCCodec.datagramDestination($0) }
        #expect(short == nil)
        let err = RPCCodec.datagramError(peer: nil, errno: ECONNREFUSED)
        #expect(err.addr.reserved == ZTRPC_DGRAM_ERROR | UInt16(ECONNREFUSED))
    }

    @Test func errnoMappingCoversEveryStackError() {
        let all: [(SocketError, Int32)] = [
            (.connectionRefused, ECONNREFUSED), (.connectionReset, ECONNRESET), (.timedOut, ETIMEDOUT),
            (.hostUnreachable, EHOSTUNREACH), (.networkUnreachable, ENETUNREACH), (.addressInUse, EADDRINUSE),
            (.addressNotAvailable, EADDRNOTAVAIL), (.invalidState, EINVAL), (.notConnected, ENOTCONN),
            (.messageTooLong, EMSGSIZE), (.noBufferSpace, ENOBUFS), (.wouldBlock, EAGAIN), (.invalidHandle, EBADF),
        ]
        for (e, n) in all { #expect(Wire.errno(e) == n, "\(e)") }
    }
}

extension Result {
    var failure: Failure? { if case .failure(let f) = self { f } else { nil } }
}
