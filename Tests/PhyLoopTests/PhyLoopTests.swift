import CShims
import Foundation
import Synchronization
import Testing
@testable import PhyLoop

/// Records every callback so tests can assert on the exact sequence.
final class Recorder: PhySocketHandler {
    typealias Context = String
    var log: [String] = []
    var loop: PhyLoop<Recorder>!
    var closeOnReadable = false
    var acceptVerdict = true

    func phyOnAccept(listener: PhySocket<String>, fd: Int32) -> String? {
        log.append("accept")
        return acceptVerdict ? "accepted" : nil
    }
    func phyOnReadable(_ s: PhySocket<String>) {
        var buf = [UInt8](repeating: 0, count: 64)
        let n = buf.withUnsafeMutableBytes { read(s.fd, $0.baseAddress, 64) }
        log.append("readable:\(s.context):\(n)")
        if n == 0 || closeOnReadable { loop.close(s) }
    }
    func phyOnWritable(_ s: PhySocket<String>) {
        log.append("writable:\(s.context)")
        loop.setNotifyWritable(s, false)
    }
    func phyOnClose(_ s: PhySocket<String>) { log.append("close:\(s.context)") }
    func phyOnWake() { log.append("wake") }
    func phyOnTimer() { log.append("timer") }
    func phyOnHangup(_ s: PhySocket<String>) { log.append("hangup:\(s.context)") }
    func phyOnAcceptFailed(listener: PhySocket<String>, errno: Int32, dropped: Bool) {
        log.append("acceptFailed:\(errno):\(dropped ? "dropped" : "paused")")
    }
    /// Units of idle work left; `onIdle` runs in each.
    var idleWork = 0
    var onIdle: (() -> Void)?
    var phyHasIdleWork: Bool { idleWork > 0 }
    func phyOnIdle() -> Bool {
        guard idleWork > 0 else { return false }
        idleWork -= 1
        log.append("idle")
        onIdle?()
        return true
    }
}

func makePair() -> (Int32, Int32) {
    var fds: [Int32] = [0, 0]
    let r = fds.withUnsafeMutableBufferPointer { cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), $0.baseAddress) }
    precondition(r == 0)
    return (fds[0], fds[1])
}

func makeLoop() throws -> (PhyLoop<Recorder>, Recorder) {
    let r = Recorder()
    let loop = try PhyLoop<Recorder>()
    loop.handler = r
    r.loop = loop
    return (loop, r)
}

@Test func readableThenPeerCloseReapsSocket() throws {
    let (loop, rec) = try makeLoop()
    let (a, b) = makePair()
    try Sys.setNonBlocking(a)
    try loop.add(fd: a, kind: .connected, context: "a")
    _ = "hi".withCString { write(b, $0, 2) }
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["readable:a:2"])
    close(b)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["readable:a:2", "readable:a:0", "close:a"])
    #expect(loop.socketCount == 0)
}

@Test func writableOnlyWhenAsked() throws {
    let (loop, rec) = try makeLoop()
    let (a, b) = makePair()
    defer { close(b) }
    let s = try loop.add(fd: a, kind: .connected, context: "a", readable: false)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 10_000_000)
    #expect(rec.log == ["timer"])
    loop.setNotifyWritable(s, true)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["timer", "writable:a"])
    loop.closeAll()
    #expect(rec.log.last == "close:a")
}

@Test func wakeFromAnotherThread() throws {
    let (loop, rec) = try makeLoop()
    let waker = loop.waker
    let t = Thread { usleep(20_000); waker.wake() }
    t.start()
    let start = Sys.monotonicNanoseconds()
    try loop.poll(deadline: nil)
    #expect(rec.log == ["wake"])
    #expect(Sys.monotonicNanoseconds() - start < 5_000_000_000)
}

@Test func closeInsideCallbackIsSafeAndDeferred() throws {
    let (loop, rec) = try makeLoop()
    rec.closeOnReadable = true
    let (a, b) = makePair()
    defer { close(b) }
    try loop.add(fd: a, kind: .connected, context: "a")
    _ = "x".withCString { write(b, $0, 1) }
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["readable:a:1", "close:a"])
    // The fd is really closed: writing to the peer fails with EPIPE.
    let n = "y".withCString { send(b, $0, 1, Int32(MSG_NOSIGNAL)) }
    #expect(n == -1)
}

