/// ztapd.conf, section `[Limits]`: the budgets that keep one local user from starving the others.
///
/// Control budgets apply to `control.sock`; the intercept budgets count per uid over all networks
/// together (sockets are charged to the uid that created them; accepted connections to the uid
/// of the listener). Over a budget the request fails with the errno Linux uses for the same kind
/// of exhaustion (EMFILE for sockets, ENOBUFS for memory, EAGAIN for control slots), ztapd logs a
/// rate-limited line, and nobody else is affected.
public struct DaemonLimits: Equatable, Sendable {
    /// `ControlClients=`: control connections at most, in all (default 64).
    public var controlClients: Int
    /// `ControlClientsPerUser=`: control connections at most per uid (default 8). When every slot
    /// is taken, a user holding fewer slots than the biggest holder displaces that holder's oldest
    /// idle connection, so a flood by one user cannot lock out root or anyone else.
    public var controlClientsPerUser: Int
    /// `ControlIdleTimeout=`: a control connection with no request and no unsent answer for this
    /// long is closed (milliseconds; default 30 s).
    public var controlIdleTimeoutMs: Int
    /// `ControlOutputBuffer=`: unsent answer bytes a control client may accumulate before ztapd
    /// stops reading its requests (default 1M).
    public var controlOutputBuffer: Int
    /// `PendingRequestsPerUser=`: RPC connections of one uid in flight at once on one network
    /// (default 512; a blocking connect holds one until its outcome).
    public var pendingRequestsPerUser: Int
    /// `TCPSocketsPerUser=`: intercepted TCP sockets per uid (default 1024).
    public var tcpSocketsPerUser: Int
    /// `UDPSocketsPerUser=`: intercepted UDP sockets per uid (default 1024).
    public var udpSocketsPerUser: Int
    /// `BufferMemoryPerUser=`: bytes of stack buffers (TCP receive + send rings, UDP queues) per
    /// uid; nil (`auto`, the default) means half of the machine's physical memory.
    public var bufferMemoryPerUser: Int?

    public init(controlClients: Int = 64, controlClientsPerUser: Int = 8, controlIdleTimeoutMs: Int = 30_000,
                controlOutputBuffer: Int = 1 << 20, pendingRequestsPerUser: Int = 512,
                tcpSocketsPerUser: Int = 1024, udpSocketsPerUser: Int = 1024, bufferMemoryPerUser: Int? = nil) {
        self.controlClients = controlClients
        self.controlClientsPerUser = controlClientsPerUser
        self.controlIdleTimeoutMs = controlIdleTimeoutMs
        self.controlOutputBuffer = controlOutputBuffer
        self.pendingRequestsPerUser = pendingRequestsPerUser
        self.tcpSocketsPerUser = tcpSocketsPerUser
        self.udpSocketsPerUser = udpSocketsPerUser
        self.bufferMemoryPerUser = bufferMemoryPerUser
    }

    public static let `default` = DaemonLimits()

    static let clientsRange = 1...4096
    static let idleRange = 100...86_400_000
    static let outputRange = (64 << 10)...(1 << 30)
    static let socketsRange = 1...1_048_576
    static let memoryRange = (1 << 20)...(1 << 50)

    static let specs: [KeySpec<DaemonConfig>] = {
        func count(_ key: String, _ range: ClosedRange<Int>, _ path: any WritableKeyPath<DaemonLimits, Int> & Sendable,
                   _ help: String) -> KeySpec<DaemonConfig> {
            let d = DaemonLimits.default[keyPath: path]
            return KeySpec(section: "Limits", key: key, arity: .single, help: help + " (default \(d))",
                           apply: { (c, v) throws(Reason) in c.limits[keyPath: path] = try Value.integer(key, v, range) },
                           reset: { $0.limits[keyPath: path] = d }, render: { ["\($0.limits[keyPath: path])"] },
                           isDefault: { $0.limits[keyPath: path] == d })
        }
        return [
            count("ControlClients", clientsRange, \.controlClients, "control connections at most, in all"),
            count("ControlClientsPerUser", clientsRange, \.controlClientsPerUser, "control connections at most per user"),
            KeySpec(section: "Limits", key: "ControlIdleTimeout", arity: .single,
                    help: "close a control connection idle this long, 100ms...24h (default 30s)",
                    apply: { (c, v) throws(Reason) in
                        c.limits.controlIdleTimeoutMs = try Value.duration("ControlIdleTimeout", v, DaemonLimits.idleRange)
                    },
                    reset: { $0.limits.controlIdleTimeoutMs = DaemonLimits.default.controlIdleTimeoutMs },
                    render: { [Value.renderDuration($0.limits.controlIdleTimeoutMs)] },
                    isDefault: { $0.limits.controlIdleTimeoutMs == DaemonLimits.default.controlIdleTimeoutMs }),
            KeySpec(section: "Limits", key: "ControlOutputBuffer", arity: .single,
                    help: "unsent answer bytes per control client before its requests wait, 64K...1G (default 1M)",
                    apply: { (c, v) throws(Reason) in
                        c.limits.controlOutputBuffer = try Value.size("ControlOutputBuffer", v, DaemonLimits.outputRange)
                    },
                    reset: { $0.limits.controlOutputBuffer = DaemonLimits.default.controlOutputBuffer },
                    render: { [Value.renderSize($0.limits.controlOutputBuffer)] },
                    isDefault: { $0.limits.controlOutputBuffer == DaemonLimits.default.controlOutputBuffer }),
            count("PendingRequestsPerUser", socketsRange, \.pendingRequestsPerUser,
                  "intercept requests of one user in flight per network"),
            count("TCPSocketsPerUser", socketsRange, \.tcpSocketsPerUser, "intercepted TCP sockets per user"),
            count("UDPSocketsPerUser", socketsRange, \.udpSocketsPerUser, "intercepted UDP sockets per user"),
            KeySpec(section: "Limits", key: "BufferMemoryPerUser", arity: .single,
                    help: "stack buffer bytes per user, 1M...1024T or auto = half the physical memory (default auto)",
                    apply: { (c, v) throws(Reason) in
                        if v == "auto" {
                            c.limits.bufferMemoryPerUser = nil
                        } else {
                            c.limits.bufferMemoryPerUser = try Value.size("BufferMemoryPerUser", v, DaemonLimits.memoryRange)
                        }
                    },
                    reset: { $0.limits.bufferMemoryPerUser = nil },
                    render: { [$0.limits.bufferMemoryPerUser.map(Value.renderSize) ?? "auto"] },
                    isDefault: { $0.limits.bufferMemoryPerUser == nil }),
        ]
    }()
}
