import CShims
import Glibc
import CZTRPC
import NetStack
import SystemPackage
import Testing
@testable import ZTService

/// Linux option → recorded value / stack setting, without any socket.
@Suite struct SocketOptionMapTests {
    let tcpCtx = OptionContext(isTCP: true, tcpInfo: nil, defaultReceiveBuffer: 131072, defaultSendBuffer: 65536)
    let udpCtx = OptionContext(isTCP: false, tcpInfo: nil, defaultReceiveBuffer: 131072, defaultSendBuffer: 65536)

    func opt(_ level: Int32, _ name: Int32, _ a: Int32, _ b: Int32 = 0, len: UInt32 = 4) -> ztrpc_sockopt {
        var so = ztrpc_sockopt()
        so.level = level; so.name = name; so.optlen = len
        withUnsafeMutableBytes(of: &so.value) { $0.storeBytes(of: a, toByteOffset: 0, as: Int32.self); $0.storeBytes(of: b, toByteOffset: 4, as: Int32.self) }
        return so
    }

    @Test func setThenGetBooleans() throws {
        var o = SocketOptions()
        for (level, name) in [(SOL_SOCKET, SO_REUSEADDR), (SOL_SOCKET, SO_REUSEPORT), (SOL_SOCKET, SO_KEEPALIVE),
                              (Int32(IPPROTO_TCP), TCP_NODELAY)] {
            _ = try SocketOptionMap.set(level: level, name: name, value: opt(level, name, 1), options: &o, isTCP: true).get()
            #expect(try SocketOptionMap.get(level: level, name: name, options: o, context: tcpCtx).get() == .int(1))
            _ = try SocketOptionMap.set(level: level, name: name, value: opt(level, name, 0), options: &o, isTCP: true).get()
            #expect(try SocketOptionMap.get(level: level, name: name, options: o, context: tcpCtx).get() == .int(0))
        }
    }

    @Test func stackSettingsAreReturned() throws {
        var o = SocketOptions()
        let nd = try SocketOptionMap.set(level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: opt(Int32(IPPROTO_TCP), TCP_NODELAY, 1), options: &o, isTCP: true).get()
        #expect(nd == .noDelay(true))
        let lg = try SocketOptionMap.set(level: SOL_SOCKET, name: SO_LINGER, value: opt(SOL_SOCKET, SO_LINGER, 1, 0, len: 8), options: &o, isTCP: true).get()
        #expect(lg == .linger(.zero))
        #expect(o.abortsOnClose)
        let rb = try SocketOptionMap.set(level: SOL_SOCKET, name: SO_RCVBUF, value: opt(SOL_SOCKET, SO_RCVBUF, 100), options: &o, isTCP: true).get()
        #expect(rb == .receiveBufferSize(4096))   // clamped up to one page
    }

    @Test func bufferSizesReadBackDoubledLikeLinux() throws {
        var o = SocketOptions()
        #expect(try SocketOptionMap.get(level: SOL_SOCKET, name: SO_SNDBUF, options: o, context: tcpCtx).get() == .int(65536))
        _ = try SocketOptionMap.set(level: SOL_SOCKET, name: SO_SNDBUF, value: opt(SOL_SOCKET, SO_SNDBUF, 50000), options: &o, isTCP: true).get()
        #expect(try SocketOptionMap.get(level: SOL_SOCKET, name: SO_SNDBUF, options: o, context: tcpCtx).get() == .int(100000))
    }

