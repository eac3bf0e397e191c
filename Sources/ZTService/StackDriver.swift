import CShims
import LinuxNet
import Logging
import NetStack
import ZTControl

/// Everything a network's stack needs to know, derived from its config; Sendable so the main
/// thread can hand it to the network thread.
struct StackSettings: Sendable, Equatable {
    var stackMAC: MACAddress
    var mtu: Int
    var addresses: [IPv4CIDR]
    var gateway: IPv4Address?
    var services: [String]
    var tcpReceiveBuffer: Int
    var tcpSendBuffer: Int
    var maxConnections: Int
}

struct NetworkStats: Sendable {
    var framesIn: UInt64 = 0
    var framesOut: UInt64 = 0
    var framesDropped: UInt64 = 0
    var connections: Int = 0
    /// Set when the network's TAP failed (e.g. the interface was deleted from outside).
    var error: String?
}

/// Writes frames to the TAP. A full TAP queue drops the frame, as a NIC would; TCP recovers.
final class TapSink: FrameSink {
    let device: any FrameDevice
    var framesOut: UInt64 = 0
    var dropped: UInt64 = 0
    init(device: any FrameDevice) { self.device = device }
    func sendFrame(_ frame: UnsafeRawBufferPointer) {
        if (try? device.write(frame)) == true { framesOut &+= 1 } else { dropped &+= 1 }
    }
}

/// The seam between a network loop (TAP fd, client sockets, timers) and the stack that answers
/// the frames. The loop owns the I/O; the driver owns protocol state.
protocol StackDriver: AnyObject {
    func start(now: Instant)
    func receive(frame: UnsafeRawBufferPointer, now: Instant)
    /// Runs due timers; returns the next deadline.
    func poll(now: Instant) -> Instant?
    func reconfigure(_ settings: StackSettings, now: Instant)
    var stats: NetworkStats { get }
    func connections(network: String) -> [ConnectionInfo]
    /// The stack intercepted sockets attach to (nil for a driver without one).
    var netStack: NetStack? { get }
    /// Receives the stack's socket events (intercepted sockets) after every poll.
    var eventSink: ((SocketEvent) -> Void)? { get set }
    /// Called after the stack was replaced by a new one (its sockets are gone).
    var onStackReplaced: (() -> Void)? { get set }
    /// Intercepted sockets, listed with their owners by `connections` (set by the loop).
    var interceptedConnections: ((String, inout Set<SocketHandle>) -> [ConnectionInfo])? { get set }
}

func makeStackDriver(settings: StackSettings, device: any FrameDevice, logger: Logger) -> StackDriver {
    NetStackDriver(settings: settings, sink: TapSink(device: device), logger: logger)
}

/// The real driver: NetStack answering the TAP's frames. Connections of intercepted apps attach
/// here (issue 4); the built-in diagnostic services run inside the stack.
final class NetStackDriver: StackDriver {
    private var stack: NetStack
    private var settings: StackSettings
    private let sink: TapSink
    private let logger: Logger
    private var random: XorShiftRandom
    var eventSink: ((SocketEvent) -> Void)?
    var onStackReplaced: (() -> Void)?
    var interceptedConnections: ((String, inout Set<SocketHandle>) -> [ConnectionInfo])?
    var netStack: NetStack? { stack }

    init(settings: StackSettings, sink: TapSink, logger: Logger) {
        self.settings = settings
        self.sink = sink
        self.logger = logger
        // ISNs, ephemeral ports and SYN-cookie secrets must be unpredictable: seed from the OS.
        var system = SystemRandomNumberGenerator()
        random = XorShiftRandom(seed: system.next())
        stack = NetStackDriver.makeStack(settings, sink: sink, random: &random)
    }

    static func makeStack(_ s: StackSettings, sink: TapSink, random: inout XorShiftRandom) -> NetStack {
        var tcp = TCPConfig()
        tcp.receiveBufferSize = s.tcpReceiveBuffer
        tcp.sendBufferSize = s.tcpSendBuffer
        tcp.maxConnections = s.maxConnections
        let services = Set(s.services.compactMap(DiagnosticService.init(rawValue:)))
        let config = StackConfig(mac: s.stackMAC, mtu: s.mtu, addresses: s.addresses, gateway: s.gateway,
                                 tcp: tcp, services: services)
        return NetStack(config: config, sink: sink, random: XorShiftRandom(seed: random.next()))
    }

    func start(now: Instant) { stack.up(now: now) }

    func receive(frame: UnsafeRawBufferPointer, now: Instant) { stack.receive(frame: frame, now: now) }

    func poll(now: Instant) -> Instant? {
        var next = stack.poll(now: now)
        // Reacting to events (consume, commitSend, accept) only marks sockets dirty: poll again
        // so window updates and new data go out in this pass, a bounded number of times.
        for _ in 0..<4 {
            var any = false
            stack.drainEvents { e in
                any = true
                eventSink?(e)
            }
            if !any { return next }
            next = stack.poll(now: now)
        }
        return now
    }

    func reconfigure(_ new: StackSettings, now: Instant) {
        let old = settings
        settings = new
        if old.services != new.services || old.tcpReceiveBuffer != new.tcpReceiveBuffer
            || old.tcpSendBuffer != new.tcpSendBuffer || old.maxConnections != new.maxConnections
            || old.gateway != new.gateway || old.stackMAC != new.stackMAC {
            // These shape the stack itself: start a fresh one (its connections are reset).
            logger.info("stack restarted for new settings", metadata: ["connections": "\(stack.tcp.connectionCount)"])
            stack = NetStackDriver.makeStack(new, sink: sink, random: &random)
            stack.up(now: now)
            onStackReplaced?()
            return
        }
        if old.mtu != new.mtu { stack.setMTU(new.mtu) }
        if old.addresses != new.addresses { stack.setAddresses(new.addresses, now: now) }
    }

    var stats: NetworkStats {
        let c = stack.counters
        return NetworkStats(framesIn: c.framesIn, framesOut: sink.framesOut, framesDropped: sink.dropped,
                            connections: stack.tcp.connectionCount)
    }

    func connections(network: String) -> [ConnectionInfo] {
        var handles = Set<SocketHandle>()
        var out = interceptedConnections?(network, &handles) ?? []
        stack.tcp.forEachConnection { h, info in
            if let h, handles.contains(h) { return }
            out.append(ConnectionInfo(network: network, proto: "tcp", local: "\(info.local)",
                                      remote: info.remote.map { "\($0)" } ?? "*:*", state: info.state.displayName,
                                      pid: nil, uid: nil, bytesIn: info.bytesReceived, bytesOut: info.bytesSent))
        }
        return out
    }
}
