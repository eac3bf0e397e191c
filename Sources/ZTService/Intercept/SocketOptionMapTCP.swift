import CShims
import NetStack
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// IPPROTO_TCP options (see SocketOptionMap.swift). The ones with behaviour reach NetStack as
// `TCPOption`s; TCP_REPAIR (checkpoint/restore of kernel sockets) is refused, MD5/AO
// signatures and upper-layer protocols (kTLS) answer like a kernel built without them, and the
// Fast Open options are recorded (the stack never sends data on a SYN, which Linux also falls
// back to without a cookie).
extension SocketOptionMap {
    static let TCP_MAXSEG: Int32 = 2, TCP_CORK: Int32 = 3, TCP_KEEPIDLE_: Int32 = 4, TCP_KEEPINTVL_: Int32 = 5
    static let TCP_KEEPCNT_: Int32 = 6, TCP_SYNCNT: Int32 = 7, TCP_LINGER2: Int32 = 8, TCP_DEFER_ACCEPT: Int32 = 9
    static let TCP_WINDOW_CLAMP: Int32 = 10, TCP_INFO: Int32 = 11, TCP_QUICKACK: Int32 = 12
    static let TCP_CONGESTION: Int32 = 13, TCP_MD5SIG: Int32 = 14, TCP_THIN_LINEAR_TIMEOUTS: Int32 = 16
    static let TCP_THIN_DUPACK: Int32 = 17, TCP_USER_TIMEOUT: Int32 = 18, TCP_REPAIR: Int32 = 19
    static let TCP_REPAIR_QUEUE: Int32 = 20, TCP_QUEUE_SEQ: Int32 = 21, TCP_REPAIR_OPTIONS: Int32 = 22
    static let TCP_FASTOPEN: Int32 = 23, TCP_TIMESTAMP: Int32 = 24, TCP_NOTSENT_LOWAT: Int32 = 25
    static let TCP_CC_INFO: Int32 = 26, TCP_SAVE_SYN: Int32 = 27, TCP_SAVED_SYN: Int32 = 28
    static let TCP_REPAIR_WINDOW: Int32 = 29, TCP_FASTOPEN_CONNECT: Int32 = 30, TCP_ULP: Int32 = 31
    static let TCP_MD5SIG_EXT: Int32 = 32, TCP_FASTOPEN_KEY: Int32 = 33, TCP_FASTOPEN_NO_COOKIE: Int32 = 34
    static let TCP_ZEROCOPY_RECEIVE: Int32 = 35, TCP_INQ: Int32 = 36, TCP_TX_DELAY: Int32 = 37
    static let TCP_AO_REPAIR: Int32 = 42, TCP_IS_MPTCP: Int32 = 43, TCP_RTO_MAX_MS: Int32 = 44
    static let TCP_RTO_MIN_US: Int32 = 45, TCP_DELACK_MAX_US: Int32 = 46

    /// Limits of include/net/tcp.h.
    static let minMss: Int32 = 88, maxTCPWindow: Int32 = 32767, maxKeepIdle: Int32 = 32767, maxKeepCount: Int32 = 127
    static let maxSynCount: Int32 = 127, finTimeoutMax: Int32 = 120, rtoMaxSecs: Int64 = 120

    /// The algorithms this stack has (Linux's names), and back (nil: not in this stack).
    static func congestionName(_ a: CongestionControl) -> String { a == .cubic ? "cubic" : "reno" }
    static func congestion(named n: String) -> CongestionControl? {
        switch n {
        case "cubic": .cubic
        case "reno": .newReno
        default: nil
        }
    }

