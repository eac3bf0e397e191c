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
    var addresses6: [IPv6CIDR] = []
    var gateway: IPv4Address?
    var gateway6: IPAddress?
    var services: [String]
    var tcpReceiveBuffer: Int
    var tcpSendBuffer: Int
    var maxConnections: Int
    /// Microseconds the loop polls after activity before sleeping (`BusyPoll=`; the loop's, not
    /// the stack's: changing it restarts nothing).
    var busyPoll: Int = 0
}

struct NetworkStats: Sendable {
    var framesIn: UInt64 = 0
    var framesOut: UInt64 = 0
    var framesDropped: UInt64 = 0
    var connections: Int = 0
    /// Set when the network's TAP failed (e.g. the interface was deleted from outside).
    var error: String?
    /// The stack's addresses as they stand: IPv4, then IPv6 with a state other than preferred
    /// after a space ("fd00::2/64 tentative"), the link-local one included.
    var addresses: [String] = []
}

/// Writes frames to the TAP. A full TAP queue drops the frame, as a NIC would; TCP recovers.
///
///
/// Frames from the stack's offload path come as headers plus payload regions of a send ring
/// and leave in one writev, uncopied. On a TAP with a virtio header every frame gets one: all
/// zero for plain frames, else the frame's checksum and segmentation state, which the kernel
/// takes from any TAP with IFF_VNET_HDR (TUNSETOFFLOAD governs only the other direction).
final class TapSink: FrameSink {
    let device: any FrameDevice
    /// Every frame the stack sends is also offered to the network's captures.
    let captures: FrameCaptures
    let vnet: Bool
    let transmitOffloads: TransmitOffloads
    var framesOut: UInt64 = 0
    var dropped: UInt64 = 0
    private let header: UnsafeMutableRawPointer

    init(device: any FrameDevice, captures: FrameCaptures = FrameCaptures()) {
        self.device = device
        self.captures = captures
        vnet = device.offloads.contains(.vnetHeader)
        transmitOffloads = vnet ? .all : .gather
        header = .allocate(byteCount: 16, alignment: 16)
        header.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
    }
    deinit { header.deallocate() }

    private var noHeader: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }
    private var virtioHeader: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: header, count: VirtioNetHeader.length) }

    func sendFrame(_ frame: UnsafeRawBufferPointer) {
        captures.record(frame, outbound: true)
        let ok: Bool?
        if vnet {
            VirtioNetHeader().store(to: header)
            ok = try? device.write(virtioHeader, frame, noHeader, noHeader)
        } else {
            ok = try? device.write(frame)
        }
        if ok == true { framesOut &+= 1 } else { dropped &+= 1 }
    }

    func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                   offload: FrameOffload) {
        captures.record(head, payload, more, outbound: true)
        let ok: Bool?
        if vnet {
            offload.virtioHeader(headerLength: head.count).store(to: header)
            ok = try? device.write(virtioHeader, head, payload, more)
        } else {
            ok = try? device.write(head, payload, more, noHeader)
        }
        if ok == true { framesOut &+= 1 } else { dropped &+= 1 }
    }
}

/// The seam between a network loop (TAP fd, client sockets, timers) and the stack that answers
/// the frames. The loop owns the I/O; the driver owns protocol state.
protocol StackDriver: AnyObject {
    func start(now: Instant)
    /// One frame as the device read it (with its virtio header when it has one).
    func receive(frame: UnsafeRawBufferPointer, now: Instant)
    /// Runs due timers; returns the next deadline.
    func poll(now: Instant) -> Instant?
    func reconfigure(_ settings: StackSettings, now: Instant)
    var stats: NetworkStats { get }
    func connections(network: String) -> [ConnectionInfo]
    /// The stack intercepted sockets attach to (nil for a driver without one).
    var netStack: NetStack? { get }
    /// Readers of this network's frames (`ztctl capture`); the sink records outbound frames.
    var captures: FrameCaptures { get }
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
    var captures: FrameCaptures { sink.captures }

    init(settings: StackSettings, sink: TapSink, logger: Logger) {
        self.settings = settings
        self.sink = sink
        self.logger = logger
        // ISNs, ephemeral ports and SYN-cookie secrets must be unpredictable: seed from the OS.
        var system = SystemRandomNumberGenerator()
        random = XorShiftRandom(seed: system.next())
        let congestion = NetStackDriver.systemCongestionControl()
        stack = NetStackDriver.makeStack(settings, sink: sink, random: &random, congestion: congestion)
        if case .unsupported(let name) = congestion {
            logger.notice("this namespace's default congestion control is not in the stack: its TCP uses cubic",
                          metadata: ["net.ipv4.tcp_congestion_control": "\(name)"])
        }
    }

    /// `congestion`: the namespace's default (`systemCongestionControl`), which the stack takes
    /// when it has that algorithm.
    static func makeStack(_ s: StackSettings, sink: TapSink, random: inout XorShiftRandom,
                          congestion: SystemCongestion) -> NetStack {
        var tcp = TCPConfig()
        tcp.receiveBufferSize = s.tcpReceiveBuffer
        tcp.sendBufferSize = s.tcpSendBuffer
        tcp.maxConnections = s.maxConnections
        if case .stack(let cc) = congestion { tcp.congestionControl = cc }
        let services = Set(s.services.compactMap(DiagnosticService.init(rawValue:)))
        var config = StackConfig(mac: s.stackMAC, mtu: s.mtu, addresses: s.addresses, gateway: s.gateway,
                                 tcp: tcp, services: services)
        config.addresses6 = s.addresses6
        config.gateway6 = s.gateway6
        if let r = systemEphemeralPorts() { config.ephemeralPorts = r }
        return NetStack(config: config, sink: sink, random: XorShiftRandom(seed: random.next()))
    }

