import CShims
import NetStack
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// IPPROTO_IP and IPPROTO_UDP options (see SocketOptionMap.swift). IP_TTL and IP_TOS reach the
// stack (the headers sent); the IP_RECV* family, multicast settings and IP_OPTIONS are
// recorded and read back (no ancillary data, no multicast, no IP options on output).
extension SocketOptionMap {
    static let IP_TOS: Int32 = 1, IP_TTL: Int32 = 2, IP_HDRINCL: Int32 = 3, IP_OPTIONS: Int32 = 4
    static let IP_ROUTER_ALERT: Int32 = 5, IP_RECVOPTS: Int32 = 6, IP_RETOPTS: Int32 = 7, IP_PKTINFO: Int32 = 8
    static let IP_PKTOPTIONS: Int32 = 9, IP_MTU_DISCOVER: Int32 = 10, IP_RECVERR: Int32 = 11, IP_RECVTTL: Int32 = 12
    static let IP_RECVTOS: Int32 = 13, IP_MTU: Int32 = 14, IP_FREEBIND: Int32 = 15, IP_IPSEC_POLICY: Int32 = 16
    static let IP_XFRM_POLICY: Int32 = 17, IP_PASSSEC: Int32 = 18, IP_TRANSPARENT: Int32 = 19
    static let IP_RECVORIGDSTADDR: Int32 = 20, IP_MINTTL: Int32 = 21, IP_NODEFRAG: Int32 = 22, IP_CHECKSUM: Int32 = 23
    static let IP_BIND_ADDRESS_NO_PORT: Int32 = 24, IP_RECVFRAGSIZE: Int32 = 25, IP_RECVERR_RFC4884: Int32 = 26
    static let IP_MULTICAST_IF: Int32 = 32, IP_MULTICAST_TTL: Int32 = 33, IP_MULTICAST_LOOP: Int32 = 34
    static let IP_ADD_MEMBERSHIP: Int32 = 35, IP_DROP_MEMBERSHIP: Int32 = 36, IP_MSFILTER: Int32 = 41
    static let IP_MULTICAST_ALL: Int32 = 49, IP_UNICAST_IF: Int32 = 50, IP_LOCAL_PORT_RANGE: Int32 = 51
    static let IP_PROTOCOL: Int32 = 52, MCAST_MSFILTER: Int32 = 48, SO_ORIGINAL_DST: Int32 = 80, SO_IP_SET: Int32 = 83

    static let UDP_CORK: Int32 = 1, UDPLITE_SEND_CSCOV: Int32 = 10, UDPLITE_RECV_CSCOV: Int32 = 11
    static let UDP_ENCAP: Int32 = 100, UDP_NO_CHECK6_TX: Int32 = 101, UDP_NO_CHECK6_RX: Int32 = 102
    static let UDP_SEGMENT: Int32 = 103, UDP_GRO: Int32 = 104

    private static let ipFlagOptions: [Int32: SocketOptions.Flag] = [
        IP_RECVOPTS: .recvOpts, IP_RETOPTS: .retOpts, IP_PKTINFO: .pktInfo, IP_RECVERR: .recvErr,
        IP_RECVTTL: .recvTTL, IP_RECVTOS: .recvTOS, IP_FREEBIND: .freeBind, IP_PASSSEC: .passSec,
        IP_TRANSPARENT: .transparent, IP_RECVORIGDSTADDR: .recvOrigDstAddr, IP_CHECKSUM: .checksum,
        IP_BIND_ADDRESS_NO_PORT: .bindAddressNoPort, IP_RECVFRAGSIZE: .recvFragSize,
        IP_RECVERR_RFC4884: .recvErrRFC4884, IP_MULTICAST_LOOP: .multicastLoop, IP_MULTICAST_ALL: .multicastAll,
        IP_HDRINCL: .hdrIncl, IP_NODEFRAG: .nodefrag,
    ]

    /// Linux's ip_tos2prio: the priority IP_TOS gives a socket (rt_tos2priority).
    private static let tos2prio: [Int32] = [0, 0, 0, 0, 2, 2, 2, 2, 6, 6, 6, 6, 4, 4, 4, 4]

    // MARK: - IPPROTO_IP