    @Test func errorsAsLinuxGivesThem() {
        var o = SocketOptions()
        // Unknown option: ENOPROTOOPT; short optlen: EINVAL; unknown congestion control: ENOENT.
        #expect(SocketOptionMap.set(level: SOL_SOCKET, name: 9999, value: opt(SOL_SOCKET, 9999, 1), options: &o, isTCP: true).failure == .protocolNotAvailable)
        #expect(SocketOptionMap.set(level: SOL_SOCKET, name: SO_REUSEADDR, value: opt(SOL_SOCKET, SO_REUSEADDR, 1, len: 2), options: &o, isTCP: true).failure == .invalidArgument)
        #expect(SocketOptionMap.set(level: SOL_SOCKET, name: SO_LINGER, value: opt(SOL_SOCKET, SO_LINGER, 1, 5, len: 4), options: &o, isTCP: true).failure == .invalidArgument)
        #expect(SocketOptionMap.set(level: Int32(IPPROTO_TCP), name: TCP_KEEPIDLE, value: opt(Int32(IPPROTO_TCP), TCP_KEEPIDLE, 0), options: &o, isTCP: true).failure == .invalidArgument)
        var cc = opt(Int32(IPPROTO_TCP), SocketOptionMap.TCP_CONGESTION, 0, len: 6)
        withUnsafeMutableBytes(of: &cc.value) { b in for (i, c) in "bogus".utf8.enumerated() { b[i] = c } }
        #expect(SocketOptionMap.set(level: Int32(IPPROTO_TCP), name: SocketOptionMap.TCP_CONGESTION, value: cc, options: &o, isTCP: true).failure == .noSuchFileOrDirectory)
        // TCP options on a UDP socket, SO_BROADCAST on TCP: ENOPROTOOPT.
        #expect(SocketOptionMap.get(level: Int32(IPPROTO_TCP), name: TCP_NODELAY, options: o, context: udpCtx).failure == .protocolNotAvailable)
        #expect(SocketOptionMap.get(level: SOL_SOCKET, name: SocketOptionMap.SO_BROADCAST, options: o, context: tcpCtx).failure == .protocolNotAvailable)
        #expect(o == SocketOptions(), "a refused option changes nothing")
    }

    @Test func congestionControlNames() throws {
        var o = SocketOptions()
        var cc = opt(Int32(IPPROTO_TCP), SocketOptionMap.TCP_CONGESTION, 0, len: 5)
        withUnsafeMutableBytes(of: &cc.value) { b in for (i, c) in "reno".utf8.enumerated() { b[i] = c } }
        #expect(try SocketOptionMap.set(level: Int32(IPPROTO_TCP), name: SocketOptionMap.TCP_CONGESTION, value: cc, options: &o, isTCP: true).get() == .congestionControl(.newReno))
        #expect(try SocketOptionMap.get(level: Int32(IPPROTO_TCP), name: SocketOptionMap.TCP_CONGESTION, options: o, context: tcpCtx).get() == .bytes(Array("cubic".utf8) + [0]))
    }

    @Test func tcpInfoOfClosedSocket() {
        let b = SocketOptionMap.tcpInfoPrefix(nil)
        #expect(b.count == 16 && b[0] == 7)
    }

    @Test func valuesEncodeAsTheKernelCopiesThem() {
        #expect(OptionValue.int(-2).bytes == [0xFE, 0xFF, 0xFF, 0xFF])
        #expect(OptionValue.pair(1, 30).bytes == [1, 0, 0, 0, 30, 0, 0, 0])
        // A long value (struct tcp_info) runs past the struct's 16 value bytes on the wire.
        var out = [UInt8](repeating: 0, count: RPCCodec.maxReplySize)
        let long = [UInt8](0..<200)
        let n = out.withUnsafeMutableBytes {
            RPCCodec.encodeReply(RPCHeader(op: ZTRPC_OP_GETSOCKOPT, id: 1), result: 0, errno: 0,
                                 body: .opt(level: 6, name: 11, value: .bytes(long)), into: $0)
        }
        #expect(n == RPCCodec.replyHeaderSize + 16 + 200)
        let body = Array(out[RPCCodec.replyHeaderSize..<n])
        let optlen = body.withUnsafeBytes { $0.load(fromByteOffset: 8, as: UInt32.self) }
        #expect(optlen == 200 && Array(body[16...]) == long)
        // A short one still fills the 16-byte value field.
        let m = out.withUnsafeMutableBytes {
            RPCCodec.encodeReply(RPCHeader(op: ZTRPC_OP_GETSOCKOPT, id: 1), result: 0, errno: 0,
                                 body: .opt(level: 1, name: 4, value: .int(0)), into: $0)
        }
        #expect(m == RPCCodec.replyHeaderSize + MemoryLayout<ztrpc_sockopt>.size)
    }

    @Test func optionsFromBeforeInterception() {
        var w = ztrpc_sockopts()
        w.mask = ZTRPC_OPT_REUSEADDR | ZTRPC_OPT_KEEPIDLE | ZTRPC_OPT_LINGER
        w.bools = ZTRPC_OPT_REUSEADDR
        w.keepidle = 30
        w.linger_onoff = 1
        w.linger_secs = 0
        let o = SocketOptions(w)
        #expect(o.reuseAddr && o.keepIdle == 30 && o.abortsOnClose && !o.reusePort)
    }
}