@Test func hangupWithReadsOffSuspendsInsteadOfSpinning() throws {
    let (loop, rec) = try makeLoop()
    let (a, b) = makePair()
    let s = try loop.add(fd: a, kind: .connected, context: "a")
    loop.setNotifyReadable(s, false)
    close(b)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["hangup:a"])
    #expect(s.suspended)
    // No further events: the next poll just times out.
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 20_000_000)
    #expect(rec.log == ["hangup:a", "timer"])
    loop.setNotifyReadable(s, true)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["hangup:a", "timer", "readable:a:0", "close:a"])
}

@Test func listenerAcceptsAndRefuses() throws {
    let (loop, rec) = try makeLoop()
    let path = NSTemporaryDirectory() + "phy-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
    defer { unlink(path) }
    let l = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    #expect(cshim_bind_unix(l, path) == 0)
    #expect(listen(l, 16) == 0)
    try Sys.setNonBlocking(l)
    try loop.add(fd: l, kind: .listener, context: "l")
    let c = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(c) }
    #expect(cshim_connect_unix(c, path) == 0)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["accept"])
    #expect(loop.socketCount == 2)
    rec.acceptVerdict = false
    let c2 = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(c2) }
    #expect(cshim_connect_unix(c2, path) == 0)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(loop.socketCount == 2)
    // The refused connection was closed by the loop: the client sees EOF.
    var buf: UInt8 = 0
    #expect(read(c2, &buf, 1) == 0)
}

@Test func closedSocketsReleaseTheirFDs() throws {
    let (loop, rec) = try makeLoop()
    defer { withExtendedLifetime(rec) {} }
    for _ in 0..<200 {
        let (a, b) = makePair()
        var before = stat()
        #expect(fstat(a, &before) == 0)
        let s = try loop.add(fd: a, kind: .connected, context: "x")
        loop.close(s)
        // The loop owns `a`: it is closed right away. Tests run in parallel, so another test may
        // already have reused the number: then it must name a different file.
        var after = stat()
        let gone = fstat(a, &after) == -1 && errno == EBADF
        #expect(gone || after.st_ino != before.st_ino || after.st_dev != before.st_dev)
        close(b)
    }
    #expect(loop.socketCount == 0)
    #expect(rec.log.count == 200)
}

/// accept4 failing with EMFILE for the first `failures` calls (then the real call), counted.
final class EMFILEAccept: SyscallBackend {
    private let real = LinuxSyscalls()
    private let state = Mutex<(failures: Int, calls: Int)>((0, 0))
    init(failures: Int) { state.withLock { $0.failures = failures } }
    var acceptCalls: Int { state.withLock { $0.calls } }
    func setFailures(_ n: Int) { state.withLock { $0.failures = n } }
    func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer?, _ count: Int) -> Int { real.read(fd, buf, count) }
    func write(_ fd: Int32, _ buf: UnsafeRawPointer?, _ count: Int) -> Int { real.write(fd, buf, count) }
    func recvmsg(_ fd: Int32, _ msg: UnsafeMutablePointer<msghdr>, _ flags: Int32) -> Int { real.recvmsg(fd, msg, flags) }
    func sendmsg(_ fd: Int32, _ msg: UnsafePointer<msghdr>, _ flags: Int32) -> Int { real.sendmsg(fd, msg, flags) }
    func shutdown(_ fd: Int32, _ how: Int32) -> Int { real.shutdown(fd, how) }
    func close(_ fd: Int32) -> Int { real.close(fd) }
    func poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeoutMs: Int32) -> Int { real.poll(fds, count, timeoutMs) }
    func socketpair(_ type: Int32, _ fds: UnsafeMutablePointer<Int32>) -> Int { real.socketpair(type, fds) }
    func accept(_ fd: Int32) -> Int {
        let fail = state.withLock { s -> Bool in
            s.calls += 1
            guard s.failures > 0 else { return false }
            s.failures -= 1
            return true
        }
        return fail ? -Int(EMFILE) : real.accept(fd)
    }
}

