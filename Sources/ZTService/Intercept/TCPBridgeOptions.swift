import CShims
import CZTRPC
import NetStack
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// Socket options of intercepted TCP sockets: GETSOCKOPT/SETSOCKOPT and the options that came
// with the creating request, answered by SocketOptionMap and applied to the stack.
extension TCPBridge {
    /// The socket's state as SocketOptionMap needs it.
    func optionContext(_ call: RPCCall, _ c: Connection) -> OptionContext {
        var ctx = OptionContext(isTCP: true)
        let info = c.handle.flatMap { stack?.tcp.info($0) } ?? (c.phase == .closed ? c.closedInfo : nil)
        ctx.tcpInfo = info
        switch c.phase {
        case .listening: ctx.state = .listen
        case .connecting: ctx.state = info?.state ?? .synSent
        case .connected, .draining, .closing: ctx.state = info?.state ?? .closed
        case .unbound, .bound, .closed: ctx.state = .closed
        }
        if let cfg = stack?.tcp.config { ctx.tcpConfig = cfg }
        // SO_RCVBUF/SO_SNDBUF the app did not set: what Linux reports, not ztapd's rings (larger,
        // and sized on their own): tcp_rmem[1] (OptionContext's default) and, once established,
        // the send buffer tcp_sndbuf_expand gives the connection.
        if let i = info, ![.listen, .synSent, .synReceived].contains(i.state), i.mss > 0 {
            ctx.defaultSendBuffer = Self.linuxSendBuffer(i)
        }
        ctx.local = c.local
        ctx.peer = c.phase == .listening ? nil : c.remote
        ctx.mtu = stack.map { s in c.remote.map { $0.address.isV4 ? s.mtu : s.pathMTU6(to: $0.address) } ?? s.mtu }
        ctx.family = c.family
        ctx.v6Only = c.v6Only
        ctx.interfaceLookup = { [optionEnv] in optionEnv.interface }
        ctx.cookie = c.options.cookie
        ctx.clockMs = OptionEnvironment.clockMs()
        ctx.capable = OptionEnvironment.capabilities(ofProcess: call.peer.pid)
        ctx.callerHasFD = OptionEnvironment.hasFD(ofProcess: call.peer.pid)
        ctx.tcpRmemMax = OptionEnvironment.tcpRmemMax
        ctx.somaxconn = OptionEnvironment.somaxconn
        return ctx
    }

    /// Linux's sk_sndbuf of an established connection (tcp_sndbuf_expand): room for twice the
    /// congestion window (at least TCP_INIT_CWND segments) of worst-case skbs, each a power of two
    /// holding the peer's MSS, MAX_TCP_HEADER and skb_shared_info, plus the sk_buff; at least
    /// tcp_wmem[1], at most tcp_wmem[2]. (BBR's factor would be 3: NetStack has only Reno and
    /// CUBIC, factor 2.)
    static func linuxSendBuffer(_ i: TCPSocketInfo) -> Int {
        let mssClamp = i.mss + (i.timestamps ? 12 : 0)       // the peer's MSS option
        var perMss = 1
        while perMss < mssClamp + 256 + 320 { perMss <<= 1 }  // MAX_TCP_HEADER, skb_shared_info
        perMss += 256                                         // sizeof(struct sk_buff), aligned
        let segments = max(10, i.mss > 0 ? i.cwnd / i.mss : 0, 4)   // reordering + 1
        return min(max(2 * segments * perMss, 16384), 4 << 20)
    }

    func getsockopt(_ call: RPCCall, _ c: Connection, _ request: ztrpc_sockopt) -> RPCOutcome {
        let so = request
        if so.level == SOL_SOCKET && so.name == SO_ERROR {
            // Never waits: 0 while a connect is pending, as on Linux.
            let e = c.pendingError
            c.pendingError = 0
            return .ok(.opt(level: so.level, name: so.name, value: .int(e)))
        }
        if c.options.cookie == 0 { c.options.cookie = optionEnv.nextCookie() }
        var ctx = optionContext(call, c)
        if so.level == SOL_SOCKET && so.name == SocketOptionMap.SO_NETNS_COOKIE, let d = c.data {
            ctx.netnsCookie = OptionEnvironment.netnsCookie(of: d.fd)
        }
        switch SocketOptionMap.get(level: so.level, name: so.name, len: Int(so.optlen), options: c.options, context: ctx) {
        case .success(let v): return .ok(.opt(level: so.level, name: so.name, value: .bytes(v)))
        case .failure(let e): return .fail(e.rawValue, .none)
        }
    }

