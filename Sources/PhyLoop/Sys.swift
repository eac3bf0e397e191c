import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Outcome of a non-blocking I/O call: EAGAIN is a value, not an error.
public enum IOResult<T>: Sendable where T: Sendable {
    case processed(T)
    case wouldBlock
}

/// The loop's syscalls, bound once. Each retries on EINTR, returns EAGAIN as `.wouldBlock`, and
/// throws `Errno` for everything else.
public enum Sys {
    @inlinable
    static func retrying(_ body: () -> Int) throws(Errno) -> IOResult<Int> {
        while true {
            let r = body()
            if r >= 0 { return .processed(r) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            throw Errno(rawValue: e)
        }
    }

    public static func read(_ fd: Int32, into buf: UnsafeMutableRawBufferPointer) throws(Errno) -> IOResult<Int> {
        try retrying { Glibc.read(fd, buf.baseAddress, buf.count) }
    }

    public static func write(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(Errno) -> IOResult<Int> {
        try retrying { Glibc.write(fd, buf.baseAddress, buf.count) }
    }

    /// send(2) with MSG_NOSIGNAL so a peer that went away gives EPIPE, never SIGPIPE.
    public static func send(_ fd: Int32, _ buf: UnsafeRawBufferPointer, flags: Int32 = 0) throws(Errno) -> IOResult<Int> {
        try retrying { Glibc.send(fd, buf.baseAddress, buf.count, flags | Int32(MSG_NOSIGNAL)) }
    }

    /// Gathers up to two regions in one writev (a ring buffer's readable bytes).
    public static func writev(_ fd: Int32, _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) throws(Errno) -> IOResult<Int> {
        var iov = (iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                   iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count))
        let n: Int32 = b.count > 0 ? 2 : 1
        return try withUnsafeMutablePointer(to: &iov) { p throws(Errno) in
            try p.withMemoryRebound(to: iovec.self, capacity: 2) { v throws(Errno) in
                try retrying { Glibc.writev(fd, v, n) }
            }
        }
    }

    /// Scatters into up to two regions in one readv (a ring buffer's free space).
    public static func readv(_ fd: Int32, _ a: UnsafeMutableRawBufferPointer, _ b: UnsafeMutableRawBufferPointer) throws(Errno) -> IOResult<Int> {
        var iov = (iovec(iov_base: a.baseAddress, iov_len: a.count), iovec(iov_base: b.baseAddress, iov_len: b.count))
        let n: Int32 = b.count > 0 ? 2 : 1
        return try withUnsafeMutablePointer(to: &iov) { p throws(Errno) in
            try p.withMemoryRebound(to: iovec.self, capacity: 2) { v throws(Errno) in
                try retrying { Glibc.readv(fd, v, n) }
            }
        }
    }

    /// writev for a socket another process may share: sendmsg with MSG_DONTWAIT|MSG_NOSIGNAL, so
    /// it never blocks even if the other holder cleared O_NONBLOCK on the shared file
    /// description, and a vanished reader is EPIPE, not SIGPIPE.
    public static func sendv(_ fd: Int32, _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) throws(Errno) -> IOResult<Int> {
        var iov = (iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                   iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count))
        let n = b.count > 0 ? 2 : 1
        return try withUnsafeMutablePointer(to: &iov) { p throws(Errno) in
            try p.withMemoryRebound(to: iovec.self, capacity: 2) { v throws(Errno) in
                var msg = msghdr()
                msg.msg_iov = v
                msg.msg_iovlen = n
                return try retrying { Glibc.sendmsg(fd, &msg, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            }
        }
    }

    /// readv for a socket another process may share: recvmsg with MSG_DONTWAIT (see `sendv`).
    public static func recvv(_ fd: Int32, _ a: UnsafeMutableRawBufferPointer, _ b: UnsafeMutableRawBufferPointer) throws(Errno) -> IOResult<Int> {
        var iov = (iovec(iov_base: a.baseAddress, iov_len: a.count), iovec(iov_base: b.baseAddress, iov_len: b.count))
        let n = b.count > 0 ? 2 : 1
        return try withUnsafeMutablePointer(to: &iov) { p throws(Errno) in
            try p.withMemoryRebound(to: iovec.self, capacity: 2) { v throws(Errno) in
                var msg = msghdr()
                msg.msg_iov = v
                msg.msg_iovlen = n
                return try retrying { Glibc.recvmsg(fd, &msg, Int32(MSG_DONTWAIT)) }
            }
        }
    }

    public static func close(_ fd: Int32) {
        // close(2) must not be retried on EINTR on Linux: the fd is gone either way.
        _ = Glibc.close(fd)
    }

    public static func setNonBlocking(_ fd: Int32) throws(Errno) {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw Errno(rawValue: errno) }
    }

    public static func eventfd() throws(Errno) -> Int32 {
        let fd = cshim_eventfd()
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        return fd
    }

    /// Adds 1 to an eventfd (thread-safe wake-up).
    public static func signalEventFD(_ fd: Int32) {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) }
    }

    /// Drains an eventfd completely.
    public static func drainEventFD(_ fd: Int32) {
        var v: UInt64 = 0
        while withUnsafeMutableBytes(of: &v, { Glibc.read(fd, $0.baseAddress, 8) }) == 8 {}
    }

    /// Monotonic clock in nanoseconds.
    @inlinable
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