/// A listener on a fresh path in a loop whose accept4 goes through `backend`; a connected client.
func listenerLoop(_ backend: EMFILEAccept) throws -> (PhyLoop<Recorder>, Recorder, client: Int32, path: String) {
    let rec = Recorder()
    let loop = try PhyLoop<Recorder>(sys: Sys(backend: backend))
    loop.handler = rec
    rec.loop = loop
    let path = NSTemporaryDirectory() + "phy-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
    let l = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    #expect(cshim_bind_unix(l, path) == 0 && listen(l, 16) == 0)
    try Sys.setNonBlocking(l)
    try loop.add(fd: l, kind: .listener, context: "l")
    let c = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    #expect(cshim_connect_unix(c, path) == 0)
    return (loop, rec, c, path)
}

@Test func emfileDropsThePendingConnectionWithTheReserveInsteadOfSpinning() throws {
    let backend = EMFILEAccept(failures: 1)
    let (loop, rec, c, path) = try listenerLoop(backend)
    defer { close(c); unlink(path); loop.closeAll() }
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    // The failed accept, the one made with the reserve's slot, and the EAGAIN that ends the pass.
    #expect(rec.log == ["acceptFailed:24:dropped"])
    #expect(backend.acceptCalls == 3)
    var byte: UInt8 = 0
    #expect(read(c, &byte, 1) == 0)   // dropped: the client sees EOF, not a hang
    // Nothing pending any more: the next pass only times out.
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 20_000_000)
    #expect(rec.log == ["acceptFailed:24:dropped", "timer"] && backend.acceptCalls == 3)
}

@Test func withoutTheReserveTheListenerPausesUntilAnFDIsFreed() throws {
    // Both the accept and the retry with the reserve's slot fail: the fd went elsewhere.
    let backend = EMFILEAccept(failures: 2)
    let (loop, rec, c, path) = try listenerLoop(backend)
    defer { close(c); unlink(path); loop.closeAll() }
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["acceptFailed:24:paused"] && backend.acceptCalls == 2)
    // The connection still waits, yet the loop does not look at the listener: no spin.
    for _ in 0..<3 { try loop.poll(deadline: Sys.monotonicNanoseconds() + 10_000_000) }
    #expect(backend.acceptCalls == 2 && rec.log.filter { $0 == "timer" }.count == 3)
    // A socket of the loop closes (an fd is free again): the listener resumes and accepts.
    let (a, b) = makePair()
    defer { close(b) }
    loop.close(try loop.add(fd: a, kind: .connected, context: "x"))
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log.suffix(2) == ["close:x", "accept"])
}

@Test func aPausedListenerIsRetriedAfterASecondEvenIfNothingCloses() throws {
    let backend = EMFILEAccept(failures: 2)
    let (loop, rec, c, path) = try listenerLoop(backend)
    defer { close(c); unlink(path); loop.closeAll() }
    try loop.poll(deadline: nil)
    #expect(rec.log == ["acceptFailed:24:paused"])
    // No deadline of our own: the loop still wakes for the retry and then accepts.
    var passes = 0
    while !rec.log.contains("accept") && passes < 10 {
        try loop.poll(deadline: nil)
        passes += 1
    }
    #expect(rec.log.last == "accept" && passes <= 3)
}

/// Busy polling: right after activity the loop spins (and so catches what arrives without
/// sleeping), never past the deadline it was given; once idle longer than the spin time it
/// blocks at once, as without busy polling.
@Test func busyPollSpinsOnlyAfterActivityAndKeepsDeadlines() throws {
    let (loop, rec) = try makeLoop()
    loop.busyPollNanos = 200_000_000   // long enough that a slow machine still sees the spin
    let (a, b) = makePair()
    defer { close(b) }
    _ = try loop.add(fd: a, kind: .connected, context: "a")
    #expect(write(b, "x", 1) == 1)
    try loop.poll(deadline: nil)                      // activity (before it: no spin)
    #expect(rec.log == ["readable:a:1"] && loop.busyPolls == 0)
    // Events that arrive during the spin are taken from it.
    let t = Thread { usleep(20_000); _ = write(b, "y", 1) }
    t.start()
    try loop.poll(deadline: nil)
    #expect(rec.log == ["readable:a:1", "readable:a:1"])
    #expect(loop.busyPolls == 1 && loop.busyPollHits == 1)
    // A deadline inside the spin time ends the spin: the timer fires.
    let start = Sys.monotonicNanoseconds()
    try loop.poll(deadline: start + 10_000_000)
    #expect(rec.log.last == "timer" && loop.busyPolls == 2 && loop.busyPollHits == 1)
    // Idle for longer than the spin time: no spin, the loop sleeps until the deadline.
    usleep(250_000)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 10_000_000)
    #expect(rec.log.last == "timer" && loop.busyPolls == 2)
    loop.closeAll()
}

