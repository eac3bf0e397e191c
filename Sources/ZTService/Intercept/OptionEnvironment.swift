import CShims
import LinuxNet
import NetStack
import PhyLoop
#if canImport(Glibc)
import Glibc
#endif

/// What the option code of one network's bridges shares: the network's interface (the one
/// device SO_BINDTODEVICE accepts), socket cookies, and the caller's capabilities.
final class OptionEnvironment {
    let interfaceName: String?
    private var cookies: UInt64 = 0

    init(interfaceName: String?) { self.interfaceName = interfaceName }

    /// The interface and its index, looked up when asked (the TAP may have been recreated).
    var interface: (name: String, index: Int32)? {
        guard let n = interfaceName else { return nil }
        let i = if_nametoindex(n)
        return i > 0 ? (n, Int32(bitPattern: i)) : nil
    }

    /// A new SO_COOKIE: unique for the daemon's life, never 0.
    func nextCookie() -> UInt64 {
        cookies &+= 1
        return cookies
    }

    /// Whether process `pid` has a capability, read from /proc/PID/status at most once per
    /// request and only when an option needs it (the kernel asks the calling task).
    static func capabilities(ofProcess pid: Int32) -> (OptionContext.Capability) -> Bool {
        var mask: UInt64?
        return { cap in
            if mask == nil { mask = Capabilities.effective(ofProcess: pid) ?? 0 }
            let bit: UInt64 = cap == .netAdmin ? 1 << 12 : 1 << 13   // CAP_NET_ADMIN, CAP_NET_RAW
            return mask! & bit != 0
        }
    }

    /// SO_NETNS_COOKIE of the namespace `fd` (one of our socketpair ends, made by the app's
    /// library in the app's namespace) belongs to.
    static func netnsCookie(of fd: Int32) -> UInt64 {
        var v: UInt64 = 0
        var len = socklen_t(8)
        guard getsockopt(fd, SOL_SOCKET, SocketOptionMap.SO_NETNS_COOKIE, &v, &len) == 0 else { return 0 }
        return v
    }

    static func clockMs() -> UInt32 { UInt32(truncatingIfNeeded: Sys.monotonicNanoseconds() / 1_000_000) }
}
