import NetStack
import ZTControl

/// One network's counters and gauges at one instant, taken on its loop thread for `metrics`.
struct NetworkMetrics: Sendable {
    var stack = StackCounters()
    /// Frames written to the TAP, and frames the TAP refused (its queue was full).
    var tapFramesOut: UInt64 = 0
    var tapDropped: UInt64 = 0
    /// TCP connections of the stack by state (lowercase, `_` for `-`: "established", "fin_wait_1").
    var tcpStates: [String: Int] = [:]
    /// Retransmissions of the connections that exist now (not monotonic: see NetworkMetrics below).
    var tcpRetransmitsLive: UInt64 = 0
    /// Outgoing connections that took over a TIME-WAIT of their 4-tuple.
    var tcpTimeWaitReused: UInt64 = 0
    /// Ring memory of the stack's TCP connections: handed to rings, kept warm, mapped.
    var ringBytesInUse = 0
    var ringBytesWarm = 0
    var ringBytesMapped = 0
    var interceptTCP = 0
    var interceptUDP = 0
    var rpc = RPCCounters()
    var rpcPeers = 0
    var rpcRefusedPeers: UInt64 = 0
    var rpcRefusedAccess: UInt64 = 0
    var captureSessions = 0
    var captureSessionsTotal: UInt64 = 0
    var captureFrames: UInt64 = 0
    var captureDropped: UInt64 = 0
    /// The loop's busy polls (`BusyPoll=`) and those that found work without sleeping.
    var busyPolls: UInt64 = 0
    var busyPollHits: UInt64 = 0
    var tapError: String?

    /// Every TCP state the stack has, as metric labels (all are exported, zero or not).
    static let tcpStateLabels = ["listen", "syn_sent", "syn_received", "established", "fin_wait_1", "fin_wait_2",
                                 "close_wait", "closing", "last_ack", "time_wait", "closed"]

    static func label(_ s: TCPState) -> String { s.displayName.lowercased().replacingOccurrences(of: "-", with: "_") }
}

extension NetworkLoop {
    /// Everything `NetworkMetrics` holds but the TAP error (the loop adds it).
    func metricsSnapshot() -> NetworkMetrics {
        var m = NetworkMetrics()
        let st = driver.stats
        m.tapFramesOut = st.framesOut
        m.tapDropped = st.framesDropped
        if let stack = driver.netStack {
            m.stack = stack.counters
            stack.tcp.forEachConnection { _, info in
                m.tcpStates[NetworkMetrics.label(info.state), default: 0] += 1
                m.tcpRetransmitsLive &+= info.retransmissions
            }
            m.tcpTimeWaitReused = stack.tcp.timeWaitReused
            let r = stack.tcp.ringMemory
            (m.ringBytesInUse, m.ringBytesWarm, m.ringBytesMapped) = (r.inUse, r.warmBytes, r.mapped)
        }
        if let hub {
            m.interceptTCP = hub.tcp.count
            m.interceptUDP = hub.udp.count
            m.rpc = hub.replier.counters
            m.rpcPeers = hub.peerCount
            m.rpcRefusedPeers = hub.refusedPeers
            m.rpcRefusedAccess = hub.refusedRequests
        }
        let c = driver.captures
        m.captureSessions = c.sessions.count
        m.captureSessionsTotal = c.sessionsTotal
        m.captureFrames = c.framesTotal
        m.captureDropped = c.droppedTotal
        (m.busyPolls, m.busyPollHits) = busyPollCounts
        return m
    }
}

/// The daemon's own numbers for `metrics` (taken on the main thread).
struct DaemonGauges: Sendable {
    var version: String
    var startTime: Double            // seconds since the epoch
    var uptime: Double
    var networksUp: Int
    var networksFailed: Int
    var controlClients: Int
    var controlRequests: [String: [String: UInt64]]   // command -> result -> count
    var openFDs: Int
    var residentBytes: Int
    var threads: Int
}

