import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// PhyLoop — one small epoll event loop with explicit callbacks (ZeroTier's Phy.hpp is the model).
//
// Contract:
// - A PhyLoop is owned by exactly one thread. Every method except `wake()` must be called on that
//   thread; `wake()` is the one thread-safe call (it writes the loop's eventfd).
// - Sockets are added with a kind (listener, stream, raw fd) and a typed context; each becomes a
//   `PhySocket` whose `context` the handler may change at will.
// - Callbacks: `phyOnAccept` for a listener with a pending connection (the loop accepts it, with
//   SOCK_NONBLOCK|SOCK_CLOEXEC, and hands over the new fd); `phyOnReadable` / `phyOnWritable` when
//   epoll reports them and the socket wants them (`setNotifyReadable` / `setNotifyWritable`);
//   `phyOnClose` exactly once for every socket that goes away, whether closed by `close(_:)`, by
//   the peer (HUP/ERR seen while nobody reads) or by loop shutdown; `phyOnWake` after `wake()`;
//   `phyOnTimer` when the deadline given to `poll` has passed; `phyOnIdle`, one unit of deferred
//   work at a time, when `poll` found nothing ready and would wait (and the handler says it has
//   some: `phyHasIdleWork`).
// - Closing inside any callback is safe: `close(_:)` unregisters and closes the fd at once (so no
//   further events arrive for it), marks the entry dead and defers the `phyOnClose` call and the
//   slot's reuse to the end of the current pass. Stale epoll events are recognised by a
//   generation number packed into `epoll_event.data.u64` and dropped.
// - No fixed polling interval: `poll(deadline:)` sleeps until an fd is ready or the deadline (the
//   stack's next timer) passes.

/// What a registered fd is, which decides how readiness is turned into callbacks.
public enum PhySocketKind: Sendable {
    /// A listening socket; readiness means "accept".
    case listener
    /// A connected stream or seqpacket socket; readiness means data or space.
    case connected
    /// Any other fd (TAP, signalfd, timerfd); readiness is passed through as readable/writable.
    case raw
}

public final class PhySocket<Context> {
    public let fd: Int32
    public let kind: PhySocketKind
    public var context: Context
    @usableFromInline var slot: Int
    @usableFromInline var generation: UInt32
    @usableFromInline var interest: UInt32
    public internal(set) var isClosed = false
    /// Removed from epoll after a hangup seen with read interest off (see `phyOnHangup`).
    public internal(set) var suspended = false
    /// epoll reported EPOLLHUP for it: the peer is gone for good (a stream socket's hang-up
    /// never clears), so a handler need not poll to learn it. False says nothing.
    public internal(set) var hungUp = false
    /// epoll reported EPOLLRDHUP or EPOLLHUP: the peer shut its writing or is gone (sticky too), so
    /// a read that comes back short may be followed by an EOF worth finding now.
    public internal(set) var peerShutWrite = false
    /// epoll reported EPOLLPRI: the peer sent an out-of-band byte (a unix stream's MSG_OOB) that
    /// may still be ahead. Set by the loop, cleared by the handler once it found the byte.
    public var urgentPending = false
    /// The loop's fd is the only reference to its file (a socketpair end made here and never
    /// passed on): closing it takes it out of epoll, so `close` skips the EPOLL_CTL_DEL. Never
    /// set it for an fd a client handed over: a copy it kept would stay registered.
    public var soleReference = false
    /// When true the loop closes the fd on `close`; false for fds the owner closes itself.
    public let ownsFD: Bool

    /// Whether `phyOnReadable` is wanted (read interest on).
    public var wantsReadable: Bool { interest & UInt32(EPOLLIN.rawValue) != 0 }
    /// Whether `phyOnWritable` is wanted (write interest on).
    public var wantsWritable: Bool { interest & UInt32(EPOLLOUT.rawValue) != 0 }

    init(fd: Int32, kind: PhySocketKind, context: Context, slot: Int, generation: UInt32, interest: UInt32, ownsFD: Bool) {
        self.fd = fd
        self.kind = kind
        self.context = context
        self.slot = slot
        self.generation = generation
        self.interest = interest
        self.ownsFD = ownsFD
    }
}

