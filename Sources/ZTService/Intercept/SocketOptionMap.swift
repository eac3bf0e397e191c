import CShims
import CZTRPC
import NetStack
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Options an app set on an intercepted socket: recorded for getsockopt, applied to the stack
/// where it has them.
struct SocketOptions: Equatable {
    var reuseAddr = false
    var reusePort = false
    var keepAlive = false
    var noDelay = false
    var lingerOn: Int32 = 0
    var lingerSecs: Int32 = 0
    var rcvbuf: Int32 = 0
    var sndbuf: Int32 = 0
    var keepIdle: Int32 = 7200
    var keepIntvl: Int32 = 75
    var keepCnt: Int32 = 9
    var tos: Int32 = 0
    var broadcast = false

    init() {}

    /// Options the app set on its kernel socket before it was intercepted.
    init(_ o: ztrpc_sockopts) {
        let m = o.mask
        if m & ZTRPC_OPT_REUSEADDR != 0 { reuseAddr = o.bools & ZTRPC_OPT_REUSEADDR != 0 }
        if m & ZTRPC_OPT_REUSEPORT != 0 { reusePort = o.bools & ZTRPC_OPT_REUSEPORT != 0 }
        if m & ZTRPC_OPT_KEEPALIVE != 0 { keepAlive = o.bools & ZTRPC_OPT_KEEPALIVE != 0 }
        if m & ZTRPC_OPT_NODELAY != 0 { noDelay = o.bools & ZTRPC_OPT_NODELAY != 0 }
        if m & ZTRPC_OPT_LINGER != 0 { lingerOn = o.linger_onoff; lingerSecs = o.linger_secs }
        if m & ZTRPC_OPT_RCVBUF != 0 { rcvbuf = o.rcvbuf }
        if m & ZTRPC_OPT_SNDBUF != 0 { sndbuf = o.sndbuf }
        if m & ZTRPC_OPT_KEEPIDLE != 0 { keepIdle = o.keepidle }
        if m & ZTRPC_OPT_KEEPINTVL != 0 { keepIntvl = o.keepintvl }
        if m & ZTRPC_OPT_KEEPCNT != 0 { keepCnt = o.keepcnt }
    }

    /// The stack's view of these options (what TCPLayer.setOption understands).
    var tcpOptions: [TCPOption] {
        var out: [TCPOption] = [.noDelay(noDelay), .keepAlive(keepAlive)]
        out.append(.linger(lingerOn != 0 ? .seconds(UInt64(max(lingerSecs, 0))) : nil))
        // Linux doubles the requested size for bookkeeping; the stack gets the usable size.
        if rcvbuf > 0 { out.append(.receiveBufferSize(Self.clampBuffer(rcvbuf))) }
        if sndbuf > 0 { out.append(.sendBufferSize(Self.clampBuffer(sndbuf))) }
        return out
    }

    /// SO_LINGER {1, 0}: close resets instead of a FIN.
    var abortsOnClose: Bool { lingerOn != 0 && lingerSecs == 0 }

    static func clampBuffer(_ v: Int32) -> Int { min(max(Int(v), 4096), 16 << 20) }
}

/// A getsockopt answer before it is put on the wire.
enum OptionValue: Equatable {
    case int(Int32)
    case pair(Int32, Int32)
    case bytes([UInt8])
}

/// What `SocketOptionMap` needs to know about the socket besides its recorded options.
struct OptionContext {
    var isTCP: Bool
    /// The stack connection's current state, if it has one.
    var tcpInfo: TCPSocketInfo?
    /// The stack's default buffer sizes (SO_RCVBUF/SO_SNDBUF when the app set none).
    var defaultReceiveBuffer: Int
    var defaultSendBuffer: Int
}

/// Linux socket options → recorded values and stack settings. Pure: SO_ERROR (which needs the
/// connection's pending state) is answered by the TCP bridge, everything else here.
enum SocketOptionMap {
    static let TCP_MAXSEG: Int32 = 2
    static let TCP_INFO: Int32 = 11
    static let TCP_CONGESTION: Int32 = 13
    static let IP_TOS: Int32 = 1
    static let SO_BROADCAST: Int32 = 6