    /// An int as IPPROTO_IP copies it: a buffer shorter than an int gets one byte if the value
    /// fits one, else min(len, 4) bytes.
    static func ipInt(_ v: Int32, _ len: Int) -> Result<[UInt8], Errno> {
        if len < 4 && len > 0 && (0...255).contains(v) { return .success([UInt8(v)]) }
        return .success(intBytes(v, len: len))
    }

    static func ipGet(_ name: Int32, len: Int, _ o: SocketOptions, _ c: OptionContext) -> Result<[UInt8], Errno> {
        if let f = ipFlagOptions[name] { return ipInt(o[f] ? 1 : 0, len) }
        switch name {
        case IP_TOS: return ipInt(Int32(o.tos), len)
        case IP_TTL: return ipInt(o.ttl < 0 ? 64 : o.ttl, len)
        case IP_ROUTER_ALERT: return ipInt(0, len)
        case IP_MTU_DISCOVER: return ipInt(o.mtuDiscover, len)
        case IP_MINTTL: return ipInt(o.minTTL, len)
        case IP_MULTICAST_TTL: return ipInt(o.multicastTTL, len)
        case IP_UNICAST_IF: return ipInt(Int32(bitPattern: UInt32(bitPattern: o.unicastInterface).bigEndian), len)
        case IP_LOCAL_PORT_RANGE: return ipInt(Int32(bitPattern: o.localPortRange), len)
        case IP_PROTOCOL: return ipInt(Int32(c.local?.port ?? 0), len)
        case IP_OPTIONS: return .success(Array(o.ipOptions.prefix(max(len, 0))))
        case IP_PKTOPTIONS: return c.isTCP ? .success([]) : fail(ENOPROTOOPT)
        case IP_MTU:
            guard let mtu = c.tcpInfo?.pathMTU ?? c.mtu, c.peer != nil, mtu > 0 else { return fail(ENOTCONN) }
            return ipInt(Int32(mtu), len)
        case IP_MULTICAST_IF:
            return .success(Array(le(o.multicastInterface).prefix(max(len, 0))))
        case IP_MSFILTER, MCAST_MSFILTER:
            return fail(EINVAL)
        case 64...67, 96...99, SO_IP_SET:
            // Netfilter's control calls answer any inet socket of the namespace (iptables,
            // arptables, ipset): without CAP_NET_ADMIN EPERM, with it the malformed-request
            // answers of this kernel (nothing here speaks those protocols).
            guard c.capable(.netAdmin) else { return fail(EPERM) }
            if name == SO_IP_SET { return fail(len < 8 ? EINVAL : EBADMSG) }
            return fail(EINVAL)
        case SO_ORIGINAL_DST:
            guard c.isTCP else { return fail(ENOPROTOOPT) }
            return fail(len < 16 ? EINVAL : ENOENT)   // no conntrack entry for a ztap connection
        default:
            return fail(ENOPROTOOPT)
        }
    }

