import CShims
import Foundation
import LinuxNet
import Logging
import NetStack
import PhyLoop
import SystemPackage
import ZTControl

/// What the main thread can ask of a running network.
enum NetworkCommand: Sendable {
    case stop
    case reconfigure(StackSettings)
    case stats(Reply<NetworkStats>)
    case connections(Reply<[ConnectionInfo]>)
    case access(AccessList)
    /// A new capture reader: the daemon end of its socketpair (the loop owns it from now on;
    /// false: it was closed, e.g. the loop is stopping).
    case capture(fd: Int32, Reply<Bool>)
    case metrics(Reply<NetworkMetrics>)
}

/// What a socket on a network loop is.
enum LoopContext {
    case tap
    /// RUN_DIR/NAME.sock, the intercept library's RPC listener.
    case rpcListener
    case rpc(RPCPeer)
    /// Daemon end of an intercepted TCP socket's data socketpair.
    case tcp(Connection)
    /// Daemon end of a listening socket's accept channel.
    case acceptChannel(Connection)
    /// Daemon end of an intercepted UDP socket's SEQPACKET pair.
    case udp(UDPConnection)
    /// Daemon end of a `ztctl capture` socket (watched only to see the reader leave).
    case capture(FrameCapture)
}

/// One joined network's event loop: the only thread that touches its TAP fd and its stack.
///
/// Frames are read from the TAP until EAGAIN (bounded per pass so client sockets get their
/// turn), handed to the driver, and the loop then sleeps until epoll reports an fd or the stack's
/// next timer is due. Nothing polls on a fixed interval.
final class NetworkLoop: PhySocketHandler {
    typealias Context = LoopContext

    let name: String
    let device: any FrameDevice
    let inbox: Inbox<NetworkCommand>
    let logger: Logger
    let driver: StackDriver
    private var loop: PhyLoop<NetworkLoop>!
    private(set) var running = true
    private let frameBuffer: UnsafeMutableRawBufferPointer
    private var tapSocket: PhySocket<Context>?
    /// Why the TAP stopped working, if it did.
    private var tapError: String?
    private(set) var hub: InterceptHub?
    /// Frames taken from the TAP per readiness event before the loop looks at other fds.
    private let batch = 256
    static let frameBufferSize = 65536 &+ 1024

    /// `rpcPath`: where to listen for the intercept library (nil: no intercept, e.g. tests).
    init(name: String, device: any FrameDevice, inbox: Inbox<NetworkCommand>, driver: StackDriver, logger: Logger,
         rpcPath: String? = nil, access: AccessList = AccessList(), sys: Sys = .live,
         budgets: UserBudgets = UserBudgets(), busyPoll: Int = 0) throws(Errno) {
        self.name = name
        self.device = device
        self.inbox = inbox
        self.driver = driver
        self.logger = logger
        // Largest frame: a 64 KiB super-frame or MTU 65521, Ethernet header, virtio header.
        frameBuffer = .allocate(byteCount: Self.frameBufferSize, alignment: 16)
        loop = try PhyLoop<NetworkLoop>(sys: sys)
        loop.handler = self
        loop.busyPollNanos = UInt64(max(busyPoll, 0)) &* 1000
        tapSocket = try loop.add(fd: device.fd, kind: .raw, context: .tap, ownsFD: false)
        if let rpcPath {
            let hub = try InterceptHub(network: name, path: rpcPath, access: access, loop: loop, driver: driver,
                                       logger: logger, interfaceName: device.name, budgets: budgets)
            self.hub = hub
            driver.eventSink = { [unowned hub] e in hub.stackEvent(e) }
            driver.onStackReplaced = { [unowned hub] in hub.stackReplaced() }
            driver.interceptedConnections = { [unowned hub] n, h in hub.connections(network: n, handles: &h) }
        }
    }

    deinit { frameBuffer.deallocate() }

    var waker: PhyWaker { loop.waker }
    /// The loop's busy polls and those that found work (metrics).
    var busyPollCounts: (polls: UInt64, hits: UInt64) { (loop.busyPolls, loop.busyPollHits) }

    static func now() -> Instant { Instant(nanoseconds: Sys.monotonicNanoseconds()) }

    func run() {
        driver.start(now: Self.now())
        while running {
            do {
                try turn()
            } catch {
                logger.error("network loop failed", metadata: ["network": "\(name)", "error": "\(error)"])
                break
            }
        }
        finish()
    }

    /// One pass: due timers, the stack's output, then wait (at most until `maxWait` ns from now,
    /// if given) and dispatch what epoll reports.
    func turn(maxWait: UInt64? = nil) throws(Errno) {
        let now = Self.now()
        hub?.runTimers(now: now)
        var deadline = driver.poll(now: now)?.nanoseconds
        if let h = hub?.nextDeadline, deadline == nil || h.nanoseconds < deadline! { deadline = h.nanoseconds }
        if let m = maxWait {
            let cap = now.nanoseconds &+ m
            if deadline == nil || cap < deadline! { deadline = cap }
        }
        try loop.poll(deadline: deadline)
    }