    /// net.ipv4.tcp_allowed_congestion_control: what a process without CAP_NET_ADMIN may pick.
    static let allowedCongestion: Set<String> = {
        let fd = open("/proc/sys/net/ipv4/tcp_allowed_congestion_control", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return ["reno", "cubic"] }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 256)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 255) }
        guard n > 0 else { return ["reno", "cubic"] }
        return Set(buf[0..<n].split { $0 == 0x20 || $0 == 0x0A }.map { String(decoding: $0, as: UTF8.self) })
    }()

    /// secs_to_retrans / retrans_to_secs of TCP_DEFER_ACCEPT (timeouts doubling from 1 s, at
    /// most TCP_RTO_MAX apart).
    static func deferRetransmits(seconds: Int32) -> UInt8 {
        guard seconds > 0 else { return 0 }
        var res: Int32 = 1, timeout: Int32 = 1, period: Int32 = 1
        while seconds > period && res < 255 {
            res += 1
            timeout <<= 1
            if timeout > Int32(rtoMaxSecs) { timeout = Int32(rtoMaxSecs) }
            period += timeout
        }
        return UInt8(res)
    }

    static func deferSeconds(retransmits: UInt8) -> Int32 {
        guard retransmits > 0 else { return 0 }
        var timeout: Int32 = 1, period: Int32 = 1, left = retransmits
        while left > 1 {
            left -= 1
            timeout <<= 1
            if timeout > Int32(rtoMaxSecs) { timeout = Int32(rtoMaxSecs) }
            period += timeout
        }
        return period
    }

    // MARK: - getsockopt

    static func tcpGet(_ name: Int32, len: Int, _ o: SocketOptions, _ c: OptionContext) -> Result<[UInt8], Errno> {
        let cfg = c.tcpConfig
        let closedOrListen = c.state == .closed || c.state == .listen
        switch name {
        case TCP_NODELAY: return ok(o[.noDelay], len)
        case TCP_CORK: return ok(o[.cork], len)
        case TCP_MAXSEG:
            if o.userMss > 0 && closedOrListen { return ok(o.userMss, len) }
            if let i = c.tcpInfo, i.state != .listen, i.mss > 0 { return ok(Int32(clamping: i.mss), len) }
            return ok(Int32(cfg.mssDefault), len)
        case TCP_KEEPIDLE_: return ok(o.keepIdle ?? Int32(clamping: cfg.keepAliveIdle.nanoseconds / 1_000_000_000), len)
        case TCP_KEEPINTVL_: return ok(o.keepIntvl ?? Int32(clamping: cfg.keepAliveInterval.nanoseconds / 1_000_000_000), len)
        case TCP_KEEPCNT_: return ok(o.keepCnt ?? Int32(clamping: cfg.keepAliveCount), len)
        case TCP_SYNCNT: return ok(o.synCount > 0 ? o.synCount : Int32(clamping: cfg.synRetries), len)
        case TCP_LINGER2:
            if o.linger2 < 0 { return ok(Int32(-1), len) }
            return ok(o.linger2 > 0 ? o.linger2 : Int32(clamping: cfg.finTimeout.nanoseconds / 1_000_000_000), len)
        case TCP_DEFER_ACCEPT: return ok(deferSeconds(retransmits: o.deferAcceptRetransmits), len)
        case TCP_WINDOW_CLAMP:
            if o.windowClamp > 0 { return ok(o.windowClamp, len) }
            // Unset: the largest window the connection can offer (Linux: from its buffer).
            guard let i = c.tcpInfo, i.state != .listen else { return ok(Int32(0), len) }
            if ![.synSent, .synReceived].contains(i.state), i.advertisedMss > 0 {
                // Established: Linux's figure, not our ring's (tcp_init_buffer_space): the window
                // its receive buffer allows (half of it at the default scaling ratio), less one
                // segment it reserves.
                let advmss = max(i.advertisedMss, 1)   // Linux's advmss: less the timestamps already
                let maxwin = Int(o.rcvbuf ?? Int32(clamping: c.defaultReceiveBuffer)) / 2
                let clamp = maxwin > 2 * advmss ? max(2 * advmss, maxwin - advmss) : maxwin
                return ok(Int32(clamping: clamp), len)
            }
            return ok(Int32(clamping: max(i.receiveSpace + i.receiveQueue, i.receiveWindow)), len)
        case TCP_INFO:
            return .success(Array(TCPInfo.encode(c.tcpInfo, options: o, state: c.state).prefix(max(len, 0))))
        case TCP_QUICKACK: return ok(!o[.pingpong], len)
        case TCP_CONGESTION:
            let name = congestionName(o.congestion ?? c.tcpInfo?.congestionControl ?? cfg.congestionControl)
            var b = Array(name.utf8)
            b += [UInt8](repeating: 0, count: 16 - b.count)
            return .success(Array(b.prefix(min(max(len, 0), 16))))
        case TCP_THIN_LINEAR_TIMEOUTS: return ok(o[.thinLinearTimeouts], len)
        case TCP_THIN_DUPACK: return ok(Int32(0), len)
        case TCP_USER_TIMEOUT: return ok(Int32(bitPattern: o.userTimeout), len)
        case TCP_REPAIR: return ok(Int32(0), len)
        case TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ: return fail(EINVAL)   // not in repair mode
        case TCP_REPAIR_WINDOW: return fail(len != 20 ? EINVAL : EPERM)
        case TCP_FASTOPEN: return ok(o.fastOpen, len)
        case TCP_FASTOPEN_CONNECT: return ok(o.fastOpenConnect, len)
        case TCP_FASTOPEN_NO_COOKIE: return ok(o.fastOpenNoCookie, len)
        case TCP_FASTOPEN_KEY: return .success(Array(o.fastOpenKey.prefix(max(len, 0))))
        case TCP_TX_DELAY: return ok(o.txDelay, len)
        case TCP_TIMESTAMP: return ok(Int32(bitPattern: c.clockMs & ~1), len)
        case TCP_NOTSENT_LOWAT: return ok(Int32(bitPattern: o.notSentLowWater), len)
        case TCP_INQ: return ok(o[.inq], len)
        case TCP_SAVE_SYN: return ok(o.saveSyn, len)
        case TCP_SAVED_SYN, TCP_CC_INFO, TCP_ULP: return .success([])   // nothing saved; no CA info; no ULP
        case TCP_ZEROCOPY_RECEIVE: return fail(EINVAL)   // nothing of ours can be mmap()ed
        case TCP_AO_REPAIR: return fail(closedOrListen && c.state == .listen || !c.capable(.netAdmin) ? EPERM : ENOPROTOOPT)
        case TCP_IS_MPTCP: return ok(Int32(0), len)
        case TCP_RTO_MAX_MS:
            let j = o.rtoMaxJiffies.map(Int64.init) ?? jiffies(msecs: Int64(cfg.maxRTO.nanoseconds / 1_000_000))
            return ok(Int32(clamping: msecs(jiffies: j)), len)
        case TCP_RTO_MIN_US:
            let j = o.rtoMinJiffies.map(Int64.init) ?? jiffies(usecs: Int64(cfg.minRTO.nanoseconds / 1000))
            return ok(Int32(clamping: usecs(jiffies: j)), len)
        case TCP_DELACK_MAX_US:
            return ok(Int32(clamping: usecs(jiffies: o.delackMaxJiffies.map(Int64.init) ?? hz / 5)), len)
        default:
            return fail(ENOPROTOOPT)
        }
    }

    // MARK: - setsockopt

    /// The options some servers set around every response (nginx's tcp_nopush: TCP_CORK on and
    /// off): an int of at least 4 bytes, any value valid. `toggle` sets one (name one of these).
    static func isToggle(_ name: Int32) -> Bool {
        name == TCP_NODELAY || name == TCP_CORK || name == TCP_QUICKACK
    }

    static func toggle(_ name: Int32, _ val: Int32, _ o: inout SocketOptions) -> TCPOption {
        switch name {
        case TCP_NODELAY:
            o[.noDelay] = val != 0
            return .noDelay(val != 0)
        case TCP_CORK:
            o[.cork] = val != 0
            return .cork(val != 0)
        default:   // TCP_QUICKACK: 0 enters delayed-ACK (pingpong) mode, anything else leaves it
            o[.pingpong] = val == 0
            return .quickAck(val != 0)
        }
    }

    static func tcpSet(_ name: Int32, _ v: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        // The string and struct options come first, as in do_tcp_setsockopt.
        switch name {
        case TCP_CONGESTION:
            guard v.optlen >= 1 else { return fail(EINVAL) }
            let n = v.string(max: 15)
            // bbr, vegas...: not in this stack, like an unloaded module.
            guard let algo = congestion(named: n) else { return fail(ENOENT) }
            let isDefault = algo == c.tcpConfig.congestionControl
            guard isDefault || allowedCongestion.contains(n) || c.capable(.netAdmin) else { return fail(EPERM) }
            o.congestion = algo
            return .success([.congestionControl(algo)])
        case TCP_ULP:
            guard v.optlen >= 1 else { return fail(EINVAL) }
            return fail(ENOENT)   // no upper-layer protocols (kTLS, ...)
        case TCP_FASTOPEN_KEY:
            guard v.optlen == 16 || v.optlen == 32 else { return fail(EINVAL) }
            o.fastOpenKey = Array(v.bytes.prefix(v.optlen))
            return done
        default:
            break
        }
        guard v.optlen >= 4 else { return fail(EINVAL) }
        let val = v.int
        let closed = c.state == .closed
        switch name {
        case TCP_NODELAY, TCP_CORK, TCP_QUICKACK:
            return .success([toggle(name, val, &o)])
        case TCP_MAXSEG:
            guard val == 0 || (minMss...maxTCPWindow).contains(val) else { return fail(EINVAL) }
            o.userMss = val
            return .success([.maxSegment(Int(val))])
        case TCP_KEEPIDLE_:
            guard (1...maxKeepIdle).contains(val) else { return fail(EINVAL) }
            o.keepIdle = val
            return .success([.keepAliveIdle(.seconds(UInt64(val)))])
        case TCP_KEEPINTVL_:
            guard (1...maxKeepIdle).contains(val) else { return fail(EINVAL) }
            o.keepIntvl = val
            return .success([.keepAliveInterval(.seconds(UInt64(val)))])
        case TCP_KEEPCNT_:
            guard (1...maxKeepCount).contains(val) else { return fail(EINVAL) }
            o.keepCnt = val
            return .success([.keepAliveCount(Int(val))])
        case TCP_SYNCNT:
            guard (1...maxSynCount).contains(val) else { return fail(EINVAL) }
            o.synCount = val
            return .success([.synRetries(Int(val))])
        case TCP_LINGER2:
            o.linger2 = val < 0 ? -1 : min(val, finTimeoutMax)
            if val == 0 { return .success([.finWait2Timeout(c.tcpConfig.finTimeout)]) }
            return .success([.finWait2Timeout(val < 0 ? nil : .seconds(UInt64(o.linger2)))])
        case TCP_DEFER_ACCEPT:
            o.deferAcceptRetransmits = deferRetransmits(seconds: val)
            return .success([.deferAccept(retransmissions: Int(o.deferAcceptRetransmits))])
        case TCP_WINDOW_CLAMP:
            if val == 0 {
                guard closed else { return fail(EINVAL) }
                o.windowClamp = 0
                return .success([.windowClamp(0)])
            }
            o.windowClamp = max(minRcvbuf / 2, val)
            return .success([.windowClamp(Int(o.windowClamp))])
        case TCP_THIN_LINEAR_TIMEOUTS:
            guard val == 0 || val == 1 else { return fail(EINVAL) }
            o[.thinLinearTimeouts] = val == 1
            return done
        case TCP_THIN_DUPACK:
            guard val == 0 || val == 1 else { return fail(EINVAL) }
            return done
        case TCP_USER_TIMEOUT:
            guard val >= 0 else { return fail(EINVAL) }
            o.userTimeout = UInt32(val)
            return .success([.userTimeout(.milliseconds(UInt64(val)))])
        case TCP_REPAIR:
            guard c.capable(.netAdmin), c.state != .listen else { return fail(EPERM) }
            switch val {
            case 0, -1: return done   // repair off: it never was on
            case 1: return fail(EOPNOTSUPP)   // checkpoint/restore of kernel sockets: not ours
            default: return fail(EINVAL)
            }
        case TCP_REPAIR_QUEUE, TCP_REPAIR_WINDOW:
            return fail(EPERM)
        case TCP_QUEUE_SEQ:
            return fail(closed ? EINVAL : EPERM)
        case TCP_REPAIR_OPTIONS:
            return fail(EINVAL)
        case TCP_TIMESTAMP:
            return fail(EPERM)   // repair mode only
        case TCP_FASTOPEN:
            guard val >= 0, closed || c.state == .listen else { return fail(EINVAL) }
            o.fastOpen = min(val, c.somaxconn)   // fastopen_queue_tune
            return done
        case TCP_FASTOPEN_CONNECT:
            guard val == 0 || val == 1, closed else { return fail(EINVAL) }
            o.fastOpenConnect = val
            return done
        case TCP_FASTOPEN_NO_COOKIE:
            guard val == 0 || val == 1, closed || c.state == .listen else { return fail(EINVAL) }
            o.fastOpenNoCookie = val
            return done
        case TCP_NOTSENT_LOWAT:
            o.notSentLowWater = UInt32(bitPattern: val)
            return .success([.notSentLowWater(val > 0 ? Int(val) : nil)])
        case TCP_SAVE_SYN:
            guard (0...2).contains(val) else { return fail(EINVAL) }
            o.saveSyn = val
            return done
        case TCP_INQ:
            guard val == 0 || val == 1 else { return fail(EINVAL) }
            o[.inq] = val == 1
            return done
        case TCP_TX_DELAY:
            guard val >= 0, val < 1 << 28 else { return fail(EINVAL) }
            o.txDelay = val
            return done
        case TCP_AO_REPAIR:
            return fail(c.state == .listen || !c.capable(.netAdmin) ? EPERM : ENOPROTOOPT)
        case TCP_RTO_MAX_MS:
            guard val >= 1000, Int64(val) <= rtoMaxSecs * 1000 else { return fail(EINVAL) }
            let j = jiffies(msecs: Int64(val))
            o.rtoMaxJiffies = Int32(j)
            return .success([.maxRTO(duration(jiffies: Int32(j)))])
        case TCP_RTO_MIN_US, TCP_DELACK_MAX_US:
            let j = jiffies(usecs: Int64(UInt32(bitPattern: val)))
            guard j >= 2, j <= hz / 5 else { return fail(EINVAL) }
            if name == TCP_RTO_MIN_US {
                o.rtoMinJiffies = Int32(j)
                return .success([.minRTO(duration(jiffies: Int32(j)))])
            }
            o.delackMaxJiffies = Int32(j)
            return .success([.delayedAckMax(duration(jiffies: Int32(j)))])
        case TCP_MD5SIG, TCP_MD5SIG_EXT:
            // struct tcp_md5sig is 216 bytes; a whole one asks for signatures this stack
            // cannot make.
            return fail(v.optlen < 216 ? EINVAL : EOPNOTSUPP)
        default:
            return fail(ENOPROTOOPT)   // TCP_AO_* (this kernel has none either) and unknown names
        }
    }
}
