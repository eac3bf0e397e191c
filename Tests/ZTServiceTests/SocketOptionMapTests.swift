import CShims
import Glibc
import CZTRPC
import NetStack
import SystemPackage
import Testing
@testable import ZTService

/// Linux option → recorded value / stack setting, without any socket. (The replay of recorded
/// kernel answers is SocketOptionReplayTests; these pin the cases that matter most by name.)
@Suite struct SocketOptionMapTests {
    let tcp: Int32 = Int32(IPPROTO_TCP), ip: Int32 = Int32(IPPROTO_IP)

    func ctx(tcp: Bool = true, state: TCPState = .established, privileged: Bool = true) -> OptionContext {
        var c = OptionContext(isTCP: tcp)
        c.state = tcp ? state : .closed
        c.capable = { _ in privileged }
        c.interface = ("ztnet0", 7)
        return c
    }

    func le(_ v: Int32) -> [UInt8] { SocketOptionMap.le(v) }

    func set(_ o: inout SocketOptions, _ level: Int32, _ name: Int32, _ v: [UInt8], _ c: OptionContext? = nil)
        -> Result<[TCPOption], Errno> {
        SocketOptionMap.set(level: level, name: name, value: v, optlen: v.count, options: &o, context: c ?? ctx())
    }

    func get(_ o: SocketOptions, _ level: Int32, _ name: Int32, len: Int = 512, _ c: OptionContext? = nil) -> Result<[UInt8], Errno> {
        SocketOptionMap.get(level: level, name: name, len: len, options: o, context: c ?? ctx())
    }

    // MARK: The options of issue 9

    @Test func optionsThatUsedToBeRefusedReadBack() throws {
        var o = SocketOptions()
        let cases: [(Int32, Int32, Int32)] = [
            (SOL_SOCKET, SO_PRIORITY, 5), (SOL_SOCKET, SocketOptionMap.SO_MARK, 42), (SOL_SOCKET, SO_OOBINLINE, 1),
            (SOL_SOCKET, SocketOptionMap.SO_BUSY_POLL, 50), (SOL_SOCKET, SocketOptionMap.SO_ZEROCOPY, 1),
            (ip, SocketOptionMap.IP_TTL, 9), (tcp, SocketOptionMap.TCP_CORK, 1), (tcp, SocketOptionMap.TCP_USER_TIMEOUT, 3000),
            (tcp, SocketOptionMap.TCP_NOTSENT_LOWAT, 16384), (tcp, SocketOptionMap.TCP_WINDOW_CLAMP, 20000),
        ]
        for (level, name, v) in cases {
            _ = try set(&o, level, name, le(v)).get()
            #expect(try get(o, level, name).get() == le(v), "\(level)/\(name)")
        }
        // TCP_DEFER_ACCEPT reads back as the seconds its retransmission count covers.
        _ = try set(&o, tcp, SocketOptionMap.TCP_DEFER_ACCEPT, le(5)).get()
        #expect(try get(o, tcp, SocketOptionMap.TCP_DEFER_ACCEPT).get() == le(7))
        // TCP_QUICKACK 0 reads back 0 until the socket connects.
        _ = try set(&o, tcp, SocketOptionMap.TCP_QUICKACK, le(0)).get()
        #expect(try get(o, tcp, SocketOptionMap.TCP_QUICKACK).get() == le(0))
        o.connected()
        #expect(try get(o, tcp, SocketOptionMap.TCP_QUICKACK).get() == le(1))
    }