    /// Closes everything the loop owns (after `run`, or by a test that drove `turn` itself).
    func finish() {
        // Commands that came too late: a capture fd posted now would leak.
        for case .capture(let fd, let reply) in inbox.drain() {
            loop.sys.close(fd)
            reply.fulfill(false)
        }
        hub?.shutdown()
        loop.closeAll()
        driver.eventSink = nil
        driver.onStackReplaced = nil
        driver.interceptedConnections = nil
    }

    func phyOnAccept(listener: PhySocket<Context>, fd: Int32) -> Context? {
        guard case .rpcListener = listener.context else { return nil }
        return hub?.acceptPeer(fd: fd)
    }

    /// A process's one-way channel is new when it sends its first option, while its session (an
    /// older connection) may already hold the request that follows it: the channel's message
    /// is read at accept, before this turn's later events, so it applies first (ztrpc.h).
    func phyOnAccepted(_ socket: PhySocket<Context>) {
        guard case .rpc = socket.context, !socket.isClosed else { return }
        hub?.readable(socket)
    }

    func phyOnReadable(_ socket: PhySocket<Context>) {
        guard case .tap = socket.context else {
            if case .capture = socket.context { loop.close(socket) } else { hub?.readable(socket) }
            return
        }
        let now = Self.now()
        let captures = driver.captures
        // With IFF_VNET_HDR every frame starts with the virtio header; captures get the frame.
        let skip = device.offloads.contains(.vnetHeader) ? VirtioNetHeader.length : 0
        for _ in 0..<batch {
            do {
                guard let n = try device.read(into: frameBuffer), n > 0 else { return }
                let frame = UnsafeRawBufferPointer(rebasing: frameBuffer[0..<n])
                if !captures.isEmpty, n > skip {
                    captures.record(UnsafeRawBufferPointer(rebasing: frameBuffer[skip..<n]), outbound: false)
                }
                driver.receive(frame: frame, now: now)
            } catch {
                // The interface is gone (deleted behind our back: EBADFD) or broken: stop
                // watching it instead of spinning, and let `ztctl list` say why.
                tapError = "TAP \(name) failed: \(String(cString: strerror(error.errno))) (errno \(error.errno))"
                logger.error("TAP read failed; network stopped", metadata: ["network": "\(name)", "errno": "\(error.errno)"])
                loop.close(socket)
                tapSocket = nil
                return
            }
        }
    }

    func phyOnWritable(_ socket: PhySocket<Context>) { hub?.writable(socket) }

    func phyOnHangup(_ socket: PhySocket<Context>) {
        if case .capture = socket.context { loop.close(socket) } else { hub?.hangup(socket) }
    }

    func phyOnClose(_ socket: PhySocket<Context>) {
        // Cleanup is explicit in the hub; only RPC peers are counted here.
        if case .rpc(let peer) = socket.context { hub?.peerClosed(peer) }
        if case .capture(let c) = socket.context { driver.captures.remove(c) }
    }

    func phyOnAcceptAborted(_ context: Context) {
        if case .rpc(let peer) = context { hub?.peerClosed(peer) }
    }

    func phyOnTimer() {}

    /// Registers a capture reader's socket: read interest only to notice the hang-up.
    private func addCapture(_ fd: Int32) -> Bool {
        let c = driver.captures.add(fd)
        do {
            try loop.add(fd: fd, kind: .connected, context: .capture(c))
            return true
        } catch {
            driver.captures.remove(c)
            loop.sys.close(fd)
            return false
        }
    }

    private var acceptThrottle = LogThrottle()

    func phyOnAcceptFailed(listener: PhySocket<Context>, errno: Int32, dropped: Bool) {
        guard let suppressed = acceptThrottle.admit("accept") else { return }
        logger.warning("rpc: out of file descriptors: \(dropped ? "dropped a pending request" : "RPC listener paused until fds are freed")",
                       metadata: ["network": "\(name)", "errno": "\(errno)", "suppressed": "\(suppressed)"])
    }

    /// Idle moments make the socketpairs accepted connections will need (SparePairs.swift).
    var phyHasIdleWork: Bool { hub?.tcp.spares.wantsMore ?? false }
    func phyOnIdle() -> Bool { hub?.tcp.makeSpare() ?? false }

    func phyOnWake() {
        for command in inbox.drain() {
            switch command {
            case .stop:
                running = false
            case .reconfigure(let settings):
                driver.reconfigure(settings, now: Self.now())
                loop.busyPollNanos = UInt64(max(settings.busyPoll, 0)) &* 1000
            case .access(let list):
                hub?.access.reset(list)
            case .stats(let reply):
                var st = driver.stats
                st.error = tapError
                reply.fulfill(st)
            case .connections(let reply):
                reply.fulfill(driver.connections(network: name))
            case .capture(let fd, let reply):
                reply.fulfill(addCapture(fd))
            case .metrics(let reply):
                var m = metricsSnapshot()
                m.tapError = tapError
                reply.fulfill(m)
            }
        }
    }
}
