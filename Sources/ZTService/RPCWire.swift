import CShims
import CZTRPC
import NetStack
#if canImport(Glibc)
import Glibc
#endif

// Swift side of ztrpc.h: conversions between the wire structs and NetStack types. The structs
// are imported from the header itself, so there is no second definition to drift.

/// Identity of an intercepted socket: (st_dev, st_ino) of the app's end (ztrpc.h "Identity").
struct FDKey: Hashable, CustomStringConvertible {
    var dev: UInt64
    var ino: UInt64
    var description: String { "\(dev):\(ino)" }

    /// fstat of `fd`; nil if it is not an open fd.
    static func of(_ fd: Int32) -> FDKey? {
        var d: UInt64 = 0, i: UInt64 = 0
        guard cshim_fd_identity(fd, &d, &i) == 0 else { return nil }
        return FDKey(dev: d, ino: i)
    }
}

enum Wire {
    static let reqHeaderSize = MemoryLayout<ztrpc_req_hdr>.size
    static let repHeaderSize = MemoryLayout<ztrpc_rep_hdr>.size

    static func endpoint(_ a: ztrpc_addr) -> IPv4Endpoint {
        IPv4Endpoint(IPv4Address(UInt32(bigEndian: a.addr)), UInt16(bigEndian: a.port))
    }

    static func addr(_ e: IPv4Endpoint?) -> ztrpc_addr {
        guard let e else { return ztrpc_addr() }
        return ztrpc_addr(addr: e.address.value.bigEndian, port: e.port.bigEndian, reserved: 0)
    }

    /// Copies a body into a zeroed struct: a shorter body reads as zero-filled, a longer one
    /// (a newer library's additions) is cut (ztrpc.h: changes are additive).
    static func body<T>(_ type: T.Type, from bytes: UnsafeRawBufferPointer, zero: T) -> T {
        var v = zero
        withUnsafeMutableBytes(of: &v) { dst in
            let n = min(dst.count, bytes.count)
            if n > 0 { dst.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: n) }
        }
        return v
    }

    /// Socket type and domain of an fd received over SCM_RIGHTS (validation of what the app sent).
    static func isUnixSocket(_ fd: Int32, type: Int32) -> Bool {
        var v: Int32 = 0
        var len = socklen_t(4)
        guard getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) == 0, v == AF_UNIX else { return false }
        len = 4
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) == 0, v == type else { return false }
        return true
    }

    /// Linux errno for a stack error, as the libc call would report it.
    static func errno(_ e: SocketError) -> Int32 {
        switch e {
        case .connectionRefused: return ECONNREFUSED
        case .connectionReset: return ECONNRESET
        case .timedOut: return ETIMEDOUT
        case .hostUnreachable: return EHOSTUNREACH
        case .networkUnreachable: return ENETUNREACH
        case .addressInUse: return EADDRINUSE
        case .addressNotAvailable: return EADDRNOTAVAIL
        case .invalidState: return EINVAL
        case .notConnected: return ENOTCONN
        case .messageTooLong: return EMSGSIZE
        case .noBufferSpace: return ENOBUFS
        case .wouldBlock: return EAGAIN
        case .invalidHandle: return EBADF
        }
    }
}

/// Options an app set on a socket (recorded for getsockopt, applied to the stack where it has them).
struct SocketOptions {
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

    static func clampBuffer(_ v: Int32) -> Int { min(max(Int(v), 4096), 16 << 20) }
}