/// The callbacks a PhyLoop delivers. All are called on the loop's thread.
public protocol PhySocketHandler: AnyObject {
    associatedtype Context
    /// A listener accepted `fd` (non-blocking, close-on-exec). Return the context for the new
    /// socket to have the loop watch it, or nil to have the loop close it (e.g. peer not allowed
    /// — the handler may write a refusal first).
    func phyOnAccept(listener: PhySocket<Context>, fd: Int32) -> Context?
    func phyOnReadable(_ socket: PhySocket<Context>)
    func phyOnWritable(_ socket: PhySocket<Context>)
    /// The socket is gone (closed by us, by the peer, or by shutdown). Called exactly once.
    func phyOnClose(_ socket: PhySocket<Context>)
    /// `wake()` was called from some thread.
    func phyOnWake()
    /// The deadline passed to `poll` was reached.
    func phyOnTimer()
    /// The peer hung up (or the fd errored) while read interest was off (back-pressure). The loop
    /// has stopped watching the fd so a level-triggered HUP cannot spin; the socket stays open
    /// until the handler drains what it still wants and calls `close`. Turning read interest back
    /// on resumes watching.
    func phyOnHangup(_ socket: PhySocket<Context>)
    /// `phyOnAccept` returned a context but the loop could not watch the fd (epoll refused it):
    /// the fd is closed and no `phyOnClose` will come, so undo what `phyOnAccept` counted.
    func phyOnAcceptAborted(_ context: Context)
    /// accept failed for want of fds (EMFILE/ENFILE): the loop dropped the pending connection
    /// with its reserve fd, or paused the listener (`dropped` false) until fds are freed. For
    /// a (rate-limited) log line; the loop has already made sure it does not spin.
    func phyOnAcceptFailed(listener: PhySocket<Context>, errno: Int32, dropped: Bool)
    /// A connection was accepted and is watched now: a handler that must see the first message
    /// of a new connection before later events of older ones (their order on the wire) reads it
    /// here rather than waiting for the next epoll turn.
    func phyOnAccepted(_ socket: PhySocket<Context>)
    /// Whether the handler has deferred work for the loop's idle moments (`phyOnIdle`). Asked
    /// each time `poll` would wait: keep it cheap.
    var phyHasIdleWork: Bool { get }
    /// One small unit of deferred work, done when `poll` found nothing ready and would wait (it
    /// looks again before each further unit, so a unit delays an event by at most its own
    /// length). Returns false when there was nothing left to do.
    func phyOnIdle() -> Bool
}

extension PhySocketHandler {
    public var phyHasIdleWork: Bool { false }
    public func phyOnIdle() -> Bool { false }
    public func phyOnHangup(_ socket: PhySocket<Context>) {}
    public func phyOnAcceptAborted(_ context: Context) {}
    public func phyOnAcceptFailed(listener: PhySocket<Context>, errno: Int32, dropped: Bool) {}
    public func phyOnAccepted(_ socket: PhySocket<Context>) {}
}

public final class PhyLoop<Handler: PhySocketHandler> {
    public typealias Socket = PhySocket<Handler.Context>

    /// The handler usually owns the loop, so the loop must not retain it.
    public unowned var handler: Handler!
    /// The syscall layer for accept and close (a test seam).
    public let sys: Sys
    let epfd: Int32   // internal: tests read its /proc fdinfo
    private let wakeFD: Int32
    private var slots: [Socket?] = []
    private var freeSlots: [Int] = []
    private var generations: [UInt32] = []
    private var pendingClose: [Socket] = []
    private var events: UnsafeMutablePointer<epoll_event>
    private var eventCapacity: Int
    public private(set) var socketCount = 0
    /// One fd held back for EMFILE: a listener with a pending connection stays readable, so a
    /// loop that cannot accept would spin. Closing the reserve frees one slot to accept the
    /// connection and drop it; then the reserve is taken again.
    private var reserveFD: Int32 = -1
    /// Listeners paused because not even the reserve was available; resumed when a socket of
    /// this loop closes, or after `pauseRetryNs` at the latest (fds may be freed elsewhere).
    private var pausedListeners: [Socket] = []
    private var pausedUntil: UInt64?
    /// Busy polling (like the kernel's SO_BUSY_POLL): for this long after the last event the loop
    /// asks epoll without sleeping before it blocks. A sleeping loop thread costs a wake-up per
    /// event (an IPI on a VM's idle vCPU: tens of µs), which request/response traffic pays twice
    /// per round trip; spinning trades CPU for that latency. 0 (the default): never spin.
    public var busyPollNanos: UInt64 = 0
    /// When the last poll that returned events did (monotonic ns).
    private var lastActivity: UInt64 = 0
    /// Polls that spun (`busyPollNanos`), and those of them that found events without sleeping.
    public private(set) var busyPolls: UInt64 = 0
    /// epoll_waits that returned: a socket emptied since the current one returned holds none
    /// of the bytes its (level-triggered) readiness in this turn was reported for.
    public private(set) var polls: UInt64 = 0
    public private(set) var busyPollHits: UInt64 = 0
    static var pauseRetryNs: UInt64 { 1_000_000_000 }

