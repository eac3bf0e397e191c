/// ztapd.conf, section `[Daemon]`.
public struct DaemonConfig: Equatable, Sendable {
    /// `User=`: drop to this user (name or uid) after setup, keeping only CAP_NET_ADMIN.
    public var user: String?
    /// `LogLevel=`: default `info`.
    public var logLevel: LogLevel
    /// `ControlUsers=`: users (names or uids) allowed on control.sock besides root.
    public var controlUsers: [String]
    /// `ControlGroup=` (alias `ControlGroups=`): groups (names or gids) allowed on control.sock.
    public var controlGroups: [String]
    /// `SyscallFilter=`: install ztapd's own seccomp allow-list after setup (default yes; `no`
    /// only for debugging, e.g. under strace or a debugger).
    public var syscallFilter: Bool
    /// Section `[Limits]` (DaemonLimits.swift).
    public var limits: DaemonLimits

    public init(user: String? = nil, logLevel: LogLevel = .info, controlUsers: [String] = [],
                controlGroups: [String] = [], syscallFilter: Bool = true, limits: DaemonLimits = .default) {
        self.user = user
        self.logLevel = logLevel
        self.controlUsers = controlUsers
        self.controlGroups = controlGroups
        self.syscallFilter = syscallFilter
        self.limits = limits
    }

    public static let `default` = DaemonConfig()

    public static func parse(text: String, file: String) throws(ConfigError) -> DaemonConfig {
        let doc = try INIDocument(text: text, file: file)
        var config = DaemonConfig.default
        _ = try ModelParser.apply(doc, specs: specs, to: &config)
        return config
    }

    /// Reads and parses `path`; a missing file means the defaults.
    public static func load(path: String) throws(ConfigError) -> DaemonConfig {
        guard let text = try FileIO.readText(path: path, missingOK: true) else { return .default }
        return try parse(text: text, file: path)
    }

    static let specs: [KeySpec<DaemonConfig>] = {
        func groups(_ key: String) -> KeySpec<DaemonConfig> {
            KeySpec(section: "Daemon", key: key, arity: .list,
                    help: "groups (names or gids) whose members may use control.sock",
                    apply: { (c, v) throws(Reason) in
                        let g = try Value.principal(key, v, kind: "group")
                        guard !c.controlGroups.contains(g) else { throw Reason("duplicate \(key)=\(v): already listed") }
                        c.controlGroups.append(g)
                    },
                    reset: { $0.controlGroups = [] }, render: { $0.controlGroups },
                    isDefault: { $0.controlGroups.isEmpty })
        }
        return [
            KeySpec(section: "Daemon", key: "User", arity: .single,
                    help: "run as this user (name or uid) keeping only CAP_NET_ADMIN",
                    apply: { (c, v) throws(Reason) in c.user = try Value.principal("User", v, kind: "user") },
                    reset: { $0.user = nil }, render: { $0.user.map { [$0] } ?? [] }, isDefault: { $0.user == nil }),
            KeySpec(section: "Daemon", key: "LogLevel", arity: .single,
                    help: "log threshold: " + LogLevel.allCases.map(\.rawValue).joined(separator: " "),
                    apply: { (c, v) throws(Reason) in
                        guard let l = LogLevel(rawValue: v) else {
                            throw Value.invalid("LogLevel", v,
                                                "expected one of " + LogLevel.allCases.map(\.rawValue).joined(separator: ", "))
                        }
                        c.logLevel = l
                    },
                    reset: { $0.logLevel = .info }, render: { [$0.logLevel.rawValue] },
                    isDefault: { $0.logLevel == .info }),
            KeySpec(section: "Daemon", key: "ControlUsers", arity: .list,
                    help: "users (names or uids) allowed on control.sock; root always is",
                    apply: { (c, v) throws(Reason) in
                        let u = try Value.principal("ControlUsers", v, kind: "user")
                        guard !c.controlUsers.contains(u) else {
                            throw Reason("duplicate ControlUsers=\(v): already listed")
                        }
                        c.controlUsers.append(u)
                    },
                    reset: { $0.controlUsers = [] }, render: { $0.controlUsers }, isDefault: { $0.controlUsers.isEmpty }),
            groups("ControlGroup"),
            groups("ControlGroups"),
            KeySpec(section: "Daemon", key: "SyscallFilter", arity: .single,
                    help: "confine ztapd to its own system-call allow-list after setup (default yes)",
                    apply: { (c, v) throws(Reason) in c.syscallFilter = try Value.bool("SyscallFilter", v) },
                    reset: { $0.syscallFilter = true }, render: { [$0.syscallFilter ? "yes" : "no"] },
                    isDefault: { $0.syscallFilter }),
        ] + DaemonLimits.specs
    }()
}
