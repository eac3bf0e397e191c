import Foundation

// The ztctl <-> ztapd control protocol: newline-delimited JSON over the AF_UNIX stream socket
// RUN_DIR/control.sock. One request per line, one response line per request. Every response
// says `ok`; a failure carries a human-readable `error` and, where one applies, the `errno`.
// Peers are authorised by SO_PEERCRED before any request is read.

public enum ControlCommand: String, Codable, Sendable, CaseIterable {
    case status, list, join, leave, get, set, reload, connections
    /// The network's frames: the answer carries a SOCK_SEQPACKET fd (SCM_RIGHTS) that streams
    /// `CaptureWire` records (Capture.swift).
    case capture
    /// Counters and gauges of the daemon and every network (Metrics.swift).
    case metrics
}

public struct JoinOptions: Codable, Sendable, Equatable {
    public var addresses: [String] = []
    public var kernelAddresses: [String] = []
    public var mtu: Int?
    public var mac: String?
    public var interface: String?
    public var bridge: String?
    /// [VXLAN] of a new file; nil: none.
    public var vxlan: VXLANJoinOptions?
    public init() {}
}

/// `ztctl join --vxlan VNI --local IP --remote IP...`: written as the [VXLAN] section.
public struct VXLANJoinOptions: Codable, Sendable, Equatable {
    public var vni: Int?
    public var local: String?
    public var remotes: [String] = []
    public var destinationPort: Int?
    public var device: String?
    public init() {}
}

public struct ControlRequest: Codable, Sendable, Equatable {
    /// Wire format version; the daemon refuses requests from a newer ztctl with a clear error.
    public var version: Int = ControlRequest.currentVersion
    public var command: ControlCommand
    public var name: String?
    public var key: String?
    public var assignments: [String]?
    public var join: JoinOptions?
    public static let currentVersion = 1
    /// Requests larger than this are refused (and the connection closed) by the daemon.
    public static let maxSize = 64 * 1024

    public init(command: ControlCommand, name: String? = nil) {
        self.command = command
        self.name = name
    }
}

public struct DaemonStatus: Codable, Sendable, Equatable {
    public var version: String
    public var pid: Int32
    public var uptimeSeconds: Double
    public var configDir: String
    public var runDir: String
    public var networks: Int
    public var networksUp: Int
    public var capabilities: String
    public var user: String
    public init(version: String, pid: Int32, uptimeSeconds: Double, configDir: String, runDir: String,
                networks: Int, networksUp: Int, capabilities: String, user: String) {
        self.version = version; self.pid = pid; self.uptimeSeconds = uptimeSeconds; self.configDir = configDir
        self.runDir = runDir; self.networks = networks; self.networksUp = networksUp
        self.capabilities = capabilities; self.user = user
    }
}

public struct NetworkStatus: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable { case up, failed }
    public var name: String
    public var state: State
    public var interface: String
    public var mac: String
    public var mtu: Int
    public var addresses: [String]
    public var kernelAddresses: [String]
    public var bridge: String?
    public var services: [String]
    public var error: String?
    public var framesIn: UInt64 = 0
    public var framesOut: UInt64 = 0
    public var connections: Int = 0
    /// The stack's addresses as they stand (the IPv6 link-local one included; an IPv6 address
    /// still in duplicate address detection, or found duplicate, with that state after a space);
    /// nil from a network that is not up or an older ztapd.
    public var stackAddresses: [String]?
    public init(name: String, state: State, interface: String, mac: String, mtu: Int, addresses: [String],
                kernelAddresses: [String], bridge: String?, services: [String], error: String?) {
        self.name = name; self.state = state; self.interface = interface; self.mac = mac; self.mtu = mtu
        self.addresses = addresses; self.kernelAddresses = kernelAddresses; self.bridge = bridge
        self.services = services; self.error = error
    }
}

public struct ConnectionInfo: Codable, Sendable, Equatable {
    public var network: String
    public var proto: String
    public var local: String
    public var remote: String
    public var state: String
    public var pid: Int32?
    public var uid: UInt32?
    public var bytesIn: UInt64
    public var bytesOut: UInt64
    // TCP internals (like `ss -ti`); nil for UDP, for listeners and from an older ztapd.
    /// Smoothed round-trip time in microseconds; nil until the first sample.
    public var rttMicros: UInt64?
    /// RTT variation in microseconds (not yet exposed by NetStack: nil).
    public var rttvarMicros: UInt64?
    /// Retransmission timeout in microseconds.
    public var rtoMicros: UInt64?
    /// Congestion window and slow-start threshold in bytes (ssthresh nil while unbounded).
    public var cwnd: Int?
    public var ssthresh: Int?
    /// Segments retransmitted over the connection's life.
    public var retransmits: UInt64?
    /// Bytes sent and not yet acknowledged (not yet exposed by NetStack: nil).
    public var bytesInFlight: Int?
    /// Bytes in the stack's send buffer (unsent + unacknowledged) and receive buffer (unread).
    public var sendQueue: Int?
    public var receiveQueue: Int?
    /// The peer's advertised window and the negotiated send MSS, in bytes.
    public var peerWindow: Int?
    public var mss: Int?
    /// Negotiated options: "ts", "sack", "wscale"; and the congestion control ("cubic", "reno").
    public var options: [String]?
    public var congestionControl: String?
    /// How the socket's program was intercepted: "preload" (libztintercept.so) or "seccomp"
    /// (ztctl run's supervisor); nil from a daemon that does not say.
    public var mode: String?
    public init(network: String, proto: String, local: String, remote: String, state: String,
                pid: Int32?, uid: UInt32?, bytesIn: UInt64, bytesOut: UInt64, mode: String? = nil) {
        self.network = network; self.proto = proto; self.local = local; self.remote = remote
        self.state = state; self.pid = pid; self.uid = uid; self.bytesIn = bytesIn; self.bytesOut = bytesOut
        self.mode = mode
    }
}

public struct KeyValue: Codable, Sendable, Equatable {
    public var key: String
    public var value: String
    public init(key: String, value: String) { self.key = key; self.value = value }
}

public struct ControlResponse: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    public var errno: Int32?
    public var message: String?
    public var status: DaemonStatus?
    public var networks: [NetworkStatus]?
    public var values: [KeyValue]?
    public var connections: [ConnectionInfo]?
    /// `capture`: what the passed fd carries.
    public var capture: CaptureInfo?
    /// `metrics`: every metric family (ztctl renders the Prometheus text format).
    public var metrics: [MetricFamily]?

    public init(ok: Bool) { self.ok = ok }
    public static func success(_ message: String? = nil) -> ControlResponse {
        var r = ControlResponse(ok: true)
        r.message = message
        return r
    }
    public static func failure(_ error: String, errno: Int32? = nil) -> ControlResponse {
        var r = ControlResponse(ok: false)
        r.error = error
        r.errno = errno
        return r
    }
}

public enum ControlCodec {
    /// One JSON object on one line, terminated by "\n".
    public static func encodeLine<T: Encodable>(_ value: T) -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes = [UInt8]((try? enc.encode(value)) ?? Data("{\"ok\":false,\"error\":\"encoding failed\"}".utf8))
        bytes.append(0x0A)
        return bytes
    }

    public static func decode<T: Decodable>(_ type: T.Type, from line: some Collection<UInt8>) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(line))
    }
}