    /// getsockopt(level, name): the value, or the errno Linux gives.
    static func get(level: Int32, name: Int32, options o: SocketOptions, context: OptionContext) -> Result<OptionValue, Errno> {
        let tcp = context.isTCP
        switch (level, name) {
        case (SOL_SOCKET, SO_REUSEADDR): return .success(.int(o.reuseAddr ? 1 : 0))
        case (SOL_SOCKET, SO_REUSEPORT): return .success(.int(o.reusePort ? 1 : 0))
        case (SOL_SOCKET, SO_KEEPALIVE): return .success(.int(o.keepAlive ? 1 : 0))
        case (SOL_SOCKET, SO_LINGER): return .success(.pair(o.lingerOn, o.lingerSecs))
        case (SOL_SOCKET, SO_RCVBUF):
            return .success(.int(o.rcvbuf > 0 ? Int32(SocketOptions.clampBuffer(o.rcvbuf) * 2)
                                              : Int32(clamping: context.defaultReceiveBuffer)))
        case (SOL_SOCKET, SO_SNDBUF):
            return .success(.int(o.sndbuf > 0 ? Int32(SocketOptions.clampBuffer(o.sndbuf) * 2)
                                              : Int32(clamping: context.defaultSendBuffer)))
        case (Int32(IPPROTO_TCP), TCP_NODELAY) where tcp: return .success(.int(o.noDelay ? 1 : 0))
        case (Int32(IPPROTO_TCP), TCP_KEEPIDLE) where tcp: return .success(.int(o.keepIdle))
        case (Int32(IPPROTO_TCP), TCP_KEEPINTVL) where tcp: return .success(.int(o.keepIntvl))
        case (Int32(IPPROTO_TCP), TCP_KEEPCNT) where tcp: return .success(.int(o.keepCnt))
        case (Int32(IPPROTO_TCP), TCP_CONGESTION) where tcp:
            let algo = context.tcpInfo?.congestionControl ?? .cubic
            return .success(.bytes(Array((algo == .cubic ? "cubic" : "reno").utf8) + [0]))
        case (Int32(IPPROTO_TCP), TCP_MAXSEG) where tcp:
            return .success(.int(Int32(context.tcpInfo?.mss ?? 536)))
        case (Int32(IPPROTO_TCP), TCP_INFO) where tcp:
            return .success(.bytes(tcpInfoPrefix(context.tcpInfo)))
        case (Int32(IPPROTO_IP), IP_TOS): return .success(.int(o.tos))
        case (SOL_SOCKET, SO_BROADCAST) where !tcp: return .success(.int(o.broadcast ? 1 : 0))
        default: return .failure(.protocolNotAvailable)
        }
    }

