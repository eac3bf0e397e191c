import CShims
import CZTRPC
import NetStack
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// SocketOptionMap — getsockopt/setsockopt of an intercepted socket answered as Linux 6.18 answers
// them: the value bytes (with Linux's length rules per level), the errnos (unknown names,
// short optlen, out-of-range values, missing capabilities), and the stack settings an option
// makes. Pure: the socket's state comes in an `OptionContext`, its recorded values in
// `SocketOptions`. This file has the entry points, SOL_SOCKET and the shared helpers;
// SocketOptionMapIP.swift has IPPROTO_IP and IPPROTO_UDP, SocketOptionMapTCP.swift IPPROTO_TCP,
// TCPInfo.swift struct tcp_info.
//
// Every answer was checked against a kernel socket (Tests/integration/sockopt_probe.py, run by
// test_sockopts.py on a kernel socket and under `ztctl run`). Options this stack cannot honour
// answer like a Linux kernel built without that feature, or are recorded and read back without
// behaviour; docs/INTERCEPT.md lists which.

/// A getsockopt answer before it is put on the wire.
enum OptionValue: Equatable {
    case int(Int32)
    case pair(Int32, Int32)
    case bytes([UInt8])

    /// The bytes getsockopt copies out (little-endian ints, as the kernel's on this host).
    var bytes: [UInt8] {
        switch self {
        case .int(let v): return SocketOptionMap.le(v)
        case .pair(let a, let b): return SocketOptionMap.le(a) + SocketOptionMap.le(b)
        case .bytes(let b): return b
        }
    }
}

/// What `SocketOptionMap` needs to know about the socket besides its recorded options.
struct OptionContext {
    enum Capability { case netAdmin, netRaw }

    var isTCP: Bool
    /// The socket's TCP state as Linux names it (`.closed` before connect/listen, and for UDP).
    var state: TCPState = .closed
    /// The stack connection's numbers, if it has one.
    var tcpInfo: TCPSocketInfo?
    /// The stack's own defaults (keepalive timing, SYN retries, FIN timeout, RTO bounds).
    var tcpConfig = TCPConfig()
    /// Linux values of SO_RCVBUF / SO_SNDBUF before the app sets them.
    var defaultReceiveBuffer = 131072
    var defaultSendBuffer = 16384
    var local: IPEndpoint?
    var peer: IPEndpoint?
    /// The interface MTU towards the peer (IP_MTU of a connected UDP socket).
    var mtu: Int?
    /// The network's interface (SO_BINDTODEVICE / SO_BINDTOIFINDEX accept it, nothing else),
    /// looked up only by the options that need it (an index lookup costs ztapd three system
    /// calls, and a server may set TCP_CORK twice per response).
    var interfaceLookup: () -> (name: String, index: Int32)? = { nil }
    var interface: (name: String, index: Int32)? {
        get { interfaceLookup() }
        set { interfaceLookup = { newValue } }
    }
    /// SO_COOKIE and SO_NETNS_COOKIE.
    var cookie: UInt64 = 1
    var netnsCookie: UInt64 = 1
    /// The stack's clock in milliseconds (TCP_TIMESTAMP).
    var clockMs: UInt32 = 0
    /// Whether the calling process has file descriptor `n` (nil: cannot tell), for the options
    /// that take one (SO_ATTACH_BPF: EBADF for none, EINVAL for one that is no BPF program).
    var callerHasFD: (Int32) -> Bool? = { _ in nil }
    /// net.ipv4.tcp_rmem[2] (TCP's SO_RCVLOWAT cap) and net.core.somaxconn.
    var tcpRmemMax: Int32 = 6291456
    var somaxconn: Int32 = 4096
    /// Whether the calling process has a capability (asked only for privileged requests).
    var capable: (Capability) -> Bool = { _ in true }
    /// The app's socket family (AF_INET or AF_INET6) and its IPV6_V6ONLY.
    var family: Int32 = AF_INET
    var v6Only = false

    init(isTCP: Bool) { self.isTCP = isTCP }
}

