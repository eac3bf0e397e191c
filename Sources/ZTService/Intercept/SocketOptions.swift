import CZTRPC
import NetStack

/// What an app set on an intercepted socket, as Linux keeps it: the values getsockopt reads
/// back (defaults as a fresh Linux socket has them) and, through `tcpOptions`, the settings the
/// stack acts on. Pure data; `SocketOptionMap` is the Linux-facing logic.
struct SocketOptions: Equatable {
    /// On/off options without more state, one bit each (Linux keeps most as socket flags too).
    enum Flag: Int, CaseIterable {
        // SOL_SOCKET
        case reuseAddr, reusePort, keepAlive, debug, dontRoute, broadcast, oobInline, noCheck, rxqOverflow
        case wifiStatus, noFCS, lockFilter, selectErrQueue, zeroCopy, preferBusyPoll, rcvMark, rcvPriority
        case lingerOn, rcvTimestamp, rcvTimestampNS, timestampNew
        // IPPROTO_IP
        case recvOpts, retOpts, pktInfo, recvErr, recvTTL, recvTOS, freeBind, passSec, transparent
        case recvOrigDstAddr, checksum, bindAddressNoPort, recvFragSize, recvErrRFC4884, multicastLoop
        case multicastAll, hdrIncl, nodefrag
        // IPPROTO_TCP
        case noDelay, cork, thinLinearTimeouts, pingpong, inq
        // IPPROTO_UDP
        case udpCork, udpNoCheck6Tx, udpNoCheck6Rx, udpGRO
    }

    private(set) var flags: UInt64 = 1 << UInt64(Flag.multicastLoop.rawValue) | 1 << UInt64(Flag.multicastAll.rawValue)

    subscript(_ f: Flag) -> Bool {
        get { flags & (1 << UInt64(f.rawValue)) != 0 }
        set { if newValue { flags |= 1 << UInt64(f.rawValue) } else { flags &= ~(1 << UInt64(f.rawValue)) } }
    }

    // SOL_SOCKET
    /// Kept while SO_LINGER is off, as Linux keeps sk_lingertime.
    var lingerSecs: Int32 = 0
    /// sk_sndbuf / sk_rcvbuf once set (doubled like Linux); nil = the default.
    var sndbuf: Int32?
    var rcvbuf: Int32?
    /// SO_BUF_LOCK bits (SOCK_SNDBUF_LOCK 1, SOCK_RCVBUF_LOCK 2); SO_SNDBUF/SO_RCVBUF set them.
    var bufLocks: Int32 = 0
    var priority: Int32 = 0
    var mark: UInt32 = 0
    var peekOffset: Int32 = -1
    var busyPoll: Int32 = 0
    var busyPollBudget: Int32 = 0
    var maxPacingRate: UInt64 = .max
    var incomingCPU: Int32 = -1
    var timestamping: UInt32 = 0
    var bindPHC: Int32 = 0
    var txTime: (clockid: Int32, flags: UInt32)?
    var txRehash: Int32 = 1
    /// SO_BINDTODEVICE / SO_BINDTOIFINDEX: the interface index bound to (0: none). Linux takes
    /// any index for SO_BINDTOIFINDEX; only the network's own lets the socket reach anything.
    var boundIndex: Int32 = 0
    /// SO_RCVLOWAT as Linux keeps it (the library also applies it to the app's fd).
    var rcvLowat: Int32 = 1

    // IPPROTO_IP
    var tos: UInt8 = 0
    /// -1 = the default (64).
    var ttl: Int32 = -1
    var mtuDiscover: Int32 = 1   // IP_PMTUDISC_WANT
    var minTTL: Int32 = 0
    var multicastTTL: Int32 = 1
    var multicastInterface: UInt32 = 0
    var unicastInterface: Int32 = 0
    var localPortRange: UInt32 = 0
    var ipOptions: [UInt8] = []