    /// setsockopt(level, name, value): updates `o` and returns the stack setting to apply (if
    /// any), or the errno Linux gives. `value` holds the option bytes as sent (optlen of them
    /// meaningful).
    static func set(level: Int32, name: Int32, value: ztrpc_sockopt, options o: inout SocketOptions,
                    isTCP tcp: Bool) -> Result<TCPOption?, Errno> {
        let (v0, v1) = withUnsafeBytes(of: value.value) {
            ($0.load(fromByteOffset: 0, as: Int32.self), $0.load(fromByteOffset: 4, as: Int32.self))
        }
        guard value.optlen >= 4 else { return .failure(.invalidArgument) }
        var n = o
        var apply: TCPOption?
        switch (level, name) {
        case (SOL_SOCKET, SO_REUSEADDR): n.reuseAddr = v0 != 0
        case (SOL_SOCKET, SO_REUSEPORT): n.reusePort = v0 != 0
        case (SOL_SOCKET, SO_KEEPALIVE): n.keepAlive = v0 != 0; apply = .keepAlive(n.keepAlive)
        case (SOL_SOCKET, SO_LINGER):
            guard value.optlen >= 8 else { return .failure(.invalidArgument) }
            n.lingerOn = v0; n.lingerSecs = v1
            apply = .linger(v0 != 0 ? .seconds(UInt64(max(v1, 0))) : nil)
        case (SOL_SOCKET, SO_RCVBUF): n.rcvbuf = v0; apply = .receiveBufferSize(SocketOptions.clampBuffer(v0))
        case (SOL_SOCKET, SO_SNDBUF): n.sndbuf = v0; apply = .sendBufferSize(SocketOptions.clampBuffer(v0))
        case (Int32(IPPROTO_TCP), TCP_NODELAY) where tcp: n.noDelay = v0 != 0; apply = .noDelay(n.noDelay)
        case (Int32(IPPROTO_TCP), TCP_KEEPIDLE) where tcp:
            guard v0 >= 1 else { return .failure(.invalidArgument) }
            n.keepIdle = v0
        case (Int32(IPPROTO_TCP), TCP_KEEPINTVL) where tcp:
            guard v0 >= 1 else { return .failure(.invalidArgument) }
            n.keepIntvl = v0
        case (Int32(IPPROTO_TCP), TCP_KEEPCNT) where tcp:
            guard v0 >= 1 else { return .failure(.invalidArgument) }
            n.keepCnt = v0
        case (Int32(IPPROTO_TCP), TCP_CONGESTION) where tcp:
            let name = withUnsafeBytes(of: value.value) { b in
                String(decoding: b.prefix(Int(min(value.optlen, 16))).prefix { $0 != 0 }, as: UTF8.self)
            }
            switch name {
            case "cubic": apply = .congestionControl(.cubic)
            case "reno": apply = .congestionControl(.newReno)
            default: return .failure(.noSuchFileOrDirectory)
            }
        case (Int32(IPPROTO_TCP), TCP_MAXSEG) where tcp:
            // The stack derives the MSS from the MTU; a smaller request is accepted and ignored.
            guard v0 >= 0 else { return .failure(.invalidArgument) }
        case (Int32(IPPROTO_IP), IP_TOS): n.tos = v0
        case (SOL_SOCKET, SO_BROADCAST) where !tcp: n.broadcast = v0 != 0
        default: return .failure(.protocolNotAvailable)
        }
        o = n
        return .success(apply)
    }

    /// Puts a value into a getsockopt reply body.
    static func encode(_ v: OptionValue, into so: inout ztrpc_sockopt) {
        withUnsafeMutableBytes(of: &so.value) { b in
            b.initializeMemory(as: UInt8.self, repeating: 0)
            switch v {
            case .int(let s):
                b.storeBytes(of: s, toByteOffset: 0, as: Int32.self)
                so.optlen = 4
            case .pair(let a, let c):
                b.storeBytes(of: a, toByteOffset: 0, as: Int32.self)
                b.storeBytes(of: c, toByteOffset: 4, as: Int32.self)
                so.optlen = 8
            case .bytes(let raw):
                let n = min(raw.count, b.count)
                for k in 0..<n { b[k] = raw[k] }
                so.optlen = UInt32(n)
            }
        }
    }

    /// The first 16 bytes of Linux's struct tcp_info (what fits the wire): state, retransmits, rto.
    static func tcpInfoPrefix(_ info: TCPSocketInfo?) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 16)
        guard let i = info else {
            b[0] = 7 // TCP_CLOSE
            return b
        }
        b[0] = linuxTCPState(i.state)
        b[2] = UInt8(truncatingIfNeeded: min(i.retransmissions, 255))
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: i.rto.nanoseconds / 1000).littleEndian) {
            b.replaceSubrange(8..<12, with: $0)
        }
        return b
    }

    /// Linux's numbering of TCP states (include/net/tcp_states.h) for TCP_INFO.
    static func linuxTCPState(_ s: TCPState) -> UInt8 {
        switch s {
        case .established: return 1
        case .synSent: return 2
        case .synReceived: return 3
        case .finWait1: return 4
        case .finWait2: return 5
        case .timeWait: return 6
        case .closed: return 7
        case .closeWait: return 8
        case .lastAck: return 9
        case .listen: return 10
        case .closing: return 11
        }
    }
}