enum SocketOptionMap {
    // Linux constants (include/uapi/asm-generic/socket.h, in.h, tcp.h, udp.h) that Glibc does
    // not export or exports under other types.
    static let SO_PASSSEC: Int32 = 34, SO_TIMESTAMPNS_OLD: Int32 = 35, SO_MARK: Int32 = 36
    static let SO_TIMESTAMPING_OLD: Int32 = 37, SO_RXQ_OVFL: Int32 = 40, SO_WIFI_STATUS: Int32 = 41
    static let SO_PEEK_OFF: Int32 = 42, SO_NOFCS: Int32 = 43, SO_LOCK_FILTER: Int32 = 44
    static let SO_SELECT_ERR_QUEUE: Int32 = 45, SO_BUSY_POLL: Int32 = 46, SO_MAX_PACING_RATE: Int32 = 47
    static let SO_BPF_EXTENSIONS: Int32 = 48, SO_INCOMING_CPU: Int32 = 49, SO_ATTACH_BPF: Int32 = 50
    static let SO_ATTACH_REUSEPORT_CBPF: Int32 = 51, SO_ATTACH_REUSEPORT_EBPF: Int32 = 52
    static let SO_CNX_ADVICE: Int32 = 53, SO_MEMINFO: Int32 = 55, SO_INCOMING_NAPI_ID: Int32 = 56
    static let SO_COOKIE: Int32 = 57, SO_PEERGROUPS: Int32 = 59, SO_ZEROCOPY: Int32 = 60, SO_TXTIME: Int32 = 61
    static let SO_BINDTOIFINDEX: Int32 = 62, SO_TIMESTAMP_NEW: Int32 = 63, SO_TIMESTAMPNS_NEW: Int32 = 64
    static let SO_TIMESTAMPING_NEW: Int32 = 65, SO_RCVTIMEO_NEW: Int32 = 66, SO_SNDTIMEO_NEW: Int32 = 67
    static let SO_DETACH_REUSEPORT_BPF: Int32 = 68, SO_PREFER_BUSY_POLL: Int32 = 69
    static let SO_BUSY_POLL_BUDGET: Int32 = 70, SO_NETNS_COOKIE: Int32 = 71, SO_BUF_LOCK: Int32 = 72
    static let SO_RESERVE_MEM: Int32 = 73, SO_TXREHASH: Int32 = 74, SO_RCVMARK: Int32 = 75
    static let SO_PASSPIDFD: Int32 = 76, SO_PEERPIDFD: Int32 = 77, SO_DEVMEM_DONTNEED: Int32 = 80
    static let SO_RCVPRIORITY: Int32 = 82, SO_PASSRIGHTS: Int32 = 83
    static let SO_BSDCOMPAT: Int32 = 14, SO_PEERNAME: Int32 = 28, SO_TIMESTAMP_OLD: Int32 = 29
    static let SO_ATTACH_FILTER: Int32 = 26, SO_DETACH_FILTER: Int32 = 27, SO_NO_CHECK: Int32 = 11
    static let SO_SNDBUFFORCE: Int32 = 32, SO_RCVBUFFORCE: Int32 = 33
    static let SO_BROADCAST: Int32 = 6

    /// Kernel constants of this machine's kind (Linux 6.18, x86-64, HZ=250): the smallest socket
    /// buffers and the jiffy that TCP's timer options are rounded to.
    static let minSndbuf: Int32 = 4608, minRcvbuf: Int32 = 2304
    static let hz: Int64 = 250
    static let sndbufLock: Int32 = 1, rcvbufLock: Int32 = 2

    /// net.core sysctls, read once (ztapd shares the apps' network namespace).
    static let wmemMax = sysctl("/proc/sys/net/core/wmem_max") ?? 212992
    static let rmemMax = sysctl("/proc/sys/net/core/rmem_max") ?? 212992
    static let wmemDefault = sysctl("/proc/sys/net/core/wmem_default") ?? 212992
    static let rmemDefault = sysctl("/proc/sys/net/core/rmem_default") ?? 212992