    @Test func stackSettingsAreReturned() throws {
        var o = SocketOptions()
        #expect(try set(&o, tcp, TCP_NODELAY, le(1)).get() == [.noDelay(true)])
        #expect(try set(&o, SOL_SOCKET, SO_LINGER, le(1) + le(0)).get() == [.linger(.zero)])
        #expect(o.abortsOnClose)
        #expect(try set(&o, tcp, SocketOptionMap.TCP_CORK, le(1)).get() == [.cork(true)])
        #expect(try set(&o, tcp, SocketOptionMap.TCP_USER_TIMEOUT, le(2500)).get() == [.userTimeout(.milliseconds(2500))])
        #expect(try set(&o, tcp, SocketOptionMap.TCP_NOTSENT_LOWAT, le(0)).get() == [.notSentLowWater(nil)])
        #expect(try set(&o, tcp, SocketOptionMap.TCP_MAXSEG, le(1000)).get() == [.maxSegment(1000)])
        #expect(try set(&o, tcp, TCP_KEEPIDLE, le(30)).get() == [.keepAliveIdle(.seconds(30))])
        #expect(try set(&o, ip, SocketOptionMap.IP_TOS, le(0xB9)).get() == [.typeOfService(0xB8)])   // ECN bits are TCP's
        #expect(try set(&o, ip, SocketOptionMap.IP_TTL, le(-1)).get() == [.timeToLive(64)])
        var cc = Array("reno".utf8) + [0]
        #expect(try set(&o, tcp, SocketOptionMap.TCP_CONGESTION, cc).get() == [.congestionControl(.newReno)])
        #expect(try get(o, tcp, SocketOptionMap.TCP_CONGESTION, len: 4).get() == Array("reno".utf8))
        cc = Array("bbr".utf8)
        #expect(set(&o, tcp, SocketOptionMap.TCP_CONGESTION, cc).failure == Errno(rawValue: ENOENT))
        // Every recorded setting reaches a stack socket made later.
        let all = o.tcpOptions
        #expect(all.contains(.cork(true)) && all.contains(.maxSegment(1000)) && all.contains(.typeOfService(0xB8)))
        #expect(all.contains(.keepAliveIdle(.seconds(30))) && all.contains(.congestionControl(.newReno)))
    }

    @Test func bufferSizesAsLinux() throws {
        var o = SocketOptions()
        var c = ctx()
        c.defaultSendBuffer = 65536
        #expect(try get(o, SOL_SOCKET, SO_SNDBUF, c).get() == le(65536))
        _ = try set(&o, SOL_SOCKET, SO_SNDBUF, le(50000)).get()
        #expect(try get(o, SOL_SOCKET, SO_SNDBUF).get() == le(100000))
        _ = try set(&o, SOL_SOCKET, SO_SNDBUF, le(1)).get()
        #expect(try get(o, SOL_SOCKET, SO_SNDBUF).get() == le(SocketOptionMap.minSndbuf))
        #expect(try get(o, SOL_SOCKET, SocketOptionMap.SO_BUF_LOCK).get() == le(1))
        _ = try set(&o, SOL_SOCKET, SO_RCVBUF, le(-1)).get()   // unsigned: capped at rmem_max
        #expect(try get(o, SOL_SOCKET, SO_RCVBUF).get() == le(2 * SocketOptionMap.rmemMax))
    }

    // MARK: Errnos

    @Test func errorsAsLinuxGivesThem() {
        var o = SocketOptions()
        let fresh = o
        // Unknown names: ENOPROTOOPT, but a short optlen is checked first at SOL_SOCKET.
        #expect(set(&o, SOL_SOCKET, 9999, le(1)).failure == Errno(rawValue: ENOPROTOOPT))
        #expect(set(&o, SOL_SOCKET, 9999, [1]).failure == Errno(rawValue: EINVAL))
        #expect(get(o, SOL_SOCKET, 9999).failure == Errno(rawValue: ENOPROTOOPT))
        #expect(set(&o, SOL_SOCKET, SO_REUSEADDR, [1, 0]).failure == Errno(rawValue: EINVAL))
        #expect(set(&o, SOL_SOCKET, SO_LINGER, le(1)).failure == Errno(rawValue: EINVAL))
        // Out of range.
        #expect(set(&o, tcp, TCP_KEEPIDLE, le(0)).failure == Errno(rawValue: EINVAL))
        #expect(set(&o, tcp, SocketOptionMap.TCP_MAXSEG, le(87)).failure == Errno(rawValue: EINVAL))
        #expect(set(&o, ip, SocketOptionMap.IP_TTL, le(0)).failure == Errno(rawValue: EINVAL))
        #expect(set(&o, tcp, SocketOptionMap.TCP_USER_TIMEOUT, le(-1)).failure == Errno(rawValue: EINVAL))
        // TCP_WINDOW_CLAMP 0 only before connecting.
        #expect(set(&o, tcp, SocketOptionMap.TCP_WINDOW_CLAMP, le(0)).failure == Errno(rawValue: EINVAL))
        // Another protocol's level: EOPNOTSUPP to get, ENOPROTOOPT to set.
        #expect(get(o, tcp, TCP_NODELAY, ctx(tcp: false)).failure == Errno(rawValue: EOPNOTSUPP))
        #expect(set(&o, tcp, TCP_NODELAY, le(1), ctx(tcp: false)).failure == Errno(rawValue: ENOPROTOOPT))
        #expect(get(o, Int32(IPPROTO_UDP), 1).failure == Errno(rawValue: EOPNOTSUPP))
        // Read-only options.
        #expect(set(&o, SOL_SOCKET, SO_TYPE, le(1)).failure == Errno(rawValue: ENOPROTOOPT))
        #expect(set(&o, SOL_SOCKET, SocketOptionMap.SO_COOKIE, le(1)).failure == Errno(rawValue: ENOPROTOOPT))
        // Devices other than the network's, and what a kernel without the feature says.
        #expect(set(&o, SOL_SOCKET, SO_BINDTODEVICE, Array("nosuchdev0".utf8)).failure == Errno(rawValue: ENODEV))
        #expect(set(&o, tcp, SocketOptionMap.TCP_ULP, Array("tls".utf8)).failure == Errno(rawValue: ENOENT))
        #expect(set(&o, tcp, SocketOptionMap.TCP_MD5SIG, le(1)).failure == Errno(rawValue: EINVAL))
        #expect(o == fresh, "a refused option changes nothing")
    }