    static func ipSet(_ name: Int32, _ v: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        // The int-or-char options: an int, else one unsigned byte, else 0.
        var val: Int32 = 0
        if v.optlen >= 4 { val = v.int } else if v.optlen >= 1, let b = v.bytes.first { val = Int32(b) }
        if let f = ipFlagOptions[name] {
            switch name {
            case IP_HDRINCL, IP_NODEFRAG:
                return fail(ENOPROTOOPT)   // raw sockets only
            case IP_RECVERR_RFC4884:
                guard val == 0 || val == 1 else { return fail(EINVAL) }
            case IP_MULTICAST_ALL:
                guard v.optlen >= 1 else { return fail(EINVAL) }
                guard val == 0 || val == 1 else { return fail(EINVAL) }
            case IP_MULTICAST_LOOP, IP_FREEBIND:
                guard v.optlen >= 1 else { return fail(EINVAL) }
            case IP_TRANSPARENT:
                guard val == 0 || c.capable(.netRaw) || c.capable(.netAdmin) else { return fail(EPERM) }
                guard v.optlen >= 1 else { return fail(EINVAL) }
            case IP_RECVFRAGSIZE:
                guard !c.isTCP else { return fail(EINVAL) }
            default:
                break
            }
            o[f] = val != 0
            return done
        }
        switch name {
        case IP_TOS:
            var t = UInt8(truncatingIfNeeded: val)
            if c.isTCP { t &= ~3 }   // the ECN bits are TCP's own
            if t != o.tos {
                o.tos = t
                o.priority = tos2prio[Int((t & 0x1E) >> 1)]
            }
            return .success([.typeOfService(t)])
        case IP_TTL:
            guard v.optlen >= 1 else { return fail(EINVAL) }
            guard val == -1 || (1...255).contains(val) else { return fail(EINVAL) }
            o.ttl = val
            return .success([.timeToLive(val < 0 ? 64 : UInt8(val))])
        case IP_ROUTER_ALERT:
            return fail(EINVAL)   // raw sockets only
        case IP_MTU_DISCOVER:
            guard (0...5).contains(val) else { return fail(EINVAL) }
            o.mtuDiscover = val
            return done
        case IP_MINTTL:
            guard v.optlen >= 1 else { return fail(EINVAL) }
            guard (0...255).contains(val) else { return fail(EINVAL) }
            o.minTTL = val
            return done
        case IP_MULTICAST_TTL:
            guard !c.isTCP, v.optlen >= 1 else { return fail(EINVAL) }
            let t = val == -1 ? 1 : val
            guard (0...255).contains(t) else { return fail(EINVAL) }
            o.multicastTTL = t
            return done
        case IP_UNICAST_IF:
            guard v.optlen == 4 else { return fail(EINVAL) }
            let index = Int32(bitPattern: UInt32(bitPattern: val).bigEndian)
            if index == 0 {
                o.unicastInterface = 0
                return done
            }
            guard let i = c.interface, i.index == index else { return fail(EADDRNOTAVAIL) }
            if o.boundIndex != 0, o.boundIndex != index { return fail(EINVAL) }
            o.unicastInterface = index
            return done
        case IP_LOCAL_PORT_RANGE:
            guard v.optlen == 4 else { return fail(EINVAL) }
            let lo = UInt32(bitPattern: val) & 0xFFFF, hi = UInt32(bitPattern: val) >> 16
            guard lo == 0 || hi == 0 || lo <= hi else { return fail(EINVAL) }
            o.localPortRange = UInt32(bitPattern: val)
            return done
        case IP_OPTIONS:
            return ipOptions(v, &o, c)
        case IP_MULTICAST_IF:
            guard !c.isTCP else { return fail(EINVAL) }
            guard v.optlen >= 4 else { return fail(EINVAL) }
            // ip_mreqn / ip_mreq / in_addr: the interface address is what matters here.
            let addr = v.optlen >= 8 ? v.u32(at: 4) : v.u32(at: 0)
            if addr == 0 {
                o.multicastInterface = 0
                return done
            }
            return fail(EADDRNOTAVAIL)   // the stack sends no multicast
        case IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP:
            guard !c.isTCP else { return fail(EPROTO) }
            guard v.optlen >= 8 else { return fail(EINVAL) }
            // No multicast here: no device can join a group (ENODEV), nothing was joined.
            let group = UInt32(bigEndian: v.u32(at: 0))
            if name == IP_ADD_MEMBERSHIP { return fail(group >> 28 == 0xE ? ENODEV : EINVAL) }
            return fail(group == 0 || v.u32(at: 4) != 0 ? EADDRNOTAVAIL : ENODEV)
        case 37...40:   // IP_UNBLOCK/BLOCK/ADD/DROP_SOURCE(_MEMBERSHIP): struct ip_mreq_source
            guard !c.isTCP, v.optlen == 12 else { return fail(EINVAL) }
            return fail(name == 39 ? ENODEV : EADDRNOTAVAIL)
        case 42...47:   // MCAST_JOIN_GROUP ... MCAST_LEAVE_SOURCE_GROUP: struct group_(source_)req
            guard !c.isTCP else { return fail(EINVAL) }
            let size = name == 42 || name == 45 ? 136 : 264
            guard v.optlen >= size else { return fail(EINVAL) }
            return fail(name == 42 || name == 46 ? ENODEV : EADDRNOTAVAIL)
        case IP_MSFILTER, MCAST_MSFILTER:
            return fail(EINVAL)
        case IP_IPSEC_POLICY:
            return fail(EOPNOTSUPP)   // no IPsec
        case IP_XFRM_POLICY:
            guard c.capable(.netAdmin) else { return fail(EPERM) }
            return fail(EINVAL)
        case 64, 65, 96, 97:
            guard c.capable(.netAdmin) else { return fail(EPERM) }
            return fail(EINVAL)
        default:
            return fail(ENOPROTOOPT)
        }
    }