    static func sysctl(_ path: String) -> Int32? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 64)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 63) }
        guard n > 0 else { return nil }
        return Int32(String(decoding: buf[0..<n].prefix { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }

    // MARK: - Entry points

    /// getsockopt(level, name) with a buffer of `len` bytes: the bytes Linux copies out (their
    /// count is the optlen it reports), or its errno. SO_ERROR is the bridge's.
    static func get(level: Int32, name: Int32, len: Int, options o: SocketOptions,
                    context c: OptionContext) -> Result<[UInt8], Errno> {
        switch level {
        case SOL_SOCKET: return socketGet(name, len: len, o, c)
        case Int32(IPPROTO_TCP) where c.isTCP: return tcpGet(name, len: len, o, c)
        case Int32(IPPROTO_UDP) where !c.isTCP: return udpGet(name, len: len, o, c)
        case Int32(IPPROTO_IP): return ipGet(name, len: len, o, c)
        case Int32(IPPROTO_IPV6) where c.family == AF_INET6: return ipv6Get(name, len: len, o, c)
        default:
            // Another protocol's level falls through to IPv4's getsockopt, which refuses it.
            return .failure(Errno(rawValue: EOPNOTSUPP))
        }
    }

    /// setsockopt(level, name) with the app's `optlen` and its bytes (`value`, at most
    /// ZTRPC_MAX_OPTLEN of them): updates `o` and returns the stack settings to apply, or the
    /// errno Linux gives (then `o` is unchanged).
    static func set(level: Int32, name: Int32, value: [UInt8], optlen: Int, options o: inout SocketOptions,
                    context c: OptionContext) -> Result<[TCPOption], Errno> {
        var n = o
        let r: Result<[TCPOption], Errno>
        switch level {
        case SOL_SOCKET: r = socketSet(name, Value(value, optlen), &n, c)
        case Int32(IPPROTO_TCP) where c.isTCP: r = tcpSet(name, Value(value, optlen), &n, c)
        case Int32(IPPROTO_UDP) where !c.isTCP: r = udpSet(name, Value(value, optlen), &n, c)
        case Int32(IPPROTO_IP): r = ipSet(name, Value(value, optlen), &n, c)
        case Int32(IPPROTO_IPV6) where c.family == AF_INET6: r = ipv6Set(name, Value(value, optlen), &n, c)
        default: r = .failure(Errno(rawValue: ENOPROTOOPT))
        }
        if case .success = r { o = n }
        return r
    }

    // MARK: - Values

    /// The option bytes an app passed: `optlen` of them, of which `bytes` arrived.
    struct Value {
        var bytes: [UInt8]
        var optlen: Int
        init(_ b: [UInt8], _ len: Int) { bytes = b; optlen = len }

        /// The int at the start (zero-padded if fewer bytes arrived).
        var int: Int32 { Int32(bitPattern: u32(at: 0)) }
        func u32(at off: Int) -> UInt32 {
            var v: UInt32 = 0
            for i in 0..<4 where off + i < bytes.count { v |= UInt32(bytes[off + i]) << (8 * UInt32(i)) }
            return v
        }
        func u64(at off: Int) -> UInt64 { UInt64(u32(at: off)) | UInt64(u32(at: off + 4)) << 32 }
        /// A C string of at most `max` bytes (up to the first NUL).
        func string(max: Int) -> String {
            String(decoding: bytes.prefix(Swift.min(max, optlen, bytes.count)).prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    /// An int as SOL_SOCKET, IPPROTO_TCP and IPPROTO_UDP copy it: min(len, 4) bytes.
    static func intBytes(_ v: Int32, len: Int) -> [UInt8] { Array(le(v).prefix(max(len, 0))) }

    static func ok(_ v: Int32, _ len: Int) -> Result<[UInt8], Errno> { .success(intBytes(v, len: len)) }
    static func ok(_ v: Bool, _ len: Int) -> Result<[UInt8], Errno> { .success(intBytes(v ? 1 : 0, len: len)) }
    static func fail<T>(_ e: Int32) -> Result<T, Errno> { .failure(Errno(rawValue: e)) }
    static let done: Result<[TCPOption], Errno> = .success([])

    // MARK: - Jiffies (TCP's timer options are kept in them)

    static func jiffies(usecs: Int64) -> Int64 { (usecs * hz + 999_999) / 1_000_000 }
    static func jiffies(msecs: Int64) -> Int64 { (msecs * hz + 999) / 1000 }
    static func usecs(jiffies j: Int64) -> Int64 { j * (1_000_000 / hz) }
    static func msecs(jiffies j: Int64) -> Int64 { j * (1000 / hz) }
    static func duration(jiffies j: Int32) -> Duration { .microseconds(UInt64(max(usecs(jiffies: Int64(j)), 0))) }

    // MARK: - Buffers

    /// sk_sndbuf after SO_SNDBUF(v): clamped to wmem_max (as unsigned), doubled, at least the minimum.
    static func sndbufValue(_ v: Int32, max: Int32) -> Int32 {
        let c = min(UInt32(bitPattern: v), UInt32(bitPattern: max))
        return Swift.max(Int32(clamping: min(Int64(c), Int64(Int32.max / 2)) * 2), minSndbuf)
    }

    static func rcvbufValue(_ v: Int32, max: Int32) -> Int32 {
        let c = min(UInt32(bitPattern: v), UInt32(bitPattern: max))
        return Swift.max(Int32(clamping: min(Int64(c), Int64(Int32.max / 2)) * 2), minRcvbuf)
    }

    /// SO_SNDBUFFORCE / SO_RCVBUFFORCE: negative is 0, no sysctl bound.
    static func forcedBuf(_ v: Int32, min lo: Int32) -> Int32 { Swift.max(Swift.min(Swift.max(v, 0), Int32.max / 2) * 2, lo) }

    // MARK: - SOL_SOCKET

    static func socketGet(_ name: Int32, len: Int, _ o: SocketOptions, _ c: OptionContext) -> Result<[UInt8], Errno> {
        func bytes(_ b: [UInt8]) -> Result<[UInt8], Errno> { .success(Array(b.prefix(max(len, 0)))) }
        switch name {
        case SO_DEBUG: return ok(o[.debug], len)
        case SO_REUSEADDR: return ok(o[.reuseAddr], len)
        case SO_REUSEPORT: return ok(o[.reusePort], len)
        case SO_KEEPALIVE: return ok(o[.keepAlive], len)
        case SO_DONTROUTE: return ok(o[.dontRoute], len)
        case SO_BROADCAST: return ok(o[.broadcast], len)
        case SO_OOBINLINE: return ok(o[.oobInline], len)
        case SO_NO_CHECK: return ok(o[.noCheck], len)
        case SO_RXQ_OVFL: return ok(o[.rxqOverflow], len)
        case SO_WIFI_STATUS: return ok(o[.wifiStatus], len)
        case SO_NOFCS: return ok(o[.noFCS], len)
        case SO_LOCK_FILTER: return ok(o[.lockFilter], len)
        case SO_SELECT_ERR_QUEUE: return ok(o[.selectErrQueue], len)
        case SO_ZEROCOPY: return ok(o[.zeroCopy], len)
        case SO_PREFER_BUSY_POLL: return ok(o[.preferBusyPoll], len)
        case SO_RCVMARK: return ok(o[.rcvMark], len)
        case SO_RCVPRIORITY: return ok(o[.rcvPriority], len)
        case SO_TYPE: return ok(c.isTCP ? Int32(SOCK_STREAM.rawValue) : Int32(SOCK_DGRAM.rawValue), len)
        case SO_PROTOCOL: return ok(c.isTCP ? Int32(IPPROTO_TCP) : Int32(IPPROTO_UDP), len)
        case SO_DOMAIN: return ok(c.family, len)
        case SO_ACCEPTCONN: return ok(c.state == .listen, len)
        case SO_ERROR: return ok(Int32(0), len)
        case SO_SNDBUF: return ok(o.sndbuf ?? Int32(clamping: c.defaultSendBuffer), len)
        case SO_RCVBUF: return ok(o.rcvbuf ?? Int32(clamping: c.defaultReceiveBuffer), len)
        case SO_PRIORITY: return ok(o.priority, len)
        case SO_MARK: return ok(Int32(bitPattern: o.mark), len)
        case SO_PEEK_OFF: return ok(o.peekOffset, len)
        case SO_BUSY_POLL: return ok(o.busyPoll, len)
        case SO_INCOMING_CPU: return ok(o.incomingCPU, len)
        case SO_BUF_LOCK: return ok(o.bufLocks, len)
        case SO_RESERVE_MEM, SO_INCOMING_NAPI_ID, SO_BSDCOMPAT: return ok(Int32(0), len)
        case SO_BPF_EXTENSIONS: return ok(Int32(64), len)   // SKF_AD_MAX
        case SO_RCVLOWAT: return ok(o.rcvLowat, len)
        case SO_SNDLOWAT: return ok(Int32(1), len)
        case SO_TXREHASH:
            return c.isTCP ? ok(o.txRehash, len) : fail(EOPNOTSUPP)
        case SO_LINGER:
            return bytes(le(Int32(o[.lingerOn] ? 1 : 0)) + le(o.lingerSecs))
        case SO_PEERCRED:
            // An AF_INET socket has no peer credentials: pid 0, uid and gid -1.
            return bytes(le(Int32(0)) + le(Int32(-1)) + le(Int32(-1)))
        case SO_RCVTIMEO, SO_SNDTIMEO, SO_RCVTIMEO_NEW, SO_SNDTIMEO_NEW:
            return bytes([UInt8](repeating: 0, count: 16))   // native in the library
        case SO_PASSCRED, SO_PASSSEC, SO_PASSPIDFD, SO_PASSRIGHTS:
            return fail(EOPNOTSUPP)
        case SO_PEERGROUPS, SO_PEERPIDFD:
            return fail(ENODATA)
        case SO_BINDTODEVICE:
            guard o.boundIndex != 0 else { return .success([]) }
            guard len >= Int(IFNAMSIZ) else { return fail(EINVAL) }
            guard let name = interfaceName(o.boundIndex, c) else { return fail(ENXIO) }
            return .success(Array(name.utf8) + [0])
        case SO_BINDTOIFINDEX:
            return ok(o.boundIndex, len)
        case SO_ATTACH_FILTER:
            return .success([])   // SO_GET_FILTER: no filter
        case SO_PEERNAME:
            guard let p = c.peer else { return fail(ENOTCONN) }
            let sa = c.family == AF_INET6 ? sockaddr6(p) : sockaddr(p)
            guard len <= sa.count else { return fail(EINVAL) }
            return bytes(sa)
        case SO_TIMESTAMP_OLD:
            return ok(o[.rcvTimestamp] && !o[.timestampNew] && !o[.rcvTimestampNS], len)
        case SO_TIMESTAMPNS_OLD:
            return ok(o[.rcvTimestampNS] && !o[.timestampNew], len)
        case SO_TIMESTAMP_NEW:
            return ok(o[.rcvTimestamp] && o[.timestampNew], len)
        case SO_TIMESTAMPNS_NEW:
            return ok(o[.rcvTimestampNS] && o[.timestampNew], len)
        case SO_TIMESTAMPING_OLD, SO_TIMESTAMPING_NEW:
            return bytes(le(o.timestamping) + le(o.bindPHC))
        case SO_MAX_PACING_RATE:
            if len >= 8 { return .success(le(o.maxPacingRate)) }
            return bytes(le(UInt32(truncatingIfNeeded: min(o.maxPacingRate, UInt64(UInt32.max)))))
        case SO_MEMINFO:
            return bytes(meminfo(o, c))
        case SO_COOKIE:
            guard len >= 8 else { return fail(EINVAL) }
            return .success(le(c.cookie))
        case SO_NETNS_COOKIE:
            guard len == 8 else { return fail(EINVAL) }
            return .success(le(c.netnsCookie))
        case SO_TXTIME:
            return bytes(le(o.txTime?.clockid ?? 0) + le(o.txTime?.flags ?? 0))
        default:
            return fail(ENOPROTOOPT)
        }
    }

    static func socketSet(_ name: Int32, _ v: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        if name == SO_BINDTODEVICE { return bindToDevice(v, &o, c) }
        guard v.optlen >= 4 else { return fail(EINVAL) }
        let val = v.int
        let on = val != 0
        func flag(_ f: SocketOptions.Flag) -> Result<[TCPOption], Errno> { o[f] = on; return done }
        switch name {
        case SO_DEBUG:
            guard !on || c.capable(.netAdmin) else { return fail(EACCES) }
            return flag(.debug)
        case SO_REUSEADDR: return flag(.reuseAddr)
        case SO_REUSEPORT: return flag(.reusePort)
        case SO_DONTROUTE: return flag(.dontRoute)
        case SO_BROADCAST: return flag(.broadcast)
        case SO_OOBINLINE: return flag(.oobInline)
        case SO_NO_CHECK: return flag(.noCheck)
        case SO_RXQ_OVFL: return flag(.rxqOverflow)
        case SO_WIFI_STATUS: return flag(.wifiStatus)
        case SO_NOFCS: return flag(.noFCS)
        case SO_SELECT_ERR_QUEUE: return flag(.selectErrQueue)
        case SO_RCVMARK: return flag(.rcvMark)
        case SO_RCVPRIORITY: return flag(.rcvPriority)
        case SO_KEEPALIVE:
            o[.keepAlive] = on
            return .success([.keepAlive(on)])
        case SO_BSDCOMPAT, SO_CNX_ADVICE:
            return done
        case SO_SNDBUF, SO_SNDBUFFORCE:
            if name == SO_SNDBUFFORCE && !c.capable(.netAdmin) { return fail(EPERM) }
            let b = name == SO_SNDBUF ? sndbufValue(val, max: wmemMax) : forcedBuf(val, min: minSndbuf)
            o.sndbuf = b
            o.bufLocks |= sndbufLock
            return .success(c.isTCP ? [.sendBufferSize(SocketOptions.ringSize(b))] : [])
        case SO_RCVBUF, SO_RCVBUFFORCE:
            if name == SO_RCVBUFFORCE && !c.capable(.netAdmin) { return fail(EPERM) }
            let b = name == SO_RCVBUF ? rcvbufValue(val, max: rmemMax) : forcedBuf(val, min: minRcvbuf)
            o.rcvbuf = b
            o.bufLocks |= rcvbufLock
            return .success(c.isTCP ? [.receiveBufferSize(SocketOptions.ringSize(b))] : [])
        case SO_PRIORITY:
            guard (0...6).contains(val) || c.capable(.netRaw) || c.capable(.netAdmin) else { return fail(EPERM) }
            o.priority = val
            return done
        case SO_MARK:
            guard c.capable(.netRaw) || c.capable(.netAdmin) else { return fail(EPERM) }
            o.mark = UInt32(bitPattern: val)
            return done
        case SO_LINGER:
            guard v.optlen >= 8 else { return fail(EINVAL) }
            if val == 0 {
                o[.lingerOn] = false
            } else {
                // Seconds as an unsigned long: a negative value is past MAX_SCHEDULE_TIMEOUT / HZ.
                let secs = Int32(bitPattern: v.u32(at: 4))
                o.lingerSecs = secs < 0 ? lingerForever : secs
                o[.lingerOn] = true
            }
            return .success([.linger(o[.lingerOn] ? .seconds(UInt64(max(o.lingerSecs, 0))) : nil)])
        case SO_LOCK_FILTER:
            guard !(o[.lockFilter] && !on) else { return fail(EPERM) }
            return flag(.lockFilter)
        case SO_TIMESTAMP_OLD, SO_TIMESTAMP_NEW, SO_TIMESTAMPNS_OLD, SO_TIMESTAMPNS_NEW:
            if on {
                o[.timestampNew] = name == SO_TIMESTAMP_NEW || name == SO_TIMESTAMPNS_NEW
                o[.rcvTimestamp] = true
                o[.rcvTimestampNS] = name == SO_TIMESTAMPNS_OLD || name == SO_TIMESTAMPNS_NEW
            } else {
                o[.rcvTimestamp] = false
                o[.rcvTimestampNS] = false
            }
            return done
        case SO_TIMESTAMPING_OLD, SO_TIMESTAMPING_NEW:
            return timestamping(name, v, &o, c)
        case SO_PEEK_OFF:
            o.peekOffset = val < 0 ? -1 : val
            return done
        case SO_BUSY_POLL:
            guard val >= 0 else { return fail(EINVAL) }
            o.busyPoll = val
            return done
        case SO_PREFER_BUSY_POLL:
            guard !on || c.capable(.netAdmin) else { return fail(EPERM) }
            return flag(.preferBusyPoll)
        case SO_BUSY_POLL_BUDGET:
            guard val <= o.busyPollBudget || c.capable(.netAdmin) else { return fail(EPERM) }
            guard (0...Int32(UInt16.max)).contains(val) else { return fail(EINVAL) }
            o.busyPollBudget = val
            return done
        case SO_MAX_PACING_RATE:
            if v.optlen >= 8 {
                o.maxPacingRate = v.u64(at: 0)
            } else {
                o.maxPacingRate = val == -1 ? .max : UInt64(UInt32(bitPattern: val))
            }
            return done
        case SO_INCOMING_CPU:
            o.incomingCPU = val
            return done
        case SO_ZEROCOPY:
            guard val == 0 || val == 1 else { return fail(EINVAL) }
            return flag(.zeroCopy)
        case SO_TXTIME:
            return txTime(v, &o, c)
        case SO_BINDTOIFINDEX:
            return bindToIndex(val, &o, c)
        case SO_BUF_LOCK:
            guard val & ~(sndbufLock | rcvbufLock) == 0 else { return fail(EINVAL) }
            o.bufLocks = val
            return done
        case SO_RESERVE_MEM:
            return fail(val < 0 ? EINVAL : EOPNOTSUPP)   // no memory cgroup accounting here
        case SO_TXREHASH:
            guard c.isTCP else { return fail(EOPNOTSUPP) }
            guard (-1...1).contains(val) else { return fail(EINVAL) }
            o.txRehash = val == -1 ? 1 : val
            return done
        case SO_PASSCRED, SO_PASSSEC, SO_PASSPIDFD, SO_PASSRIGHTS:
            return fail(EOPNOTSUPP)
        case SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF:
            // A classic BPF program lives in the app's memory; we cannot run it. Linux refuses
            // a struct sock_fprog of the wrong size or an empty program with EINVAL.
            return fail(EINVAL)
        case SO_ATTACH_BPF, SO_ATTACH_REUSEPORT_EBPF:
            // An fd the caller has is no socket-filter program here (EINVAL); none is EBADF.
            guard v.optlen == 4 else { return fail(EINVAL) }
            guard val >= 0, c.callerHasFD(val) ?? true else { return fail(EBADF) }
            return fail(EINVAL)
        case SO_DETACH_FILTER:
            return fail(ENOENT)
        case SO_DETACH_REUSEPORT_BPF:
            return fail(o[.reusePort] ? ENOENT : EINVAL)
        case SO_DEVMEM_DONTNEED:
            // A list of struct dmabuf_token (8 bytes each) to free: none of ours is one.
            guard c.isTCP else { return fail(EBADF) }
            guard v.optlen % 8 == 0, v.optlen <= 8 * 128 else { return fail(EINVAL) }
            return done
        case SO_RCVLOWAT:
            // TCP caps it at half the receive buffer (tcp_set_rcvlowat).
            var v = val < 0 ? Int32.max : val
            if c.isTCP { v = min(v, o.bufLocks & rcvbufLock != 0 ? (o.rcvbuf ?? 0) >> 1 : c.tcpRmemMax >> 1) }
            o.rcvLowat = v == 0 ? 1 : v
            return done
        case SO_RCVTIMEO, SO_SNDTIMEO, SO_RCVTIMEO_NEW, SO_SNDTIMEO_NEW:
            // Applied to the app's fd by the library; a struct timeval (16 bytes) is checked here.
            guard v.optlen >= 16 else { return fail(EINVAL) }
            let usec = Int64(bitPattern: v.u64(at: 8))
            guard usec >= 0 && usec < 1_000_000 else { return fail(EDOM) }
            return done
        default:
            return fail(ENOPROTOOPT)
        }
    }

    /// sk_lingertime past MAX_SCHEDULE_TIMEOUT, read back in seconds as an int: LONG_MAX / HZ
    /// truncated, as Linux reports it.
    static let lingerForever = Int32(truncatingIfNeeded: Int64.max / hz)

    private static func bindToDevice(_ v: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        // Linux copies at most IFNAMSIZ-1 bytes; an empty name unbinds.
        let name = v.string(max: Int(IFNAMSIZ) - 1)
        if name.isEmpty {
            o.boundIndex = 0
            return done
        }
        var index: Int32 = 0
        if let i = c.interface, i.name == name {
            index = i.index
        } else {
            let k = if_nametoindex(name)
            guard k > 0 else { return fail(ENODEV) }
            index = Int32(bitPattern: k)
        }
        if o.boundIndex != 0, o.boundIndex != index, !c.capable(.netRaw) { return fail(EPERM) }
        o.boundIndex = index
        return done
    }

    /// The name of interface `index` (the network's, or any the namespace has).
    static func interfaceName(_ index: Int32, _ c: OptionContext) -> String? {
        if let i = c.interface, i.index == index { return i.name }
        var buf = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        guard if_indextoname(UInt32(bitPattern: index), &buf) != nil else { return nil }
        return String(cString: buf)
    }

    private static func bindToIndex(_ index: Int32, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        // Linux checks no device here; connect/bind then fail if it is not there.
        guard index >= 0 else { return fail(EINVAL) }
        if o.boundIndex != 0, index != 0, o.boundIndex != index, !c.capable(.netRaw) { return fail(EPERM) }
        o.boundIndex = index
        return done
    }

    /// SOF_TIMESTAMPING_* bits this kernel knows (SOF_TIMESTAMPING_LAST is TX_COMPLETION).
    static let timestampingMask: UInt32 = (1 << 19) - 1

    private static func timestamping(_ name: Int32, _ v: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        let flags = v.u32(at: 0)
        let phc = v.optlen >= 8 ? Int32(bitPattern: v.u32(at: 4)) : 0
        guard flags & ~timestampingMask == 0 else { return fail(EINVAL) }
        let optID: UInt32 = 1 << 7, tsOnly: UInt32 = 1 << 11, stats: UInt32 = 1 << 12, bindPHC: UInt32 = 1 << 15
        let optIDTCP: UInt32 = 1 << 16
        if flags & optID != 0 && o.timestamping & optID == 0 && c.isTCP && (c.state == .closed || c.state == .listen) {
            return fail(EINVAL)
        }
        if flags & stats != 0 && flags & tsOnly == 0 { return fail(EINVAL) }
        if flags & optIDTCP != 0 && flags & optID == 0 { return fail(EINVAL) }
        if flags & bindPHC != 0 { return fail(EOPNOTSUPP) }   // no PTP clock behind the stack
        o.timestamping = flags
        o.bindPHC = flags & bindPHC != 0 ? phc : 0
        o[.timestampNew] = name == SO_TIMESTAMPING_NEW
        return done
    }

    private static func txTime(_ v: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        guard v.optlen == 8 else { return fail(EINVAL) }
        let clock = Int32(bitPattern: v.u32(at: 0)), flags = v.u32(at: 4)
        guard flags & ~3 == 0 else { return fail(EINVAL) }
        guard clock == CLOCK_MONOTONIC || c.capable(.netAdmin) else { return fail(EPERM) }
        guard [CLOCK_REALTIME, CLOCK_MONOTONIC, 11 /* CLOCK_TAI */].contains(clock) else {
            return fail(EINVAL)
        }
        o.txTime = (clock, flags)
        return done
    }

    /// SO_MEMINFO: SK_MEMINFO_{RMEM_ALLOC, RCVBUF, WMEM_ALLOC, SNDBUF, FWD_ALLOC, WMEM_QUEUED,
    /// OPTMEM, BACKLOG, DROPS} from what the stack holds for the socket.
    private static func meminfo(_ o: SocketOptions, _ c: OptionContext) -> [UInt8] {
        let i = c.tcpInfo
        let v: [UInt32] = [
            UInt32(clamping: i?.receiveQueue ?? 0), UInt32(clamping: o.rcvbuf ?? Int32(clamping: c.defaultReceiveBuffer)),
            UInt32(clamping: i?.bytesInFlight ?? 0), UInt32(clamping: o.sndbuf ?? Int32(clamping: c.defaultSendBuffer)),
            0, UInt32(clamping: i?.sendQueue ?? 0), 0, 0, 0,
        ]
        return v.flatMap { le($0) }
    }

    /// struct sockaddr_in6 for `e` (28 bytes; an IPv4 address as ::ffff:a.b.c.d).
    static func sockaddr6(_ e: IPEndpoint) -> [UInt8] {
        le(UInt16(AF_INET6)) + le(e.port.bigEndian) + le(UInt32(0)) + e.address.bytes + le(UInt32(0))
    }

    /// struct sockaddr_in for `e` (16 bytes).
    static func sockaddr(_ e: IPEndpoint) -> [UInt8] {
        le(UInt16(AF_INET)) + le(e.port.bigEndian) + le(e.address.v4.value.bigEndian) + [UInt8](repeating: 0, count: 8)
    }
}
