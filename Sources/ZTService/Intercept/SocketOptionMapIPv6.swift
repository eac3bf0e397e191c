import CShims
import NetStack
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// IPPROTO_IPV6 options of AF_INET6 sockets (see SocketOptionMap.swift; an AF_INET socket's
// IPPROTO_IPV6 level is refused like IPv4's kernel code refuses it). IPV6_UNICAST_HOPS and
// IPV6_TCLASS reach the stack (the IPv6 headers sent); IPV6_V6ONLY is fixed at bind, as Linux
// refuses to change it on a bound socket; the IPV6_RECV* family and the multicast settings are
// recorded and read back (no ancillary data, no multicast sockets). Names this stack does not
// model answer ENOPROTOOPT.

/// The IPPROTO_IPV6 values of one socket, Linux's defaults.
struct IPv6Options: Equatable {
    /// -1 = the default (the interface's 64).
    var hopLimit: Int32 = -1
    var multicastHops: Int32 = 1
    var trafficClass: UInt8 = 0
    var mtuDiscover: Int32 = 1          // IPV6_PMTUDISC_WANT
    var mtu: Int32 = 0
    var unicastInterface: Int32 = 0
    var multicastInterface: Int32 = 0
    var minHopCount: Int32 = 0
    /// Booleans by option name (IPV6_RECVPKTINFO, IPV6_DONTFRAG, ...).
    var flags: Set<Int32> = [SocketOptionMap.IPV6_MULTICAST_LOOP, SocketOptionMap.IPV6_MULTICAST_ALL,
                             SocketOptionMap.IPV6_AUTOFLOWLABEL]
}

extension SocketOptionMap {
    static let IPV6_CHECKSUM: Int32 = 7, IPV6_UNICAST_HOPS: Int32 = 16, IPV6_MULTICAST_IF: Int32 = 17
    static let IPV6_MULTICAST_HOPS: Int32 = 18, IPV6_MULTICAST_LOOP: Int32 = 19, IPV6_ROUTER_ALERT: Int32 = 22
    static let IPV6_MTU_DISCOVER: Int32 = 23, IPV6_MTU: Int32 = 24, IPV6_RECVERR: Int32 = 25, IPV6_V6ONLY: Int32 = 26
    static let IPV6_MULTICAST_ALL: Int32 = 29, IPV6_RECVERR_RFC4884: Int32 = 31, IPV6_FLOWINFO_SEND: Int32 = 33
    static let IPV6_RECVPKTINFO: Int32 = 49, IPV6_RECVHOPLIMIT: Int32 = 51, IPV6_RECVHOPOPTS: Int32 = 53
    static let IPV6_RECVRTHDR: Int32 = 56, IPV6_RECVDSTOPTS: Int32 = 58, IPV6_RECVPATHMTU: Int32 = 60
    static let IPV6_DONTFRAG: Int32 = 62, IPV6_RECVTCLASS: Int32 = 66, IPV6_TCLASS: Int32 = 67
    static let IPV6_AUTOFLOWLABEL: Int32 = 70, IPV6_MINHOPCOUNT: Int32 = 73, IPV6_RECVORIGDSTADDR: Int32 = 74
    static let IPV6_TRANSPARENT: Int32 = 75, IPV6_UNICAST_IF: Int32 = 76, IPV6_RECVFRAGSIZE: Int32 = 77
    static let IPV6_FREEBIND: Int32 = 78

    /// Plain booleans: recorded, read back.
    private static let ipv6Flags: Set<Int32> = [
        IPV6_RECVERR, IPV6_RECVERR_RFC4884, IPV6_RECVPKTINFO, IPV6_RECVHOPLIMIT, IPV6_RECVHOPOPTS, IPV6_RECVRTHDR,
        IPV6_RECVDSTOPTS, IPV6_RECVPATHMTU, IPV6_RECVTCLASS, IPV6_RECVORIGDSTADDR, IPV6_RECVFRAGSIZE, IPV6_DONTFRAG,
        IPV6_AUTOFLOWLABEL, IPV6_FREEBIND, IPV6_MULTICAST_ALL, IPV6_FLOWINFO_SEND, IPV6_ROUTER_ALERT,
    ]