    // IPPROTO_TCP
    var keepIdle: Int32?
    var keepIntvl: Int32?
    var keepCnt: Int32?
    var synCount: Int32 = 0           // 0 = the stack's default
    /// Linux's tp->linger2 in seconds: 0 = the default, -1 = reset at once.
    var linger2: Int32 = 0
    var deferAcceptRetransmits: UInt8 = 0
    var windowClamp: Int32 = 0
    var userMss: Int32 = 0
    var congestion: CongestionControl?
    var userTimeout: UInt32 = 0
    /// 0 = no limit (Linux's default sysctl is UINT_MAX).
    var notSentLowWater: UInt32 = 0
    var saveSyn: Int32 = 0
    var fastOpen: Int32 = 0
    var fastOpenConnect: Int32 = 0
    var fastOpenNoCookie: Int32 = 0
    var fastOpenKey: [UInt8] = []
    var txDelay: Int32 = 0
    /// RTO bounds and the delayed-ACK cap, in jiffies as Linux keeps them (nil = the default).
    var rtoMaxJiffies: Int32?
    var rtoMinJiffies: Int32?
    var delackMaxJiffies: Int32?

    // IPPROTO_UDP
    var udpEncap: Int32 = 0
    var udpSegment: Int32 = 0

    /// SO_COOKIE, given on first use (not an option: left out of ==).
    var cookie: UInt64 = 0

    init() {}

    static func == (a: SocketOptions, b: SocketOptions) -> Bool {
        a.flags == b.flags && a.lingerSecs == b.lingerSecs && a.sndbuf == b.sndbuf && a.rcvbuf == b.rcvbuf
            && a.bufLocks == b.bufLocks && a.priority == b.priority && a.mark == b.mark && a.peekOffset == b.peekOffset
            && a.busyPoll == b.busyPoll && a.busyPollBudget == b.busyPollBudget && a.maxPacingRate == b.maxPacingRate
            && a.incomingCPU == b.incomingCPU && a.timestamping == b.timestamping && a.bindPHC == b.bindPHC
            && a.txTime?.clockid == b.txTime?.clockid && a.txTime?.flags == b.txTime?.flags && a.txRehash == b.txRehash
            && a.boundIndex == b.boundIndex && a.rcvLowat == b.rcvLowat
            && a.tos == b.tos && a.ttl == b.ttl && a.mtuDiscover == b.mtuDiscover && a.minTTL == b.minTTL
            && a.multicastTTL == b.multicastTTL && a.multicastInterface == b.multicastInterface
            && a.unicastInterface == b.unicastInterface && a.localPortRange == b.localPortRange
            && a.ipOptions == b.ipOptions && a.keepIdle == b.keepIdle && a.keepIntvl == b.keepIntvl
            && a.keepCnt == b.keepCnt && a.synCount == b.synCount && a.linger2 == b.linger2
            && a.deferAcceptRetransmits == b.deferAcceptRetransmits && a.windowClamp == b.windowClamp
            && a.userMss == b.userMss && a.congestion == b.congestion && a.userTimeout == b.userTimeout
            && a.notSentLowWater == b.notSentLowWater && a.saveSyn == b.saveSyn && a.fastOpen == b.fastOpen
            && a.fastOpenConnect == b.fastOpenConnect && a.fastOpenNoCookie == b.fastOpenNoCookie
            && a.fastOpenKey == b.fastOpenKey && a.txDelay == b.txDelay && a.rtoMaxJiffies == b.rtoMaxJiffies
            && a.rtoMinJiffies == b.rtoMinJiffies && a.delackMaxJiffies == b.delackMaxJiffies
            && a.udpEncap == b.udpEncap && a.udpSegment == b.udpSegment
    }

    // The fields older code reads by name.
    var reuseAddr: Bool { get { self[.reuseAddr] } set { self[.reuseAddr] = newValue } }
    var reusePort: Bool { get { self[.reusePort] } set { self[.reusePort] = newValue } }
    var keepAlive: Bool { get { self[.keepAlive] } set { self[.keepAlive] = newValue } }
    var noDelay: Bool { get { self[.noDelay] } set { self[.noDelay] = newValue } }

