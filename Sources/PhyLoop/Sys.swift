import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// Sys — the daemon's one syscall layer (SwiftNIO's System.swift and swift-system's mocking shims
// are the model).
//
// Every read/write/send/recv/poll/shutdown/close the daemon makes on a socket or a TAP goes
// through a `Sys` value. `Sys` owns the policy, in one place:
// - EINTR is retried (close excepted: on Linux the fd is gone even when close reports EINTR);
// - EAGAIN is a value (`.wouldBlock`), every other failure a thrown `Errno`;
// - socket calls never block and never raise SIGPIPE (MSG_DONTWAIT|MSG_NOSIGNAL always, so a
//   client clearing O_NONBLOCK on a shared file description cannot stall a loop).
// The raw calls sit behind `SyscallBackend`, the seam: production uses `LinuxSyscalls`; tests wrap
// it to inject EAGAIN, EINTR, ENOBUFS, EMFILE or short transfers at exact points.

/// Outcome of a non-blocking I/O call: EAGAIN is a value, not an error.
public enum IOResult<T>: Sendable where T: Sendable {
    case processed(T)
    case wouldBlock
}

/// The raw system calls under `Sys`. Each returns its result (>= 0) or `-errno`, so a fake never
/// has to touch the thread's errno.
public protocol SyscallBackend: Sendable {
    func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer?, _ count: Int) -> Int
    func write(_ fd: Int32, _ buf: UnsafeRawPointer?, _ count: Int) -> Int
    /// writev(2) of a non-socket fd (TAP): one frame from several pieces.
    func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int32) -> Int
    func recvmsg(_ fd: Int32, _ msg: UnsafeMutablePointer<msghdr>, _ flags: Int32) -> Int
    func sendmsg(_ fd: Int32, _ msg: UnsafePointer<msghdr>, _ flags: Int32) -> Int
    func shutdown(_ fd: Int32, _ how: Int32) -> Int
    func close(_ fd: Int32) -> Int
    func poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeoutMs: Int32) -> Int
    /// socketpair(AF_UNIX, type|SOCK_CLOEXEC).
    func socketpair(_ type: Int32, _ fds: UnsafeMutablePointer<Int32>) -> Int
    /// accept4(fd, NULL, NULL, SOCK_NONBLOCK|SOCK_CLOEXEC).
    func accept(_ fd: Int32) -> Int
    /// recvmmsg(2) into headers made by `MessageBatch` (cshim_recvmmsg).
    func recvmmsg(_ fd: Int32, _ headers: UnsafeMutableRawPointer, _ count: UInt32, _ flags: Int32) -> Int
}

extension SyscallBackend {
    public func recvmmsg(_ fd: Int32, _ headers: UnsafeMutableRawPointer, _ count: UInt32, _ flags: Int32) -> Int {
        Int(cshim_recvmmsg(fd, headers, count, flags))
    }
    /// The real writev, for backends that wrap the real calls without overriding it.
    public func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int32) -> Int {
        let v = Glibc.writev(fd, iov, count)
        return v >= 0 ? v : -Int(errno)
    }
}

/// The real calls.
public struct LinuxSyscalls: SyscallBackend {
    public init() {}
    @inline(__always) private func r(_ v: Int) -> Int { v >= 0 ? v : -Int(errno) }
    // The data path's calls go straight to the kernel (cshims.h: no cancellation bookkeeping).
    public func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer?, _ count: Int) -> Int { cshim_sys_read(fd, buf, count) }
    public func write(_ fd: Int32, _ buf: UnsafeRawPointer?, _ count: Int) -> Int { cshim_sys_write(fd, buf, count) }
    public func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int32) -> Int { cshim_sys_writev(fd, iov, count) }
    public func recvmsg(_ fd: Int32, _ msg: UnsafeMutablePointer<msghdr>, _ flags: Int32) -> Int {
        cshim_sys_recvmsg(fd, msg, flags)
    }
    public func sendmsg(_ fd: Int32, _ msg: UnsafePointer<msghdr>, _ flags: Int32) -> Int {
        cshim_sys_sendmsg(fd, msg, flags)
    }
    public func shutdown(_ fd: Int32, _ how: Int32) -> Int { r(Int(Glibc.shutdown(fd, how))) }
    public func close(_ fd: Int32) -> Int { r(Int(Glibc.close(fd))) }
    public func poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeoutMs: Int32) -> Int {
        r(Int(Glibc.poll(fds, nfds_t(count), timeoutMs)))
    }
    public func socketpair(_ type: Int32, _ fds: UnsafeMutablePointer<Int32>) -> Int {
        r(Int(cshim_socketpair_cloexec(AF_UNIX, type, fds)))
    }
    public func accept(_ fd: Int32) -> Int {
        r(Int(cshim_accept4(fd, nil, nil, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))))
    }
}

