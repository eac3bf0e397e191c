import Foundation
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
}

/// One joined network's event loop: the only thread that touches its TAP fd and its stack.
///
/// Frames are read from the TAP until EAGAIN (bounded per pass so client sockets get their
/// turn), handed to the driver, and the loop then sleeps until epoll reports an fd or the stack's
/// next timer is due. Nothing polls on a fixed interval.
final class NetworkLoop: PhySocketHandler {
    enum Context {
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
    }

    let name: String
    let tapFD: Int32
    let inbox: Inbox<NetworkCommand>
    let logger: Logger
    let driver: StackDriver
    private var loop: PhyLoop<NetworkLoop>!
    private var running = true
    private let frameBuffer: UnsafeMutableRawBufferPointer
    private var tapSocket: PhySocket<Context>?
    /// Why the TAP stopped working, if it did.
    private var tapError: String?
    private var hub: InterceptHub?
    /// Frames taken from the TAP per readiness event before the loop looks at other fds.
    private let batch = 256

    /// `rpcPath`: where to listen for the intercept library (nil: no intercept, e.g. tests).
    init(name: String, tapFD: Int32, inbox: Inbox<NetworkCommand>, driver: StackDriver, logger: Logger,
         rpcPath: String? = nil, access: AccessList = AccessList()) throws(Errno) {
        self.name = name
        self.tapFD = tapFD
        self.inbox = inbox
        self.driver = driver
        self.logger = logger
        // Largest frame: MTU 10000 + Ethernet header, rounded up.
        frameBuffer = .allocate(byteCount: 16384, alignment: 16)
        loop = try PhyLoop<NetworkLoop>()
        loop.handler = self
        tapSocket = try loop.add(fd: tapFD, kind: .raw, context: .tap, ownsFD: false)
        if let rpcPath {
            let hub = try InterceptHub(network: name, path: rpcPath, access: access, loop: loop, driver: driver,
                                       logger: logger)
            self.hub = hub
            driver.eventSink = { [unowned hub] e in hub.stackEvent(e) }
            driver.onStackReplaced = { [unowned hub] in hub.stackReplaced() }
            driver.interceptedConnections = { [unowned hub] n, h in hub.connections(network: n, handles: &h) }
        }
    }

    deinit { frameBuffer.deallocate() }

    var waker: PhyWaker { loop.waker }

    static func now() -> Instant { Instant(nanoseconds: Sys.monotonicNanoseconds()) }

    func run() {
        driver.start(now: Self.now())
        while running {
            let now = Self.now()
            hub?.runTimers(now: now)
            var deadline = driver.poll(now: now)
            if let h = hub?.nextDeadline, deadline == nil || h < deadline! { deadline = h }
            do {
                try loop.poll(deadline: deadline?.nanoseconds)
            } catch {
                logger.error("network loop failed", metadata: ["network": "\(name)", "error": "\(error)"])
                break
            }
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

    func phyOnReadable(_ socket: PhySocket<Context>) {
        switch socket.context {
        case .tap:
            let now = Self.now()
            for _ in 0..<batch {
                let n = Glibc.read(tapFD, frameBuffer.baseAddress, frameBuffer.count)
                if n > 0 {
                    driver.receive(frame: UnsafeRawBufferPointer(rebasing: frameBuffer[0..<n]), now: now)
                    continue
                }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && errno != EAGAIN {
                    // The interface is gone (deleted behind our back: EBADFD) or broken: stop
                    // watching it instead of spinning, and let `ztctl list` say why.
                    let e = errno
                    tapError = "TAP \(name) failed: \(String(cString: strerror(e))) (errno \(e))"
                    logger.error("TAP read failed; network stopped", metadata: ["network": "\(name)", "errno": "\(e)"])
                    loop.close(socket)
                    tapSocket = nil
                }
                break
            }
        case .rpcListener:
            break
        case .rpc(let peer):
            hub?.readRPC(socket, peer)
        case .tcp(let c):
            hub?.pumpIn(c)
        case .acceptChannel(let c):
            hub?.acceptChannelReadable(c, socket)
        case .udp(let u):
            hub?.udpReadable(u, socket)
        }
    }

    func phyOnWritable(_ socket: PhySocket<Context>) { hub?.writable(socket) }

    func phyOnHangup(_ socket: PhySocket<Context>) { hub?.hangup(socket) }

    func phyOnClose(_ socket: PhySocket<Context>) {
        // Cleanup is explicit in the hub; only RPC peers are counted here.
        if case .rpc(let peer) = socket.context { hub?.peerClosed(peer) }
    }
    func phyOnAcceptAborted(_ context: Context) {
        if case .rpc(let peer) = context { hub?.peerClosed(peer) }
    }
    func phyOnTimer() {}

    func phyOnWake() {
        for command in inbox.drain() {
            switch command {
            case .stop:
                running = false
            case .reconfigure(let settings):
                driver.reconfigure(settings, now: Self.now())
            case .access(let list):
                hub?.access = list
            case .stats(let reply):
                var st = driver.stats
                st.error = tapError
                reply.fulfill(st)
            case .connections(let reply):
                reply.fulfill(driver.connections(network: name))
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