    /// The ephemeral port range of ztapd's network namespace (ip_local_port_range), like the
    /// kernel's own sockets there use; nil (the stack's default, Linux's) if it is unreadable.
    static func systemEphemeralPorts(path: String = "/proc/sys/net/ipv4/ip_local_port_range") -> ClosedRange<UInt16>? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return PortTable.parseRange(text)
    }

    /// What net.ipv4.tcp_congestion_control of ztapd's namespace names.
    enum SystemCongestion: Equatable { case stack(CongestionControl), unsupported(String), unreadable }

    /// The default congestion control of ztapd's network namespace, which new TCP sockets get
    /// there, as the kernel's own do: the stack's algorithm of that name (cubic, reno), or
    /// `.unsupported` (bbr, ...: the stack then keeps cubic, its own default).
    static func systemCongestionControl(path: String = "/proc/sys/net/ipv4/tcp_congestion_control") -> SystemCongestion {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return .unreadable }
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if name.isEmpty { return .unreadable }
        return SocketOptionMap.congestion(named: name).map(SystemCongestion.stack) ?? .unsupported(name)
    }

    func start(now: Instant) { stack.up(now: now) }

    /// `frame` as read from the TAP: with its virtio header when the TAP has one.
    func receive(frame: UnsafeRawBufferPointer, now: Instant) {
        if sink.vnet { stack.receive(virtioFrame: frame, now: now) } else { stack.receive(frame: frame, now: now) }
    }

    func poll(now: Instant) -> Instant? {
        stack.poll(now: now) { [eventSink] e in eventSink?(e) }
    }

    func reconfigure(_ new: StackSettings, now: Instant) {
        let old = settings
        settings = new
        if old.services != new.services || old.tcpReceiveBuffer != new.tcpReceiveBuffer
            || old.tcpSendBuffer != new.tcpSendBuffer || old.maxConnections != new.maxConnections
            || old.gateway != new.gateway || old.stackMAC != new.stackMAC {
            // These shape the stack itself: start a fresh one (its connections are reset).
            logger.info("stack restarted for new settings", metadata: ["connections": "\(stack.tcp.connectionCount)"])
            stack = NetStackDriver.makeStack(new, sink: sink, random: &random,
                                             congestion: NetStackDriver.systemCongestionControl())
            stack.up(now: now)
            onStackReplaced?()
            return
        }
        if old.mtu != new.mtu { stack.setMTU(new.mtu) }
        if old.addresses != new.addresses { stack.setAddresses(new.addresses, now: now) }
        if old.addresses6 != new.addresses6 || old.gateway6 != new.gateway6 {
            stack.setAddresses6(new.addresses6, gateway: new.gateway6, now: now)
        }
    }

    var stats: NetworkStats {
        let c = stack.counters
        var st = NetworkStats(framesIn: c.framesIn, framesOut: sink.framesOut, framesDropped: sink.dropped,
                              connections: stack.tcp.connectionCount)
        st.addresses = stack.addresses.map(\.description)
            + stack.addresses6.map { $0.state == .preferred ? "\($0.cidr)" : "\($0.cidr) \($0.state.rawValue)" }
        return st
    }

    func connections(network: String) -> [ConnectionInfo] {
        var handles = Set<SocketHandle>()
        var out = interceptedConnections?(network, &handles) ?? []
        stack.tcp.forEachConnection { h, info in
            if let h, handles.contains(h) { return }
            var c = ConnectionInfo(network: network, proto: "tcp", local: "\(info.local)",
                                   remote: info.remote.map { "\($0)" } ?? "*:*", state: info.state.displayName,
                                   pid: nil, uid: nil, bytesIn: info.bytesReceived, bytesOut: info.bytesSent)
            c.addInternals(info)
            out.append(c)
        }
        return out
    }
}

extension ConnectionInfo {
    /// The TCP internals `ztctl connections` shows (like `ss -ti`), from the stack's view.
    mutating func addInternals(_ i: TCPSocketInfo) {
        if i.state == .listen {
            receiveQueue = i.receiveQueue   // connections waiting in accept()
            return
        }
        rttMicros = i.srtt.map { Self.micros($0.nanoseconds) }
        rttvarMicros = i.rttVariance.map { Self.micros($0.nanoseconds) }
        bytesInFlight = i.bytesInFlight
        rtoMicros = Self.micros(i.rto.nanoseconds)
        cwnd = i.cwnd
        ssthresh = i.ssthresh >= Int(Int32.max) ? nil : i.ssthresh
        retransmits = i.retransmissions
        sendQueue = i.sendQueue
        receiveQueue = i.receiveQueue
        peerWindow = i.peerWindow
        mss = i.mss
        var o: [String] = []
        if i.timestamps { o.append("ts") }
        if i.sack { o.append("sack") }
        if i.windowScaling { o.append("wscale") }
        options = o
        congestionControl = i.congestionControl == .cubic ? "cubic" : "reno"
    }

    static func micros(_ nanoseconds: UInt64) -> UInt64 { nanoseconds / 1000 }
}