    @Test func privilegedOptionsNeedTheCapability() throws {
        var o = SocketOptions()
        let user = ctx(privileged: false)
        #expect(set(&o, SOL_SOCKET, SocketOptionMap.SO_MARK, le(1), user).failure == Errno(rawValue: EPERM))
        #expect(set(&o, SOL_SOCKET, SO_PRIORITY, le(7), user).failure == Errno(rawValue: EPERM))
        #expect(throws: Never.self) { try set(&o, SOL_SOCKET, SO_PRIORITY, le(6), user).get() }
        #expect(set(&o, SOL_SOCKET, SO_DEBUG, le(1), user).failure == Errno(rawValue: EACCES))
        #expect(set(&o, SOL_SOCKET, SocketOptionMap.SO_RCVBUFFORCE, le(1 << 20), user).failure == Errno(rawValue: EPERM))
        #expect(set(&o, ip, SocketOptionMap.IP_TRANSPARENT, le(1), user).failure == Errno(rawValue: EPERM))
        #expect(set(&o, tcp, SocketOptionMap.TCP_REPAIR, le(1), user).failure == Errno(rawValue: EPERM))
        #expect(set(&o, SOL_SOCKET, SocketOptionMap.SO_PREFER_BUSY_POLL, le(1), user).failure == Errno(rawValue: EPERM))
        // With the capability: accepted (TCP_REPAIR itself is not supported).
        let root = ctx()
        _ = try set(&o, SOL_SOCKET, SocketOptionMap.SO_MARK, le(1), root).get()
        #expect(set(&o, tcp, SocketOptionMap.TCP_REPAIR, le(1), root).failure == Errno(rawValue: EOPNOTSUPP))
    }

    // MARK: Lengths

    @Test func shortBuffersAsEachLevelCopies() throws {
        var o = SocketOptions()
        _ = try set(&o, ip, SocketOptionMap.IP_TTL, le(200)).get()
        // IPPROTO_IP gives one byte for a small value in a short buffer...
        #expect(try get(o, ip, SocketOptionMap.IP_TTL, len: 2).get() == [200])
        // ...SOL_SOCKET and IPPROTO_TCP copy min(len, 4) bytes.
        _ = try set(&o, SOL_SOCKET, SO_PRIORITY, le(3)).get()
        #expect(try get(o, SOL_SOCKET, SO_PRIORITY, len: 2).get() == [3, 0])
        #expect(try get(o, tcp, SocketOptionMap.TCP_MAXSEG, len: 1).get() == [0x18])   // 536 & 0xFF
        // SO_COOKIE wants 8 bytes, SO_NETNS_COOKIE exactly 8, SO_PEERNAME at most 16.
        #expect(get(o, SOL_SOCKET, SocketOptionMap.SO_COOKIE, len: 4).failure == Errno(rawValue: EINVAL))
        #expect(get(o, SOL_SOCKET, SocketOptionMap.SO_NETNS_COOKIE, len: 16).failure == Errno(rawValue: EINVAL))
        var c = ctx()
        c.peer = IPv4Endpoint(IPv4Address(10, 0, 0, 9), 80)
        #expect(get(o, SOL_SOCKET, SocketOptionMap.SO_PEERNAME, len: 32, c).failure == Errno(rawValue: EINVAL))
        #expect(try get(o, SOL_SOCKET, SocketOptionMap.SO_PEERNAME, len: 16, c).get() == [2, 0, 0, 80, 10, 0, 0, 9] + [UInt8](repeating: 0, count: 8))
    }

