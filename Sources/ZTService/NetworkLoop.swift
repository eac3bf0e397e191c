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
}

/// One joined network's event loop: the only thread that touches its TAP fd and its stack.
///
/// Frames are read from the TAP until EAGAIN (bounded per pass so client sockets get their
/// turn), handed to the driver, and the loop then sleeps until epoll reports an fd or the stack's
/// next timer is due. Nothing polls on a fixed interval.
final class NetworkLoop: PhySocketHandler {
    enum Context {
        case tap
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
    /// Frames taken from the TAP per readiness event before the loop looks at other fds.
    private let batch = 256

    init(name: String, tapFD: Int32, inbox: Inbox<NetworkCommand>, driver: StackDriver, logger: Logger) throws(Errno) {
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
    }

    deinit { frameBuffer.deallocate() }

    var waker: PhyWaker { loop.waker }

    static func now() -> Instant { Instant(nanoseconds: Sys.monotonicNanoseconds()) }

    func run() {
        driver.start(now: Self.now())
        while running {
            let deadline = driver.poll(now: Self.now())
            do {
                try loop.poll(deadline: deadline?.nanoseconds)
            } catch {
                logger.error("network loop failed", metadata: ["network": "\(name)", "error": "\(error)"])
                break
            }
        }
        loop.closeAll()
    }

    func phyOnAccept(listener: PhySocket<Context>, fd: Int32) -> Context? { nil }

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
        }
    }

    func phyOnWritable(_ socket: PhySocket<Context>) {}
    func phyOnClose(_ socket: PhySocket<Context>) {}
    func phyOnTimer() {}

    func phyOnWake() {
        for command in inbox.drain() {
            switch command {
            case .stop:
                running = false
            case .reconfigure(let settings):
                driver.reconfigure(settings, now: Self.now())
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