    func setsockopt(_ call: RPCCall, _ c: Connection, _ r: SocketOptionRecord) -> RPCOutcome {
        if r.level == ZTRPC_SOL_ZTAP && r.name == ZTRPC_ZT_SHUTDOWN {
            // The app is about to shut its end down for reading (its shutdown itself is native).
            guard r.optlen >= 4 else { return .fail(EINVAL, .none) }
            if Int(SocketOptionMap.Value(r.value, r.optlen).int) & Int(ZTRPC_SHUT_RD) != 0 { c.appShutRead = true }
            return .ok(.none)
        }
        if r.level == Int32(IPPROTO_TCP) && SocketOptionMap.isToggle(r.name) {
            // Set around every response by some servers: nothing of the socket's state is read
            // (no option context, which costs more than applying them) and nothing else changes
            // (rings, port options), so they skip the general path below and its copies.
            guard r.optlen >= 4 else { return .fail(EINVAL, .none) }
            if r.name != SocketOptionMap.TCP_QUICKACK, case .connected = c.phase,
               oneWayBatch == 0 || c.pumpedInBatch != oneWayBatch {
                // What the app wrote before this call is already in its socket: take it first,
                // so those bytes go out under the old setting, as on Linux (where write() had
                // queued them before setsockopt ran). Once per one-way batch (`oneWayBatch`).
                c.pumpedInBatch = oneWayBatch
                pumpIn(c)
            }
            let effect = SocketOptionMap.toggle(r.name, SocketOptionMap.Value(r.value, r.optlen).int, &c.options)
            if let h = c.handle, let stack { try? stack.tcp.setOption(h, effect, now: Self.now()) }
            return .ok(.none)
        }
        let before = c.options
        let ctx = optionContext(call, c)
        switch SocketOptionMap.set(level: r.level, name: r.name, value: r.value, optlen: r.optlen,
                                   options: &c.options, context: ctx) {
        case .failure(let e):
            return .fail(e.rawValue, .none)
        case .success(let effects):
            // Bigger rings on a live connection must fit its owner's memory budget.
            if c.handle != nil, let e = chargeRings(c) {
                c.options = before
                return .fail(e, .none)
            }
            if let b = c.binding { stack?.ports.setOptions(b, c.portOptions) }
            if let h = c.handle, let stack {
                // A buffer that can no longer change (data in it) has no visible effect, as a
                // late SO_RCVBUF on Linux: a refusal is not the app's error.
                for e in effects { try? stack.tcp.setOption(h, e, now: Self.now()) }
            }
            return .ok(.none)
        }
    }

    /// A socket bound (SO_BINDTODEVICE/SO_BINDTOIFINDEX) to an interface other than the
    /// network's cannot reach it: ENODEV if there is no such interface, as Linux says at
    /// connect, else ENETUNREACH (Linux would send through that interface instead).
    func boundElsewhere(_ c: Connection) -> Int32? {
        let i = c.options.boundIndex
        guard i != 0, i != optionEnv.interface?.index else { return nil }
        var buf = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        return if_indextoname(UInt32(bitPattern: i), &buf) == nil ? ENODEV : ENETUNREACH
    }

    /// Options the app set on its kernel socket before interception (beyond ztrpc_sockopts),
    /// applied as SETSOCKOPTs would be; the stack socket made next gets them all. One the map
    /// refuses (the kernel had accepted it, e.g. a congestion control this stack lacks) is left
    /// out, as the app cannot be told any more.
    func applyPreOptions(_ call: RPCCall, _ c: Connection, _ records: [SocketOptionRecord]) {
        for r in records {
            if case .failure(let e) = SocketOptionMap.set(level: r.level, name: r.name, value: r.value, optlen: r.optlen,
                                                          options: &c.options, context: optionContext(call, c)) {
                logger.debug("option set before interception not applied", metadata: [
                    "network": "\(network)", "level": "\(r.level)", "name": "\(r.name)", "errno": "\(e.rawValue)"])
            }
        }
    }
}

extension SocketOptions {
    /// What an accepted connection starts with: the listener's options (Linux clones the
    /// socket; the probe's "inherit" cases check which), without its accept-queue settings and
    /// with a cookie of its own.
    var inheritedByAccepted: SocketOptions {
        var o = self
        o.cookie = 0
        o.deferAcceptRetransmits = 0
        o.fastOpen = 0
        // Not cloned either: IP options (a passive socket gets the SYN's), the priority, and
        // delayed-ACK mode.
        o.ipOptions = []
        o.priority = 0
        o[.pingpong] = false
        // Linux sets a passive socket's multicast TTL from the SYN's TTL; 64 is what peers send.
        o.multicastTTL = 64
        return o
    }
}