    /// IP_OPTIONS: at most 40 bytes of options that Linux's ip_options_compile accepts, kept as
    /// it keeps them (padded to four bytes, everything after an END zeroed) and read back; they
    /// are not put into the headers sent.
    private static func ipOptions(_ v: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        guard v.optlen <= 40 else { return fail(EINVAL) }
        var b = Array(v.bytes.prefix(v.optlen))
        while b.count % 4 != 0 { b.append(0) }
        var i = 0
        scan: while i < b.count {
            let left = b.count - i
            switch b[i] {
            case 0:   // IPOPT_END: the rest becomes END too
                for k in i..<b.count { b[k] = 0 }
                break scan
            case 1:   // IPOPT_NOOP
                i += 1
                continue
            default:
                break
            }
            guard left >= 2 else { return fail(EINVAL) }
            let l = Int(b[i + 1])
            guard l >= 2, l <= left else { return fail(EINVAL) }
            switch b[i] {
            case 131, 137:   // LSRR, SSRR: pointer 4 and whole addresses
                guard l >= 3, b[i + 2] == 4, l >= 7, (l - 3) & 3 == 0 else { return fail(EINVAL) }
            case 7:          // RR
                guard l >= 3, b[i + 2] >= 4 else { return fail(EINVAL) }
                if Int(b[i + 2]) <= l { guard Int(b[i + 2]) + 3 <= l else { return fail(EINVAL) } }
            case 68:         // timestamp
                guard l >= 4, b[i + 2] >= 5 else { return fail(EINVAL) }
                if Int(b[i + 2]) <= l {
                    guard Int(b[i + 2]) + 3 <= l else { return fail(EINVAL) }
                    switch b[i + 3] & 0xF {
                    case 0: break
                    case 1, 3: guard Int(b[i + 2]) + 7 <= l else { return fail(EINVAL) }
                    default: guard c.capable(.netRaw) else { return fail(EINVAL) }
                    }
                }
            case 148:        // router alert
                guard l >= 4 else { return fail(EINVAL) }
            default:         // security options and unknown kinds: CAP_NET_RAW only
                guard c.capable(.netRaw) else { return fail(EINVAL) }
            }
            i += l
        }
        o.ipOptions = b
        return done
    }

    // MARK: - IPPROTO_UDP

    static func udpGet(_ name: Int32, len: Int, _ o: SocketOptions, _ c: OptionContext) -> Result<[UInt8], Errno> {
        switch name {
        case UDP_CORK: return ok(o[.udpCork], len)
        case UDP_NO_CHECK6_TX: return ok(o[.udpNoCheck6Tx], len)
        case UDP_NO_CHECK6_RX: return ok(o[.udpNoCheck6Rx], len)
        case UDP_ENCAP: return ok(o.udpEncap, len)
        case UDP_SEGMENT: return ok(o.udpSegment, len)
        case UDP_GRO: return ok(o[.udpGRO], len)
        case UDPLITE_SEND_CSCOV, UDPLITE_RECV_CSCOV: return ok(Int32(0), len)
        default: return fail(ENOPROTOOPT)
        }
    }

    static func udpSet(_ name: Int32, _ v: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        guard v.optlen >= 4 else { return fail(EINVAL) }
        let val = v.int
        switch name {
        case UDP_CORK: o[.udpCork] = val != 0
        case UDP_NO_CHECK6_TX: o[.udpNoCheck6Tx] = val != 0
        case UDP_NO_CHECK6_RX: o[.udpNoCheck6Rx] = val != 0
        case UDP_GRO: o[.udpGRO] = val != 0
        case UDP_ENCAP:
            // ESP-in-UDP (2) and L2TP (3); the non-IKE variant (1) is gone from Linux.
            guard val == 0 || val == 2 || val == 3 else { return fail(ENOPROTOOPT) }
            o.udpEncap = val
        case UDP_SEGMENT:
            guard (0...Int32(UInt16.max)).contains(val) else { return fail(EINVAL) }
            o.udpSegment = val
        default:
            return fail(ENOPROTOOPT)
        }
        return done
    }
}