    private static var wakeToken: UInt64 { UInt64.max }

    public init(sys: Sys = .live) throws(Errno) {
        self.sys = sys
        epfd = cshim_epoll_create()
        guard epfd >= 0 else { throw Errno(rawValue: errno) }
        do {
            wakeFD = try Sys.eventfd()
        } catch {
            Glibc.close(epfd)
            throw error
        }
        eventCapacity = 256
        events = .allocate(capacity: eventCapacity)
        guard cshim_epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, UInt32(EPOLLIN.rawValue), Self.wakeToken) == 0 else {
            let e = errno
            Glibc.close(wakeFD)
            Glibc.close(epfd)
            events.deallocate()
            throw Errno(rawValue: e)
        }
        reserveFD = Self.takeReserve(like: wakeFD)
    }

    /// A spare fd (a duplicate of the wake eventfd: no path lookup, nothing to configure).
    private static func takeReserve(like fd: Int32) -> Int32 { fcntl(fd, F_DUPFD_CLOEXEC, 0) }

    deinit {
        if reserveFD >= 0 { Glibc.close(reserveFD) }
        events.deallocate()
        Glibc.close(wakeFD)
        Glibc.close(epfd)
    }

    /// Thread-safe: interrupts `poll` and makes the loop call `phyOnWake`.
    public var waker: PhyWaker { PhyWaker(fd: wakeFD) }

    /// Registers `fd`. Listeners and raw fds start with read interest; streams with read interest.
    @discardableResult
    public func add(fd: Int32, kind: PhySocketKind, context: Handler.Context, ownsFD: Bool = true,
                    readable: Bool = true, writable: Bool = false) throws(Errno) -> Socket {
        let slot: Int
        if let s = freeSlots.popLast() {
            slot = s
        } else {
            slot = slots.count
            slots.append(nil)
            generations.append(0)
        }
        generations[slot] &+= 1
        let gen = generations[slot]
        var interest: UInt32 = 0
        if readable { interest |= Self.readInterest }
        if writable { interest |= UInt32(EPOLLOUT.rawValue) }
        let token = UInt64(slot) | UInt64(gen) << 32
        guard cshim_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, interest, token) == 0 else {
            let e = errno
            freeSlots.append(slot)
            throw Errno(rawValue: e)
        }
        let sock = Socket(fd: fd, kind: kind, context: context, slot: slot, generation: gen,
                          interest: interest, ownsFD: ownsFD)
        slots[slot] = sock
        socketCount += 1
        return sock
    }

    /// Starts or stops `phyOnWritable` callbacks for `socket` (Phy.hpp's setNotifyWritable).
    public func setNotifyWritable(_ socket: Socket, _ on: Bool) {
        update(socket, bit: UInt32(EPOLLOUT.rawValue), on: on)
    }

    /// Starts or stops `phyOnReadable` callbacks (back-pressure: stop reading an app socket whose
    /// data the stack cannot take yet).
    public func setNotifyReadable(_ socket: Socket, _ on: Bool) {
        update(socket, bit: Self.readInterest, on: on)
    }

    // RDHUP and PRI travel with IN: when reads are off, a level-triggered RDHUP or PRI (an
    // out-of-band byte not read yet) must not keep firing.
    private static var readInterest: UInt32 { UInt32(EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLPRI.rawValue) }

    private func update(_ socket: Socket, bit: UInt32, on: Bool) {
        guard !socket.isClosed else { return }
        let new = on ? socket.interest | bit : socket.interest & ~bit
        if new == socket.interest && !socket.suspended { return }
        socket.interest = new
        let token = UInt64(socket.slot) | UInt64(socket.generation) << 32
        if socket.suspended {
            // Only resume once the handler wants to read again (it will see the hangup then).
            guard new & Self.readInterest != 0 else { return }
            socket.suspended = false
            _ = cshim_epoll_ctl(epfd, EPOLL_CTL_ADD, socket.fd, new, token)
        } else {
            _ = cshim_epoll_ctl(epfd, EPOLL_CTL_MOD, socket.fd, new, token)
        }
    }

    /// Closes `socket` now (fd unregistered and closed); `phyOnClose` follows at the end of the
    /// current pass (or at once when called outside `poll`). Idempotent.
    public func close(_ socket: Socket) {
        guard !socket.isClosed else { return }
        socket.isClosed = true
        if !socket.suspended && !(socket.soleReference && socket.ownsFD) {
            _ = cshim_epoll_ctl(epfd, EPOLL_CTL_DEL, socket.fd, 0, 0)
        }
        if socket.ownsFD { sys.close(socket.fd) }
        slots[socket.slot] = nil
        socketCount -= 1
        pendingClose.append(socket)
        if !inPoll { reap() }
    }

    private var inPoll = false

    private func reap() {
        let freed = !pendingClose.isEmpty
        while let s = pendingClose.popLast() {
            freeSlots.append(s.slot)
            handler.phyOnClose(s)
        }
        if freed { resumeListeners() }
    }

    /// fds were freed (or the retry time came): take the reserve again and let paused listeners
    /// accept; if fds are still short they pause again at the next EMFILE.
    private func resumeListeners() {
        if reserveFD < 0 { reserveFD = Self.takeReserve(like: wakeFD) }
        guard !pausedListeners.isEmpty else { return }
        let paused = pausedListeners
        pausedListeners.removeAll()
        pausedUntil = nil
        for l in paused where !l.isClosed { setNotifyReadable(l, true) }
    }

    /// Waits for activity until `deadline` (monotonic ns; nil = no deadline) and dispatches it.
    /// Returns the number of events handled.
    @discardableResult
    public func poll(deadline: UInt64?) throws(Errno) -> Int {
        var timeout: Int32 = -1
        var wake = deadline
        if let p = pausedUntil, wake == nil || p < wake! { wake = p }
        if let d = wake {
            let now = Sys.monotonicNanoseconds()
            if d <= now {
                timeout = 0
            } else {
                // Round up so we never wake before the deadline and spin.
                let ms = (d - now + 999_999) / 1_000_000
                timeout = ms > UInt64(Int32.max) ? Int32.max : Int32(ms)
            }
        }
        var n: Int32 = 0
        var waited = false
        if timeout != 0 && handler.phyHasIdleWork {
            // Nothing was due: deferred work now, a unit at a time, while nothing is ready.
            repeat {
                n = cshim_epoll_wait(epfd, events, Int32(eventCapacity), 0)
                if n != 0 { waited = true; break }
            } while handler.phyOnIdle()
        }
        if busyPollNanos > 0 && timeout != 0 && !waited {
            let start = Sys.monotonicNanoseconds()
            if start &- lastActivity < busyPollNanos {
                var until = lastActivity &+ busyPollNanos
                if let d = wake, d < until { until = d }
                repeat {
                    n = cshim_epoll_wait(epfd, events, Int32(eventCapacity), 0)
                } while n == 0 && Sys.monotonicNanoseconds() < until
                waited = n != 0
                busyPolls &+= 1
                if n > 0 { busyPollHits &+= 1 }
                if n == 0, let d = wake {
                    let now = Sys.monotonicNanoseconds()
                    timeout = d <= now ? 0 : Int32(min((d - now + 999_999) / 1_000_000, UInt64(Int32.max)))
                }
            }
        }
        if !waited { n = cshim_epoll_wait(epfd, events, Int32(eventCapacity), timeout) }
        if n < 0 {
            if errno == EINTR { return 0 }
            throw Errno(rawValue: errno)
        }
        if n > 0 && busyPollNanos > 0 { lastActivity = Sys.monotonicNanoseconds() }
        polls &+= 1
        inPoll = true
        defer {
            inPoll = false
            reap()
        }
        for i in 0..<Int(n) {
            let ev = events[i]
            let token = ev.data.u64
            if token == Self.wakeToken {
                Sys.drainEventFD(wakeFD)
                handler.phyOnWake()
                continue
            }
            let slot = Int(token & 0xFFFF_FFFF)
            let gen = UInt32(token >> 32)
            guard slot < slots.count, let sock = slots[slot], sock.generation == gen else { continue }
            dispatch(sock, ev.events)
        }
        if Int(n) == eventCapacity {
            // Busy: grow once so a burst is handled in fewer passes.
            events.deallocate()
            eventCapacity *= 2
            events = .allocate(capacity: eventCapacity)
        }
        if let p = pausedUntil, Sys.monotonicNanoseconds() >= p { resumeListeners() }
        if let d = deadline, Sys.monotonicNanoseconds() >= d {
            handler.phyOnTimer()
        }
        return Int(n)
    }

    private func dispatch(_ sock: Socket, _ bits: UInt32) {
        let readBits = UInt32(EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue | EPOLLPRI.rawValue)
        let hangBits = UInt32(EPOLLHUP.rawValue | EPOLLERR.rawValue)
        switch sock.kind {
        case .listener:
            if bits & readBits != 0 { acceptAll(sock) }
        case .connected, .raw:
            if bits & UInt32(EPOLLHUP.rawValue) != 0 { sock.hungUp = true }
            if bits & UInt32(EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0 { sock.peerShutWrite = true }
            if bits & UInt32(EPOLLPRI.rawValue) != 0 { sock.urgentPending = true }
            if bits & UInt32(EPOLLOUT.rawValue) != 0, sock.interest & UInt32(EPOLLOUT.rawValue) != 0 {
                handler.phyOnWritable(sock)
            }
            if sock.isClosed { return }
            if bits & readBits != 0 {
                if sock.interest & UInt32(EPOLLIN.rawValue) != 0 {
                    handler.phyOnReadable(sock)
                } else if bits & hangBits != 0 {
                    // HUP/ERR cannot be masked in epoll: stop watching so it cannot spin.
                    sock.suspended = true
                    _ = cshim_epoll_ctl(epfd, EPOLL_CTL_DEL, sock.fd, 0, 0)
                    handler.phyOnHangup(sock)
                }
            }
        }
    }

    /// Accepts what waits on `listener` now, as its readiness would on the next turn.
    public func acceptPending(_ listener: Socket) {
        guard !listener.isClosed, listener.kind == .listener else { return }
        acceptAll(listener)
    }

    private func acceptAll(_ listener: Socket) {
        // Bounded per pass so one busy listener cannot starve the rest of the loop.
        for _ in 0..<64 {
            let fd: Int32
            do {
                guard case .processed(let f) = try sys.accept(listener.fd) else { return }
                fd = f
            } catch {
                if error == .tooManyOpenFiles || error.rawValue == ENFILE || error == .noBufferSpace
                    || error == .noMemory {
                    if outOfFDs(listener, error.rawValue) { continue }
                }
                return
            }
            guard let ctx = handler.phyOnAccept(listener: listener, fd: fd) else {
                sys.close(fd)
                continue
            }
            do {
                let s = try add(fd: fd, kind: .connected, context: ctx)
                handler.phyOnAccepted(s)
            } catch {
                sys.close(fd)
                handler.phyOnAcceptAborted(ctx)
            }
            if listener.isClosed { return }
        }
    }

    /// accept failed for want of resources. With the reserve fd: free it, accept the pending
    /// connection and drop it (returns true: the listener may be drained further). Without it:
    /// stop watching the listener until fds come back (returns false). Either way no spin.
    private func outOfFDs(_ listener: Socket, _ err: Int32) -> Bool {
        if reserveFD >= 0 {
            sys.close(reserveFD)
            reserveFD = -1
            var dropped = false
            if case .processed(let fd)? = try? sys.accept(listener.fd) {
                sys.close(fd)
                dropped = true
            }
            reserveFD = Self.takeReserve(like: wakeFD)
            if dropped {
                handler.phyOnAcceptFailed(listener: listener, errno: err, dropped: true)
                return true
            }
        }
        setNotifyReadable(listener, false)
        if !pausedListeners.contains(where: { $0 === listener }) { pausedListeners.append(listener) }
        if pausedUntil == nil { pausedUntil = Sys.monotonicNanoseconds() &+ Self.pauseRetryNs }
        handler.phyOnAcceptFailed(listener: listener, errno: err, dropped: false)
        return false
    }

    /// Closes every socket (each gets its `phyOnClose`). Used on shutdown.
    public func closeAll() {
        for case let s? in slots { close(s) }
        reap()
    }

    /// Visits every live socket.
    public func forEach(_ body: (Socket) -> Void) {
        for case let s? in slots where !s.isClosed { body(s) }
    }
}

/// The thread-safe half of a PhyLoop: writes its eventfd.
public struct PhyWaker: Sendable {
    let fd: Int32
    public func wake() { Sys.signalEventFD(fd) }
}