/// The fds an epoll instance watches, from /proc/self/fdinfo ("tfd:" lines).
private func watched(_ epfd: Int32) -> [Int32] {
    guard let text = try? String(contentsOfFile: "/proc/self/fdinfo/\(epfd)", encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
        guard line.hasPrefix("tfd:") else { return nil }
        return Int32(line.dropFirst(4).split(separator: " ").first ?? "")
    }
}

@Test func aSoleReferenceLeavesEpollWithItsClose() throws {
    let (loop, rec) = try makeLoop()
    let (a, b) = makePair()
    let (c, d) = makePair()
    defer { close(b); close(d) }
    let sa = try loop.add(fd: a, kind: .connected, context: "a")
    sa.soleReference = true
    let sc = try loop.add(fd: c, kind: .connected, context: "c")
    #expect(Set(watched(loop.epfd)).isSuperset(of: [a, c]))
    // Both leave epoll: `a` by its close alone (no EPOLL_CTL_DEL), `c` by the DEL.
    loop.close(sa)
    loop.close(sc)
    #expect(!watched(loop.epfd).contains(a) && !watched(loop.epfd).contains(c))
    // Their peers' writes (EPIPE now) bring nothing.
    _ = "x".withCString { send(b, $0, 1, Int32(MSG_NOSIGNAL)) }
    _ = "x".withCString { send(d, $0, 1, Int32(MSG_NOSIGNAL)) }
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 10_000_000)
    #expect(rec.log == ["close:a", "close:c", "timer"])
}

@Test func aBatchOfMessagesComesInOneCallAndAShortBatchMeansEmpty() throws {
    var sv: [Int32] = [0, 0]
    _ = sv.withUnsafeMutableBufferPointer { cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), $0.baseAddress) }
    let (a, b) = (sv[0], sv[1])
    defer { close(a); close(b) }
    var on: Int32 = 1
    setsockopt(a, SOL_SOCKET, SO_PASSCRED, &on, 4)
    let sys = Sys.live
    // Three messages: plain, one carrying an fd, one longer than a slot.
    _ = "one".withCString { send(b, $0, 3, 0) }
    let (p, q) = makePair()
    defer { close(p); close(q) }
    var passed = [p]
    _ = try passed.withUnsafeBufferPointer { fds in try "two".utf8CString.withUnsafeBytes { bytes in
        try sys.sendWithFDs(b, UnsafeRawBufferPointer(rebasing: bytes[0..<3]), fds: fds)
    } }
    let long = [UInt8](repeating: 7, count: 40)
    _ = long.withUnsafeBytes { send(b, $0.baseAddress, 40, 0) }

    let batch = MessageBatch(slots: 2, slotSize: 16)
    var fds = [Int32](repeating: -1, count: Sys.maxPassedFDs)
    guard case .processed(2) = try sys.recvBatch(a, batch) else { Issue.record("a full batch of 2"); return }
    let m0 = fds.withUnsafeMutableBufferPointer { sys.takeMessage(batch, 0, fds: $0) }
    #expect(m0.count == 3 && m0.fdCount == 0 && !m0.truncated)
    #expect(Array(batch.payload(0, count: m0.count)) == Array("one".utf8))
    #expect(m0.credentials?.pid == getpid())
    let m1 = fds.withUnsafeMutableBufferPointer { sys.takeMessage(batch, 1, fds: $0) }
    #expect(m1.count == 3 && m1.fdCount == 1 && !m1.truncated)
    #expect(Array(batch.payload(1, count: m1.count)) == Array("two".utf8))
    var st1 = stat(), st2 = stat()
    #expect(fstat(fds[0], &st1) == 0 && fstat(p, &st2) == 0 && st1.st_ino == st2.st_ino)
    #expect(fcntl(fds[0], F_GETFD) & FD_CLOEXEC != 0)
    close(fds[0])
    // The rest: one message, cut to the slot and said so; fewer than the slots, so the queue
    // was empty after it.
    guard case .processed(1) = try sys.recvBatch(a, batch) else { Issue.record("a short batch of 1"); return }
    let m2 = fds.withUnsafeMutableBufferPointer { sys.takeMessage(batch, 0, fds: $0) }
    #expect(m2.truncated && m2.count == 16 && Array(batch.payload(0, count: m2.count)) == [UInt8](repeating: 7, count: 16))
    guard case .wouldBlock = try sys.recvBatch(a, batch) else { Issue.record("EAGAIN when empty"); return }
}