/// Turns the snapshots into metric families (pure: unit-tested).
enum MetricsExport {
    static func families(daemon d: DaemonGauges, networks: [(name: String, metrics: NetworkMetrics?)]) -> [MetricFamily] {
        var b = MetricsBuilder()
        b.add("ztap_build_info", .gauge, "ztapd's version (value always 1).", 1, ["version": d.version])
        b.add("ztap_daemon_start_time_seconds", .gauge, "When ztapd started, seconds since the epoch.", d.startTime)
        b.add("ztap_daemon_uptime_seconds", .gauge, "Seconds since ztapd started.", d.uptime)
        b.add("ztap_networks", .gauge, "Configured networks by state (up: running; failed: file present, not running).",
              d.networksUp, ["state": "up"])
        b.add("ztap_networks", .gauge, "", d.networksFailed, ["state": "failed"])
        b.add("ztap_control_clients", .gauge, "Open connections on control.sock.", d.controlClients)
        b.declare("ztap_control_requests_total", .counter,
                  "Requests on control.sock by command and result (ok, error; denied: the user may not control ztapd, counted as command=\"any\").")
        for (cmd, results) in d.controlRequests.sorted(by: { $0.key < $1.key }) {
            for (result, n) in results.sorted(by: { $0.key < $1.key }) {
                b.add("ztap_control_requests_total", .counter, "", n, ["command": cmd, "result": result])
            }
        }
        b.add("process_open_fds", .gauge, "Open file descriptors of ztapd.", d.openFDs)
        b.add("process_resident_memory_bytes", .gauge, "Resident memory of ztapd in bytes.", d.residentBytes)
        b.add("process_threads", .gauge, "Threads of ztapd (one per running network plus the main thread).", d.threads)
        b.add("process_start_time_seconds", .gauge, "When ztapd started, seconds since the epoch.", d.startTime)

        for (name, m) in networks.sorted(by: { $0.name < $1.name }) {
            let n = ["network": name]
            b.add("ztap_network_up", .gauge, "1 while the network's loop runs and its TAP works, else 0.",
                  m != nil && m?.tapError == nil ? 1 : 0, n)
            guard let m else { continue }
            func with(_ k: String, _ v: String) -> [String: String] { n.merging([k: v]) { a, _ in a } }
            let c = m.stack
            b.add("ztap_frames_received_total", .counter, "Frames read from the TAP (the stack received them).", c.framesIn, n)
            b.add("ztap_frames_sent_total", .counter, "Frames the stack sent to the TAP (tap_full drops included).", c.framesOut, n)
            b.add("ztap_bytes_received_total", .counter, "Bytes of the frames read from the TAP.", c.bytesIn, n)
            b.add("ztap_bytes_sent_total", .counter, "Bytes of the frames the stack sent.", c.bytesOut, n)
            let drops: [(String, UInt64)] = [
                ("malformed", c.droppedMalformed), ("checksum", c.droppedChecksum), ("not_for_us", c.droppedNotForUs),
                ("no_socket", c.droppedNoSocket), ("unsupported", c.droppedUnsupported), ("martian", c.droppedMartian),
                ("udp_queue_full", c.droppedUDPQueueFull), ("arp_queue_full", c.arpQueueDrops),
                ("arp_unresolved", c.arpUnresolvedDrops), ("reassembly", c.reassemblyDrops &+ c.reassemblyTimeouts),
                ("no_route", c.noRoute), ("oversize", c.oversizeTransmits), ("tap_full", m.tapDropped),
            ]
            for (reason, v) in drops {
                b.add("ztap_frames_dropped_total", .counter,
                      "Frames dropped, by reason (inbound: malformed..udp_queue_full; outbound: arp_*, no_route, oversize, tap_full).",
                      v, with("reason", reason))
            }
            b.add("ztap_arp_requests_sent_total", .counter, "ARP requests the stack sent.", c.arpRequestsSent, n)
            b.add("ztap_icmp_echo_requests_total", .counter, "ICMP echo requests the stack answered.", c.icmpEchoRequests, n)
            b.add("ztap_icmp_errors_sent_total", .counter, "ICMP errors the stack sent.", c.icmpErrorsSent, n)
            b.add("ztap_tcp_segments_received_total", .counter, "TCP segments the stack received.", c.tcpSegmentsIn, n)
            b.add("ztap_udp_datagrams_received_total", .counter, "UDP datagrams the stack received.", c.udpDatagramsIn, n)
            b.add("ztap_udp_datagrams_sent_total", .counter, "UDP datagrams the stack sent.", c.udpDatagramsOut, n)
            for s in NetworkMetrics.tcpStateLabels {
                b.add("ztap_tcp_connections", .gauge, "TCP connections of the stack by state.", m.tcpStates[s, default: 0],
                      with("state", s))
            }
            b.add("ztap_tcp_retransmits_live", .gauge,
                  "Segments retransmitted by the TCP connections that exist now (falls when connections close).",
                  m.tcpRetransmitsLive, n)
            b.add("ztap_tcp_time_wait_reused_total", .counter,
                  "Outgoing connections that took over a TIME-WAIT of their 4-tuple (timestamps made it safe).",
                  m.tcpTimeWaitReused, n)
            b.add("ztap_loop_busy_polls_total", .counter,
                  "Times the network's loop polled without sleeping after activity (BusyPoll=), by outcome.",
                  m.busyPolls &- m.busyPollHits, with("outcome", "idle"))
            b.add("ztap_loop_busy_polls_total", .counter, "", m.busyPollHits, with("outcome", "hit"))
            b.add("ztap_tcp_ring_bytes", .gauge,
                  "TCP ring memory: in_use (held by rings with bytes), warm (freed, pages kept for reuse), mapped (address space).",
                  m.ringBytesInUse, with("kind", "in_use"))
            b.add("ztap_tcp_ring_bytes", .gauge, "", m.ringBytesWarm, with("kind", "warm"))
            b.add("ztap_tcp_ring_bytes", .gauge, "", m.ringBytesMapped, with("kind", "mapped"))
            b.add("ztap_intercept_sockets", .gauge, "Sockets of intercepted applications by protocol.", m.interceptTCP,
                  with("proto", "tcp"))
            b.add("ztap_intercept_sockets", .gauge, "", m.interceptUDP, with("proto", "udp"))
            for (i, op) in RPCCounters.opNames.enumerated() {
                b.add("ztap_rpc_requests_total", .counter, "Intercept RPC requests answered, by operation.",
                      m.rpc.requests[i], with("op", op))
                b.add("ztap_rpc_errors_total", .counter, "Intercept RPC requests answered with an error, by operation.",
                      m.rpc.errors[i], with("op", op))
            }
            b.add("ztap_rpc_pending", .gauge, "Intercept RPC connections open now.", m.rpcPeers, n)
            b.add("ztap_rpc_refused_total", .counter,
                  "Intercept RPCs refused: budget (too many pending connections) or access (user not in [Access]).",
                  m.rpcRefusedPeers, with("reason", "budget"))
            b.add("ztap_rpc_refused_total", .counter, "", m.rpcRefusedAccess, with("reason", "access"))
            b.add("ztap_capture_sessions", .gauge, "ztctl capture readers now.", m.captureSessions, n)
            b.add("ztap_capture_frames_total", .counter, "Frames delivered to capture readers.", m.captureFrames, n)
            b.add("ztap_capture_dropped_total", .counter, "Frames not delivered to a capture reader whose buffer was full.",
                  m.captureDropped, n)
        }
        return b.families
    }
}