/// A message received with `Sys.recvWithFDs`.
public struct ReceivedMessage: Sendable {
    /// Payload bytes.
    public var count: Int
    /// File descriptors received (SCM_RIGHTS), stored at the start of the caller's buffer.
    public var fdCount: Int
    /// The payload or the fd list did not fit (extra fds were closed).
    public var truncated: Bool
    /// SCM_CREDENTIALS, when the message carried them (the receiver has SO_PASSCRED).
    public var credentials: Credentials?

    /// A sender's ids as the kernel vouched for them.
    public struct Credentials: Sendable, Equatable {
        public var pid: Int32
        public var uid: UInt32
        public var gid: UInt32
        public init(pid: Int32, uid: UInt32, gid: UInt32) { self.pid = pid; self.uid = uid; self.gid = gid }
    }

    public init(count: Int, fdCount: Int, truncated: Bool, credentials: Credentials? = nil) {
        self.count = count
        self.fdCount = fdCount
        self.truncated = truncated
        self.credentials = credentials
    }
}

/// Room for a batch of messages from a SEQPACKET or datagram socket (`Sys.recvBatch`): `slots`
/// messages of up to `slotSize` bytes, each with room for `Sys.maxPassedFDs` fds and credentials.
/// Made once by its owner, reused for every batch (no allocation per read). Not thread-safe.
public final class MessageBatch {
    public let slots: Int
    public let slotSize: Int
    let data: UnsafeMutableRawBufferPointer
    let control: UnsafeMutableRawBufferPointer
    let headers: UnsafeMutableRawBufferPointer

    public init(slots: Int, slotSize: Int) {
        precondition(slots > 0 && slotSize > 0)
        self.slots = slots
        self.slotSize = slotSize
        let space = Int(cshim_cmsg_rights_space(Int32(Sys.maxPassedFDs))) + Int(cshim_cmsg_creds_space())
        data = .allocate(byteCount: slots * slotSize, alignment: 16)
        control = .allocate(byteCount: slots * space, alignment: 16)
        headers = .allocate(byteCount: cshim_mmsg_space(UInt32(slots)), alignment: 16)
        cshim_mmsg_prepare(headers.baseAddress, UInt32(slots), data.baseAddress, slotSize, control.baseAddress, space)
    }

    deinit {
        data.deallocate()
        control.deallocate()
        headers.deallocate()
    }

    /// The bytes of message `i` of the last batch (`count` from its `ReceivedMessage`).
    public func payload(_ i: Int, count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: data.baseAddress! + i * slotSize, count: min(count, slotSize))
    }
}

public struct Sys: Sendable {
    public let backend: any SyscallBackend

    public init(backend: any SyscallBackend) { self.backend = backend }

    /// The real system.
    public static let live = Sys(backend: LinuxSyscalls())

    /// Flags every socket send/recv carries: never block, never SIGPIPE.
    public static let socketFlags = Int32(MSG_DONTWAIT | MSG_NOSIGNAL)

    @inline(__always)
    func retrying(_ body: () -> Int) throws(Errno) -> IOResult<Int> {
        while true {
            let r = body()
            if r >= 0 { return .processed(r) }
            let e = Int32(-r)
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            throw Errno(rawValue: e)
        }
    }

    // MARK: - Data

    /// read(2) of a non-socket fd (TAP).
    public func read(_ fd: Int32, into buf: UnsafeMutableRawBufferPointer) throws(Errno) -> IOResult<Int> {
        try retrying { backend.read(fd, buf.baseAddress, buf.count) }
    }