    // MARK: TCP_INFO

    @Test func tcpInfoIsTheKernelsLayout() throws {
        var i = TCPSocketInfo(state: .established, local: IPv4Endpoint(IPv4Address(10, 0, 0, 1), 5000),
                              remote: IPv4Endpoint(IPv4Address(10, 0, 0, 2), 80), bytesReceived: 777, bytesSent: 3000,
                              srtt: .microseconds(1500), rto: .milliseconds(201), cwnd: 14600, ssthresh: Int.max >> 1,
                              retransmissions: 2, sendQueue: 4000, receiveQueue: 10, peerWindow: 65000)
        i.mss = 1448; i.timestamps = true; i.sack = true; i.windowScaling = true; i.sendWindowShift = 7
        i.receiveWindowShift = 9; i.rttVariance = .microseconds(400); i.bytesInFlight = 2896; i.unackedSegments = 2
        i.bytesAcked = 3001; i.segmentsOut = 9; i.segmentsIn = 8; i.minRTT = .microseconds(900); i.pathMTU = 1500
        i.advertisedMss = 1448; i.notSentBytes = 1104
        var c = ctx()
        c.tcpInfo = i
        let b = try get(SocketOptions(), tcp, SocketOptionMap.TCP_INFO, c).get()
        #expect(b.count == 280)
        func u32(_ off: Int) -> UInt32 { b[off..<off + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        func u64(_ off: Int) -> UInt64 { b[off..<off + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        #expect(b[0] == 1 && b[5] == 7 && b[6] == 0x97)               // ESTABLISHED, TS|SACK|WS, wscales
        #expect(u32(8) == 201_000 && u32(16) == 1448 && u32(24) == 2)  // rto, snd_mss, unacked
        #expect(u32(60) == 1500 && u32(68) == 1500 && u32(72) == 400)  // pmtu, rtt, rttvar
        #expect(u32(76) == UInt32(Int32.max) && u32(80) == 10)        // ssthresh (infinite), cwnd segments
        #expect(u32(100) == 2 && u64(120) == 3001 && u64(128) == 777)  // total_retrans, bytes_acked/received
        #expect(u32(136) == 9 && u32(140) == 8 && u32(144) == 1104 && u32(148) == 900)
        #expect(u32(228) == 65000)                                     // snd_wnd
        #expect(try get(SocketOptions(), tcp, SocketOptionMap.TCP_INFO, len: 232, c).get() == Array(b.prefix(232)))
        // A socket without a connection: state only.
        let closed = try get(SocketOptions(), tcp, SocketOptionMap.TCP_INFO, ctx(state: .closed)).get()
        #expect(closed.count == 280 && closed[0] == 7 && closed[1...103].allSatisfy { $0 == 0 })
    }

    // MARK: Wire

    @Test func valuesEncodeAsTheKernelCopiesThem() {
        #expect(OptionValue.int(-2).bytes == [0xFE, 0xFF, 0xFF, 0xFF])
        #expect(OptionValue.pair(1, 30).bytes == [1, 0, 0, 0, 30, 0, 0, 0])
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
    }

    @Test func optionsFromBeforeInterception() {
        var w = ztrpc_sockopts()
        w.mask = ZTRPC_OPT_REUSEADDR | ZTRPC_OPT_KEEPIDLE | ZTRPC_OPT_LINGER | ZTRPC_OPT_SNDBUF
        w.bools = ZTRPC_OPT_REUSEADDR
        w.keepidle = 30
        w.linger_onoff = 1
        w.linger_secs = 0
        w.sndbuf = 10000
        let o = SocketOptions(w)
        #expect(o.reuseAddr && o.keepIdle == 30 && o.abortsOnClose && !o.reusePort && o.sndbuf == 20000)
    }
}