    static func ipv6Get(_ name: Int32, len: Int, _ o: SocketOptions, _ c: OptionContext) -> Result<[UInt8], Errno> {
        guard len >= 0 else { return fail(EINVAL) }
        let v = o.ipv6
        if ipv6Flags.contains(name) || name == IPV6_MULTICAST_LOOP || name == IPV6_TRANSPARENT {
            return ok(v.flags.contains(name), len)
        }
        switch name {
        case IPV6_V6ONLY: return ok(c.v6Only, len)
        case IPV6_UNICAST_HOPS: return ok(v.hopLimit < 0 ? 64 : v.hopLimit, len)
        case IPV6_MULTICAST_HOPS: return ok(v.multicastHops, len)
        case IPV6_TCLASS: return ok(Int32(v.trafficClass), len)
        case IPV6_MTU_DISCOVER: return ok(v.mtuDiscover, len)
        case IPV6_UNICAST_IF: return ok(v.unicastInterface, len)
        case IPV6_MULTICAST_IF: return ok(v.multicastInterface, len)
        case IPV6_MINHOPCOUNT: return ok(v.minHopCount, len)
        case IPV6_CHECKSUM: return ok(Int32(-1), len)   // not a raw socket: no checksum offset
        case IPV6_MTU:
            guard let mtu = c.tcpInfo?.pathMTU ?? c.mtu, c.peer != nil, mtu > 0 else { return fail(ENOTCONN) }
            return ok(Int32(mtu), len)
        default:
            return fail(ENOPROTOOPT)
        }
    }

    static func ipv6Set(_ name: Int32, _ val: Value, _ o: inout SocketOptions, _ c: OptionContext) -> Result<[TCPOption], Errno> {
        guard val.optlen >= 4 else { return fail(EINVAL) }
        let v = val.int
        if ipv6Flags.contains(name) {
            if v != 0 { o.ipv6.flags.insert(name) } else { o.ipv6.flags.remove(name) }
            return done
        }
        switch name {
        case IPV6_V6ONLY:
            // Fixed once the socket is bound, and an intercepted socket always is.
            return fail(EINVAL)
        case IPV6_UNICAST_HOPS:
            guard (-1...255).contains(v) else { return fail(EINVAL) }
            o.ipv6.hopLimit = v
            return .success([.hopLimit(v < 0 ? 64 : UInt8(v))])
        case IPV6_MULTICAST_HOPS:
            guard !c.isTCP else { return fail(ENOPROTOOPT) }
            guard (-1...255).contains(v) else { return fail(EINVAL) }
            o.ipv6.multicastHops = v < 0 ? 1 : v
            return done
        case IPV6_TCLASS:
            guard (-1...255).contains(v) else { return fail(EINVAL) }
            o.ipv6.trafficClass = v < 0 ? 0 : UInt8(v)
            return .success([.trafficClass(o.ipv6.trafficClass)])
        case IPV6_MULTICAST_LOOP:
            guard v == 0 || v == 1 else { return fail(EINVAL) }
            if v != 0 { o.ipv6.flags.insert(name) } else { o.ipv6.flags.remove(name) }
            return done
        case IPV6_MTU_DISCOVER:
            guard (0...5).contains(v) else { return fail(EINVAL) }
            o.ipv6.mtuDiscover = v
            return done
        case IPV6_MTU:
            guard v == 0 || v >= 1280 else { return fail(EINVAL) }
            o.ipv6.mtu = v
            return done
        case IPV6_MINHOPCOUNT:
            guard (0...255).contains(v) else { return fail(EINVAL) }
            o.ipv6.minHopCount = v
            return done
        case IPV6_UNICAST_IF:
            o.ipv6.unicastInterface = v
            return done
        case IPV6_TRANSPARENT:
            guard v == 0 || c.capable(.netRaw) || c.capable(.netAdmin) else { return fail(EPERM) }
            if v != 0 { o.ipv6.flags.insert(name) } else { o.ipv6.flags.remove(name) }
            return done
        default:
            return fail(ENOPROTOOPT)
        }
    }
}