    /// write(2) of a non-socket fd (TAP).
    public func write(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(Errno) -> IOResult<Int> {
        try retrying { backend.write(fd, buf.baseAddress, buf.count) }
    }

    /// writev(2) of a non-socket fd (TAP) from up to four pieces; empty ones are left out.
    public func writev(_ fd: Int32, _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer,
                       _ c: UnsafeRawBufferPointer, _ d: UnsafeRawBufferPointer) throws(Errno) -> IOResult<Int> {
        var iov = (iovec(), iovec(), iovec(), iovec())
        var n: Int32 = 0
        withUnsafeMutableBytes(of: &iov) { raw in
            let v = raw.bindMemory(to: iovec.self)
            @inline(__always) func add(_ piece: UnsafeRawBufferPointer) {
                guard piece.count > 0 else { return }
                v[Int(n)] = iovec(iov_base: UnsafeMutableRawPointer(mutating: piece.baseAddress), iov_len: piece.count)
                n &+= 1
            }
            add(a); add(b); add(c); add(d)
        }
        return try withUnsafeBytes(of: &iov) { raw throws(Errno) in
            let v = raw.bindMemory(to: iovec.self).baseAddress!
            return try retrying { backend.writev(fd, v, n) }
        }
    }

    /// recv(2) into one buffer. `flags` adds to MSG_DONTWAIT (e.g. MSG_TRUNC, MSG_PEEK).
    public func recv(_ fd: Int32, into buf: UnsafeMutableRawBufferPointer, flags: Int32 = 0) throws(Errno) -> IOResult<Int> {
        var iov = iovec(iov_base: buf.baseAddress, iov_len: buf.count)
        return try withUnsafeMutablePointer(to: &iov) { v throws(Errno) in
            var msg = msghdr()
            msg.msg_iov = v
            msg.msg_iovlen = 1
            return try retrying { backend.recvmsg(fd, &msg, Int32(MSG_DONTWAIT) | flags) }
        }
    }

    /// send(2) of one buffer (one datagram on a SEQPACKET socket).
    public func send(_ fd: Int32, _ buf: UnsafeRawBufferPointer, flags: Int32 = 0) throws(Errno) -> IOResult<Int> {
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: buf.baseAddress), iov_len: buf.count)
        return try withUnsafeMutablePointer(to: &iov) { v throws(Errno) in
            var msg = msghdr()
            msg.msg_iov = v
            msg.msg_iovlen = 1
            return try retrying { backend.sendmsg(fd, &msg, Self.socketFlags | flags) }
        }
    }

    /// Gathers up to two regions in one sendmsg (a ring buffer's readable bytes).
    public func sendv(_ fd: Int32, _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) throws(Errno) -> IOResult<Int> {
        var iov = (iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                   iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count))
        let n = b.count > 0 ? 2 : 1
        return try withUnsafeMutablePointer(to: &iov) { p throws(Errno) in
            try p.withMemoryRebound(to: iovec.self, capacity: 2) { v throws(Errno) in
                var msg = msghdr()
                msg.msg_iov = v
                msg.msg_iovlen = n
                return try retrying { backend.sendmsg(fd, &msg, Self.socketFlags) }
            }
        }
    }

    /// Scatters into up to two regions in one recvmsg (a ring buffer's free space).
    public func recvv(_ fd: Int32, _ a: UnsafeMutableRawBufferPointer, _ b: UnsafeMutableRawBufferPointer) throws(Errno) -> IOResult<Int> {
        var iov = (iovec(iov_base: a.baseAddress, iov_len: a.count), iovec(iov_base: b.baseAddress, iov_len: b.count))
        let n = b.count > 0 ? 2 : 1
        return try withUnsafeMutablePointer(to: &iov) { p throws(Errno) in
            try p.withMemoryRebound(to: iovec.self, capacity: 2) { v throws(Errno) in
                var msg = msghdr()
                msg.msg_iov = v
                msg.msg_iovlen = n
                return try retrying { backend.recvmsg(fd, &msg, Int32(MSG_DONTWAIT)) }
            }
        }
    }

    // MARK: - File descriptor passing

    /// Most fds one message carries either way.
    public static let maxPassedFDs = 8

    /// recvmsg accepting up to `fds.count` fds (MSG_CMSG_CLOEXEC). Fds beyond that are closed
    /// (untrusted) and reported as truncation, as is a payload longer than `buf`.
    public func recvWithFDs(_ fd: Int32, into buf: UnsafeMutableRawBufferPointer,
                            fds: UnsafeMutableBufferPointer<Int32>) throws(Errno) -> IOResult<ReceivedMessage> {
        var iov = iovec(iov_base: buf.baseAddress, iov_len: buf.count)
        // Room for the credentials too: a session's messages carry both (ztrpc.h).
        let space = Int(cshim_cmsg_rights_space(Int32(Self.maxPassedFDs))) + Int(cshim_cmsg_creds_space())
        return try withUnsafeTemporaryAllocation(byteCount: space, alignment: 16) { control throws(Errno) in
            try withUnsafeMutablePointer(to: &iov) { v throws(Errno) in
                var msg = msghdr()
                msg.msg_iov = v
                msg.msg_iovlen = 1
                msg.msg_control = control.baseAddress
                msg.msg_controllen = space
                switch try retrying({ backend.recvmsg(fd, &msg, Int32(MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) }) {
                case .wouldBlock:
                    return .wouldBlock
                case .processed(let n):
                    var count: Int32 = 0
                    let truncatedFDs = cshim_cmsg_take_rights(&msg, fds.baseAddress, Int32(fds.count), &count)
                    let truncated = truncatedFDs != 0 || msg.msg_flags & Int32(MSG_CTRUNC | MSG_TRUNC) != 0
                    var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
                    let creds = cshim_cmsg_creds(&msg, &pid, &uid, &gid) == 1
                        ? ReceivedMessage.Credentials(pid: pid, uid: uid, gid: gid) : nil
                    return .processed(ReceivedMessage(count: n, fdCount: Int(count), truncated: truncated,
                                                      credentials: creds))
                }
            }
        }
    }

    /// recvmmsg of up to `batch.slots` messages (MSG_DONTWAIT|MSG_CMSG_CLOEXEC): the count, which
    /// when below `batch.slots` also says the queue was empty after them. Every message must then
    /// be taken with `takeMessage` (which owns its fds).
    public func recvBatch(_ fd: Int32, _ batch: MessageBatch) throws(Errno) -> IOResult<Int> {
        try retrying {
            backend.recvmmsg(fd, batch.headers.baseAddress!, UInt32(batch.slots), Int32(MSG_DONTWAIT | MSG_CMSG_CLOEXEC))
        }
    }

    /// Message `i` of the last `recvBatch`: its fds into `fds` (those beyond are closed, untrusted,
    /// and reported as truncation, as is a payload longer than a slot) and its credentials.
    public func takeMessage(_ batch: MessageBatch, _ i: Int, fds: UnsafeMutableBufferPointer<Int32>) -> ReceivedMessage {
        let msg = cshim_mmsg_msg(batch.headers.baseAddress, UInt32(i))!
        var count: Int32 = 0
        let truncatedFDs = cshim_cmsg_take_rights(msg, fds.baseAddress, Int32(fds.count), &count)
        let truncated = truncatedFDs != 0 || msg.pointee.msg_flags & Int32(MSG_CTRUNC | MSG_TRUNC) != 0
        var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
        let creds = cshim_cmsg_creds(msg, &pid, &uid, &gid) == 1
            ? ReceivedMessage.Credentials(pid: pid, uid: uid, gid: gid) : nil
        return ReceivedMessage(count: Int(cshim_mmsg_len(batch.headers.baseAddress, UInt32(i))), fdCount: Int(count),
                               truncated: truncated, credentials: creds)
    }

    /// sendmsg of one buffer with `fds` as SCM_RIGHTS (at most `maxPassedFDs`).
    public func sendWithFDs(_ fd: Int32, _ buf: UnsafeRawBufferPointer, fds: UnsafeBufferPointer<Int32>) throws(Errno) -> IOResult<Int> {
        guard fds.count <= Self.maxPassedFDs else { throw Errno.invalidArgument }
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: buf.baseAddress), iov_len: buf.count)
        let space = Int(cshim_cmsg_rights_space(Int32(fds.count)))
        return try withUnsafeTemporaryAllocation(byteCount: max(space, 1), alignment: 16) { control throws(Errno) in
            try withUnsafeMutablePointer(to: &iov) { v throws(Errno) in
                var msg = msghdr()
                msg.msg_iov = v
                msg.msg_iovlen = 1
                if fds.count > 0 {
                    msg.msg_control = control.baseAddress
                    msg.msg_controllen = Int(cshim_cmsg_put_rights(control.baseAddress, space, fds.baseAddress,
                                                                   Int32(fds.count)))
                }
                return try retrying { backend.sendmsg(fd, &msg, Self.socketFlags) }
            }
        }
    }

    // MARK: - Lifecycle

    /// shutdown(2). ENOTCONN (the peer is already gone) is not an error worth reporting.
    public func shutdown(_ fd: Int32, _ how: Int32) {
        _ = backend.shutdown(fd, how)
    }

    /// close(2), never retried: on Linux the fd is released even when close reports EINTR.
    public func close(_ fd: Int32) {
        _ = backend.close(fd)
    }

    /// close(2) for an fd a local client sent us: a TCP socket with SO_LINGER {1, N} and unsent
    /// data would otherwise make close() wait up to N seconds on our event loop.
    public func closeUntrusted(_ fd: Int32) {
        cshim_disable_linger_unless_unix(fd)
        close(fd)
    }

    /// Whether the peer of a stream/seqpacket socket has closed its end (POLLRDHUP/POLLHUP now),
    /// without reading anything.
    public func peerHungUp(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(0x2000) /* POLLRDHUP */, revents: 0)
        while true {
            let r = backend.poll(&p, 1, 0)
            if r == -Int(EINTR) { continue }
            return r == 1 && p.revents & Int16(POLLHUP) != 0
        }
    }

    /// SO_ERROR of a socket (reading it clears it). A unix stream socket shows ECONNRESET when
    /// its peer was closed with bytes still unread in the peer's receive queue.
    public func pendingError(_ fd: Int32) -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(4)
        return Glibc.getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) == 0 ? v : errno
    }

    /// SIOCOUTQ of a unix socket: the memory its sent messages still hold because the peer has
    /// not read them (each message's skb truesize), or 0 if the ioctl fails.
    public func unreadSentBytes(_ fd: Int32) -> Int {
        var v: Int32 = 0
        return Glibc.ioctl(fd, UInt(TIOCOUTQ), &v) == 0 ? Int(v) : 0
    }

    /// SIOCATMARK: the next byte to read is the socket's out-of-band (urgent) byte.
    public func atMark(_ fd: Int32) -> Bool {
        var v: Int32 = 0
        return Glibc.ioctl(fd, UInt(SIOCATMARK), &v) == 0 && v != 0
    }

    /// SO_OOBINLINE on: an out-of-band byte the peer sends stays in the stream (and a read that
    /// starts at it goes on past it) instead of being dropped by a read that does not ask for it.
    public func keepOutOfBandInline(_ fd: Int32) {
        var one: Int32 = 1
        _ = Glibc.setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Gives a socket `extra` more bytes of send buffer than it has (SO_SNDBUFFORCE: past
    /// wmem_max, with CAP_NET_ADMIN). False when refused.
    public func growSendBuffer(_ fd: Int32, by extra: Int32) -> Bool {
        var cur: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        guard Glibc.getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &len) == 0 else { return false }
        var v = (cur &+ extra) / 2   // the kernel doubles what it is given
        return Glibc.setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, socklen_t(MemoryLayout<Int32>.size)) == 0
    }

    /// socketpair(AF_UNIX, type|SOCK_CLOEXEC).
    public func socketpair(type: Int32) throws(Errno) -> (Int32, Int32) {
        var sv: (Int32, Int32) = (-1, -1)
        let r = withUnsafeMutablePointer(to: &sv) { p in
            p.withMemoryRebound(to: Int32.self, capacity: 2) { backend.socketpair(type, $0) }
        }
        if r < 0 { throw Errno(rawValue: Int32(-r)) }
        return sv
    }

    /// accept4 (non-blocking, close-on-exec); ECONNABORTED is retried like EINTR.
    public func accept(_ fd: Int32) throws(Errno) -> IOResult<Int32> {
        while true {
            let r = backend.accept(fd)
            if r >= 0 { return .processed(Int32(r)) }
            let e = Int32(-r)
            if e == EINTR || e == ECONNABORTED { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            throw Errno(rawValue: e)
        }
    }

    // MARK: - Loop plumbing (not client I/O: no seam needed)

    /// Makes O_NONBLOCK the socket's only file status flag, in one fcntl: for a socketpair end a
    /// client handed over, whose other flags (O_ASYNC, O_APPEND) mean nothing to ztapd and are
    /// better cleared. Saves the F_GETFL that `setNonBlocking` needs for files of unknown use.
    public static func makeNonBlockingSocket(_ fd: Int32) throws(Errno) {
        guard fcntl(fd, F_SETFL, O_NONBLOCK) == 0 else { throw Errno(rawValue: errno) }
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
