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

    /// Whether process `pid` has file descriptor `n` open; nil when its fd table cannot be seen.
    static func hasFD(ofProcess pid: Int32) -> (Int32) -> Bool? {
        { n in
            guard n >= 0 else { return false }
            if access("/proc/\(pid)/fd/\(n)", F_OK) == 0 { return true }
            return errno == ENOENT ? false : nil
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

    /// net.ipv4.tcp_rmem[2] and net.core.somaxconn, read once.
    static let tcpRmemMax: Int32 = {
        let fd = open("/proc/sys/net/ipv4/tcp_rmem", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 6291456 }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 128)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 127) }
        guard n > 0 else { return 6291456 }
        let fields = buf[0..<n].split { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A }
        return fields.count >= 3 ? Int32(String(decoding: fields[2], as: UTF8.self)) ?? 6291456 : 6291456
    }()
    static let somaxconn: Int32 = SocketOptionMap.sysctl("/proc/sys/net/core/somaxconn") ?? 4096

    static func clockMs() -> UInt32 { UInt32(truncatingIfNeeded: Sys.monotonicNanoseconds() / 1_000_000) }
}