    /// Options the app set on its kernel socket before it was intercepted (the fixed part of
    /// the creating request; the rest arrive as ztrpc_sockopt records, see `SocketOptionMap`).
    init(_ o: ztrpc_sockopts) {
        let m = o.mask
        if m & ZTRPC_OPT_REUSEADDR != 0 { self[.reuseAddr] = o.bools & ZTRPC_OPT_REUSEADDR != 0 }
        if m & ZTRPC_OPT_REUSEPORT != 0 { self[.reusePort] = o.bools & ZTRPC_OPT_REUSEPORT != 0 }
        if m & ZTRPC_OPT_KEEPALIVE != 0 { self[.keepAlive] = o.bools & ZTRPC_OPT_KEEPALIVE != 0 }
        if m & ZTRPC_OPT_NODELAY != 0 { self[.noDelay] = o.bools & ZTRPC_OPT_NODELAY != 0 }
        if m & ZTRPC_OPT_LINGER != 0 {
            self[.lingerOn] = o.linger_onoff != 0
            if o.linger_onoff != 0 { lingerSecs = o.linger_secs }
        }
        if m & ZTRPC_OPT_RCVBUF != 0 {
            rcvbuf = SocketOptionMap.rcvbufValue(o.rcvbuf, max: SocketOptionMap.rmemMax)
            bufLocks |= SocketOptionMap.rcvbufLock
        }
        if m & ZTRPC_OPT_SNDBUF != 0 {
            sndbuf = SocketOptionMap.sndbufValue(o.sndbuf, max: SocketOptionMap.wmemMax)
            bufLocks |= SocketOptionMap.sndbufLock
        }
        if m & ZTRPC_OPT_KEEPIDLE != 0, (1...32767).contains(o.keepidle) { keepIdle = o.keepidle }
        if m & ZTRPC_OPT_KEEPINTVL != 0, (1...32767).contains(o.keepintvl) { keepIntvl = o.keepintvl }
        if m & ZTRPC_OPT_KEEPCNT != 0, (1...127).contains(o.keepcnt) { keepCnt = o.keepcnt }
    }

    /// What Linux resets when the socket connects: delayed-ACK ("pingpong") mode.
    mutating func connected() { self[.pingpong] = false }

    /// SO_LINGER {1, 0}: close resets instead of a FIN.
    var abortsOnClose: Bool { self[.lingerOn] && lingerSecs == 0 }

    /// The stack's ring size for a Linux buffer value (which is twice what the app asked for).
    static func ringSize(_ skbuf: Int32) -> Int { min(max(Int(skbuf) / 2, 4096), 16 << 20) }

    /// IP_TTL / IP_TOS as the IPv4 header carries them.
    var ipSendOptions: IPv4SendOptions { IPv4SendOptions(timeToLive: ttl < 0 ? 64 : UInt8(ttl), typeOfService: tos) }

    /// Every stack setting these options make, for a new stack socket (connect, listen).
    var tcpOptions: [TCPOption] {
        var out: [TCPOption] = [.noDelay(self[.noDelay]), .keepAlive(self[.keepAlive])]
        out.append(.linger(self[.lingerOn] ? .seconds(UInt64(max(lingerSecs, 0))) : nil))
        if let r = rcvbuf { out.append(.receiveBufferSize(Self.ringSize(r))) }
        if let s = sndbuf { out.append(.sendBufferSize(Self.ringSize(s))) }
        if let c = congestion { out.append(.congestionControl(c)) }
        if let v = keepIdle { out.append(.keepAliveIdle(.seconds(UInt64(v)))) }
        if let v = keepIntvl { out.append(.keepAliveInterval(.seconds(UInt64(v)))) }
        if let v = keepCnt { out.append(.keepAliveCount(Int(v))) }
        if self[.cork] { out.append(.cork(true)) }
        if userTimeout > 0 { out.append(.userTimeout(.milliseconds(UInt64(userTimeout)))) }
        if notSentLowWater > 0 { out.append(.notSentLowWater(Int(notSentLowWater))) }
        if deferAcceptRetransmits > 0 { out.append(.deferAccept(retransmissions: Int(deferAcceptRetransmits))) }
        if self[.pingpong] { out.append(.quickAck(false)) }
        if windowClamp > 0 { out.append(.windowClamp(Int(windowClamp))) }
        if userMss > 0 { out.append(.maxSegment(Int(userMss))) }
        if ttl >= 0 { out.append(.timeToLive(UInt8(ttl))) }
        if tos != 0 { out.append(.typeOfService(tos)) }
        if synCount > 0 { out.append(.synRetries(Int(synCount))) }
        if linger2 != 0 { out.append(.finWait2Timeout(linger2 < 0 ? nil : .seconds(UInt64(linger2)))) }
        if let j = rtoMinJiffies { out.append(.minRTO(SocketOptionMap.duration(jiffies: j))) }
        if let j = rtoMaxJiffies { out.append(.maxRTO(SocketOptionMap.duration(jiffies: j))) }
        if let j = delackMaxJiffies { out.append(.delayedAckMax(SocketOptionMap.duration(jiffies: j))) }
        return out
    }
}