@Test func aPeersShutdownOfWritingIsRemembered() throws {
    let (loop, rec) = try makeLoop()
    let (a, b) = makePair()
    defer { close(b) }
    try Sys.setNonBlocking(a)
    let s = try loop.add(fd: a, kind: .connected, context: "a")
    _ = "hi".withCString { write(b, $0, 2) }
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["readable:a:2"] && !s.peerShutWrite && !s.hungUp)
    shutdown(b, Int32(SHUT_WR))
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(s.peerShutWrite && !s.hungUp)
}

/// Idle work: done a unit at a time only when nothing is ready and the loop would wait; an
/// event that arrives meanwhile ends it (the rest waits for the next idle moment); never when
/// the deadline has passed already.
@Test func idleWorkRunsOnlyWhileNothingIsReady() throws {
    let (loop, rec) = try makeLoop()
    let (a, b) = makePair()
    defer { close(b) }
    _ = try loop.add(fd: a, kind: .connected, context: "a")
    // Something ready: it comes first, no idle work before it.
    rec.idleWork = 5
    #expect(write(b, "x", 1) == 1)
    try loop.poll(deadline: nil)
    #expect(rec.log == ["readable:a:1"] && rec.idleWork == 5)
    // Nothing ready: units until an event arrives (written by the second unit).
    rec.log = []
    rec.onIdle = { if rec.idleWork == 3 { _ = write(b, "y", 1) } }
    try loop.poll(deadline: nil)
    #expect(rec.log == ["idle", "idle", "readable:a:1"] && rec.idleWork == 3)
    // Nothing ready, nothing arriving: the rest, then the wait (the deadline's timer).
    rec.log = []
    rec.onIdle = nil
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 5_000_000)
    #expect(rec.log == ["idle", "idle", "idle", "timer"] && rec.idleWork == 0)
    // A deadline already passed: the loop does not wait, so no idle work.
    rec.log = []
    rec.idleWork = 2
    try loop.poll(deadline: Sys.monotonicNanoseconds())
    #expect(rec.log == ["timer"] && rec.idleWork == 2)
    loop.closeAll()
}

/// An out-of-band byte (a unix stream's MSG_OOB) shows as EPOLLPRI, remembered on the socket;
/// with reads off it raises nothing (PRI travels with the read interest, or a byte the handler
/// cannot take yet would wake the loop for good).
@Test func anOutOfBandByteIsReportedAndQuietWhileReadsAreOff() throws {
    let (loop, rec) = try makeLoop()
    let (a, b) = makePair()
    defer { close(b) }
    try Sys.setNonBlocking(a)
    Sys.live.keepOutOfBandInline(a)
    let s = try loop.add(fd: a, kind: .connected, context: "a")
    loop.setNotifyReadable(s, false)
    _ = "x".withCString { send(b, $0, 1, Int32(MSG_OOB)) }
    #expect(Sys.live.atMark(a))
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 20_000_000)
    #expect(rec.log == ["timer"] && !s.urgentPending)
    loop.setNotifyReadable(s, true)
    try loop.poll(deadline: Sys.monotonicNanoseconds() + 1_000_000_000)
    #expect(rec.log == ["timer", "readable:a:1"] && s.urgentPending)
    #expect(!Sys.live.atMark(a))
}
