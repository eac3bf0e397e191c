import CShims
import Foundation
import LinuxNet
import Logging
import NetStack
import PhyLoop
import SystemPackage
import ZTConfig
import ZTControl

public struct DaemonOptions: Sendable {
    public var configDir: String
    public var runDir: String
    public init(configDir: String, runDir: String) {
        self.configDir = configDir
        self.runDir = runDir
    }
}

public let ztapVersion = "0.1.0"

/// The main/control thread of ztapd: control socket, signals, config load/reload, join/leave.
///
/// Startup order matters for privileges: capabilities are per thread in Linux, so every TAP of
/// the initial networks is opened and configured here, capabilities are reduced to
/// CAP_NET_ADMIN, and only then are the network threads started (they inherit the reduced set).
public final class Daemon: PhySocketHandler {
    public enum Context {
        case signals
        case controlListener
        case control(ControlPeer)
    }

    public final class ControlPeer {
        let pid: pid_t, uid: uid_t, gid: gid_t
        let allowed: Bool
        var buffer: [UInt8] = []
        var output: [UInt8] = []
        var closeAfterWrite = false
        /// Monotonic ns of the last progress (accepted, request read, answer bytes taken).
        var lastActive: UInt64
        /// Requests are not read while the client leaves more than ControlOutputBuffer= unread.
        var readPaused = false
        /// The client shut its sending side down: answer what is complete, then hang up.
        var inputClosed = false
        /// Its slot was given back already (displaced: the close is only reaped later).
        var slotReleased = false
        init(pid: pid_t, uid: uid_t, gid: gid_t, allowed: Bool, now: UInt64 = Sys.monotonicNanoseconds()) {
            self.pid = pid; self.uid = uid; self.gid = gid; self.allowed = allowed; lastActive = now
        }
    }

    let options: DaemonOptions
    var logger: Logger
    var daemonConfig: DaemonConfig
    var loop: PhyLoop<Daemon>!
    var networks: [String: Network] = [:]
    /// Networks whose file exists but which failed to come up (shown by `list` with the reason).
    var failed: [String: (config: NetworkConfig?, error: String)] = [:]
    var running = true
    var exitCode: Int32 = 0
    let startTime = Date()
    var controlPath: String { options.runDir + "/control.sock" }
    var networksDir: String { options.configDir + "/networks.d" }
    var controlPeers = 0
    /// Control connections per uid ([Limits] ControlClientsPerUser=).
    var controlByUID: [uid_t: Int] = [:]
    /// When the next idle control connection may be due (monotonic ns).
    var controlIdleCheck: UInt64?
    var controlThrottle = LogThrottle()
    var netlink: Netlink?
    /// ztapd.conf's ControlUsers=/ControlGroups= (root and ztapd's own user always).
    let controlAccess = AccessPolicy(AccessList())
    /// Bridge + VXLAN device of each running [VXLAN] network (DaemonVXLAN.swift).
    var fabrics: [String: VXLANFabric.Created] = [:]
    /// Control request counters for `metrics` (DaemonMetrics.swift).
    let controlStats = ControlStats()
    /// The intercept's per-uid budgets ([Limits]), shared by every network.
    let budgets = UserBudgets()

    public init(options: DaemonOptions, logger: Logger) {
        self.options = options
        self.logger = logger
        daemonConfig = .default
    }

    // MARK: - Lifecycle

    /// Runs until SIGTERM/SIGINT; returns the process exit status.
    public func run() -> Int32 {
        raiseFileLimit()
        do {
            try start()
        } catch {
            logger.critical("\(error)")
            shutdown()
            return 1
        }
        while running {
            do {
                try loop.poll(deadline: controlIdleCheck)
            } catch {
                logger.critical("control loop failed: \(error)")
                exitCode = 1
                break
            }
        }
        shutdown()
        return exitCode
    }

    func start() throws(ServiceError) {
        do {
            daemonConfig = try DaemonConfig.load(path: options.configDir + "/ztapd.conf")
        } catch {
            throw ServiceError("\(error)")
        }
        applyLogLevel()
        logger.info("ztapd \(ztapVersion) starting", metadata: ["config": "\(options.configDir)", "run": "\(options.runDir)"])

        do {
            netlink = try Netlink()
        } catch {
            throw ServiceError("cannot open netlink socket: \(error)", errno: error.errno)
        }
        do {
            loop = try PhyLoop<Daemon>()
        } catch {
            throw ServiceError("cannot create event loop: \(error)")
        }
        loop.handler = self

        let sfd = cshim_signalfd_standard()
        guard sfd >= 0 else { throw ServiceError("signalfd: \(String(cString: strerror(errno)))", errno: errno) }
        do { try loop.add(fd: sfd, kind: .raw, context: .signals) } catch {
            throw ServiceError("cannot watch signals: \(error)")
        }
        try openControlSocket()

        // Initial networks: configure every TAP while we still hold all capabilities.
        let (configs, errors) = NetworkDirectory.load(directory: networksDir)
        for e in errors {
            logger.error("rejected network file: \(e)")
            failed[Self.networkName(ofFile: e.file)] = (nil, "\(e)")
        }
        var prepared: [Network] = []
        for config in configs.sorted(by: { $0.name < $1.name }) {
            do {
                prepared.append(try prepare(config))
            } catch {
                logger.error("network \(config.name) failed: \(error)")
                failed[config.name] = (config, error.message)
            }
        }

        try dropPrivileges()
        try enterSandbox()

        for n in prepared {
            do {
                try n.start(logger: logger, runDir: options.runDir, budgets: budgets)
                networks[n.config.name] = n
                logger.info("network \(n.config.name) up", metadata: ["interface": "\(n.interfaceName)"])
            } catch {
                n.stop()
                removeFabric(n.config.name)
                failed[n.config.name] = (n.config, error.message)
                logger.error("network \(n.config.name) failed: \(error)")
            }
        }
        _ = cshim_sd_notify("READY=1\nSTATUS=\(networks.count) network(s) up\nMAINPID=\(getpid())")
        logger.info("ready", metadata: ["networks": "\(networks.count)", "failed": "\(failed.count)"])
    }

    func applyLogLevel() {
        logger.logLevel = Self.level(daemonConfig.logLevel)
        controlAccess.reset(AccessList(users: daemonConfig.controlUsers, groups: daemonConfig.controlGroups))
        budgets.setLimits(UserBudgets.Limits(daemonConfig.limits))
    }

    static func level(_ l: LogLevel) -> Logger.Level {
        switch l {
        case .trace: return .trace
        case .debug: return .debug
        case .info: return .info
        case .notice: return .notice
        case .warning: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }

    static func networkName(ofFile file: String) -> String {
        var base = (file as NSString).lastPathComponent
        if base.hasSuffix(".conf") { base.removeLast(5) }
        return base
    }

    func dropPrivileges() throws(ServiceError) {
        guard geteuid() == 0 || Capabilities.current()["CapEff", default: 0] != 0 else { return }
        if alreadyMinimal() { return }
        do {
            if let user = daemonConfig.user, !user.isEmpty {
                // The run directory must stay usable after the switch.
                if let pw = getpwnam(user) {
                    // The run directory and networks.d stay the daemon's to manage after the
                    // switch (join/set/leave edit networks.d); ztapd.conf stays root's.
                    let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
                    _ = chown(options.runDir, uid, gid)
                    _ = mkdir(networksDir, 0o755)
                    _ = chown(networksDir, uid, gid)
                    for f in (try? FileManager.default.contentsOfDirectory(atPath: networksDir)) ?? [] where f.hasSuffix(".conf") {
                        _ = chown(networksDir + "/" + f, uid, gid)
                    }
                }
                try Capabilities.switchUser(user)
                logger.info("switched to user \(user)")
            }
            try Capabilities.reduceToNetAdmin()
        } catch {
            throw ServiceError("cannot drop privileges: \(error)", errno: error.errno)
        }
    }

    func openControlSocket() throws(ServiceError) {
        if mkdir(options.runDir, 0o755) != 0 && errno != EEXIST {
            throw ServiceError("cannot create \(options.runDir): \(String(cString: strerror(errno)))", errno: errno)
        }
        // A socket file left by a crashed daemon is removed; a live daemon is not displaced.
        var st = stat()
        if lstat(controlPath, &st) == 0 {
            let probe = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            let live = cshim_connect_unix(probe, controlPath) == 0
            Sys.live.close(probe)
            if live { throw ServiceError("another ztapd is already serving \(controlPath)", errno: EADDRINUSE) }
            unlink(controlPath)
        }
        let fd = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServiceError("socket: \(String(cString: strerror(errno)))", errno: errno) }
        // World-connectable on purpose: SO_PEERCRED decides, so a refused user gets a clear
        // answer instead of a bare EACCES from connect.
        guard cshim_bind_unix(fd, controlPath) == 0, chmod(controlPath, 0o666) == 0, listen(fd, 64) == 0 else {
            let e = errno
            Sys.live.close(fd)
            throw ServiceError("cannot listen on \(controlPath): \(String(cString: strerror(e)))", errno: e)
        }
        do {
            try Sys.setNonBlocking(fd)
            try loop.add(fd: fd, kind: .listener, context: .controlListener)
        } catch {
            Sys.live.close(fd)
            throw ServiceError("cannot watch \(controlPath): \(error)")
        }
    }

    func shutdown() {
        logger.info("shutting down")
        _ = cshim_sd_notify("STOPPING=1")
        for (name, n) in networks {
            n.stop()
            removeFabric(name)
        }
        networks.removeAll()
        loop?.closeAll()
        unlink(controlPath)
    }

    // MARK: - Networks

    /// Opens and configures the TAP of `config` (MAC -> MTU -> addresses -> bridge -> up); with
    /// [VXLAN], first makes the bridge + VXLAN device the TAP joins, which then hold
    /// KernelAddress=. Every failure undoes what was done.
    func prepare(_ config: NetworkConfig) throws(ServiceError) -> Network {
        guard let netlink else { throw ServiceError("netlink unavailable") }
        let ifname = config.effectiveInterface
        if let existing = networks.values.first(where: { $0.interfaceName == ifname }) {
            throw ServiceError("interface \(ifname) is already used by network \(existing.config.name)", errno: EEXIST)
        }
        if (try? netlink.linkIndex(name: ifname)) ?? nil != nil {
            throw ServiceError("interface \(ifname) already exists", errno: EEXIST)
        }
        let tap: TapDevice
        do {
            tap = try TapDevice.open(name: ifname, offloads: config.offload)
        } catch {
            throw ServiceError("open TAP \(ifname): \(error)", errno: error.errno)
        }
        for refusal in tap.offloadRefusals {
            logger.warning("offload fallback: \(refusal)", metadata: ["network": "\(config.name)", "interface": "\(tap.name)"])
        }
        if config.offload {
            logger.info("TAP offloads", metadata: ["network": "\(config.name)", "offloads": "\(tap.offloads)"])
        }
        var fabric: VXLANFabric.Created?
        if config.vxlan != nil {
            do { fabric = try makeFabric(config, using: netlink) } catch {
                tap.close()
                throw error
            }
        }
        let setup = InterfaceSetup(name: tap.name, mac: config.effectiveMAC, mtu: config.mtu,
                                   kernelAddresses: fabric == nil ? config.kernelAddresses.map(\.description) : [],
                                   bridge: fabric?.fabric.bridge ?? config.bridge)
        do {
            try setup.apply(using: netlink)
        } catch {
            tap.close()
            if let fabric { VXLANFabric.remove(fabric, using: netlink) }
            throw ServiceError("\(error)", errno: error.errno)
        }
        fabrics[config.name] = fabric
        return Network(config: config, tap: tap)
    }

    func bringUp(_ config: NetworkConfig) throws(ServiceError) {
        let n = try prepare(config)
        do {
            try n.start(logger: logger, runDir: options.runDir, budgets: budgets)
        } catch {
            n.stop()
            removeFabric(config.name)
            throw error
        }
        networks[config.name] = n
        failed[config.name] = nil
        logger.info("network \(config.name) up", metadata: ["interface": "\(n.interfaceName)"])
    }

    func takeDown(_ name: String) {
        guard let n = networks.removeValue(forKey: name) else { return }
        n.stop()
        // Its stack and connections are freed now: give the free pages of glibc's arenas back,
        // so a network that served a burst does not leave ztapd's RSS at the burst's size.
        _ = cshim_malloc_trim()
        removeFabric(name)
        logger.info("network \(name) down", metadata: ["interface": "\(n.interfaceName)"])
    }

    /// Applies a config change to a running network: live where the kernel and stack allow it,
    /// by a restart of the network where they do not (interface name, MAC, bridge, the VXLAN
    /// device's identity). Remote= changes only FDB entries.
    func applyChange(from old: NetworkConfig, to new: NetworkConfig) throws(ServiceError) {
        guard let n = networks[new.name], let netlink else {
            try bringUp(new)
            return
        }
        if old.effectiveInterface != new.effectiveInterface || old.effectiveMAC != new.effectiveMAC || old.bridge != new.bridge
            || old.offload != new.offload || !Self.sameSegment(old, new) {
            takeDown(new.name)
            try bringUp(new)
            return
        }
        let live = liveInterfaces(of: new.name, tap: n.interfaceName)
        if old.mtu != new.mtu { try checkUnderlayMTU(new, using: netlink) }
        do {
            if old.mtu != new.mtu { for i in live.mtu { try netlink.setMTU(interface: i, mtu: new.mtu) } }
            let oldK = Set(old.kernelAddresses.map(\.description)), newK = Set(new.kernelAddresses.map(\.description))
            for a in oldK.subtracting(newK).sorted() { try netlink.removeAddress(interface: live.addresses, address: a) }
            for a in newK.subtracting(oldK).sorted() { try netlink.addAddress(interface: live.addresses, address: a) }
            try applyRemotes(of: new, using: netlink)
        } catch {
            throw ServiceError("\(error)", errno: error.errno)
        }
        n.config = new
        if Network.access(for: old) != Network.access(for: new) { n.post(.access(Network.access(for: new))) }
        let s = Network.settings(for: new, mac: n.stackMAC)
        if s != Network.settings(for: old, mac: n.stackMAC) { n.post(.reconfigure(s)) }
    }

    /// SIGHUP / `ztctl reload`: re-read everything; a bad file leaves its running config alone.
    func reload() -> ControlResponse {
        var problems: [String] = []
        do {
            daemonConfig = try DaemonConfig.load(path: options.configDir + "/ztapd.conf")
            applyLogLevel()
        } catch {
            problems.append("\(error)")
            logger.error("reload: keeping running daemon config: \(error)")
        }
        let (configs, errors) = NetworkDirectory.load(directory: networksDir)
        var broken = Set<String>()
        for e in errors {
            let name = Self.networkName(ofFile: e.file)
            broken.insert(name)
            problems.append("\(e)")
            logger.error("reload: keeping running config of \(name): \(e)")
        }
        let wanted = Dictionary(configs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for name in networks.keys.sorted() where wanted[name] == nil && !broken.contains(name) {
            takeDown(name)
        }
        for name in failed.keys where wanted[name] == nil && !broken.contains(name) { failed[name] = nil }
        for (name, config) in wanted.sorted(by: { $0.key < $1.key }) {
            do {
                if let n = networks[name] {
                    if n.config != config { try applyChange(from: n.config, to: config) }
                } else {
                    try bringUp(config)
                }
            } catch {
                problems.append("network \(name): \(error.message)")
                failed[name] = (config, error.message)
                logger.error("reload: network \(name) failed: \(error)")
            }
        }
        logger.info("reloaded", metadata: ["networks": "\(networks.count)", "problems": "\(problems.count)"])
        if problems.isEmpty { return .success("reloaded: \(networks.count) network(s) up") }
        return .failure("reload finished with errors (running config kept for these):\n" + problems.joined(separator: "\n"))
    }

    /// Every intercepted socket costs ztapd one fd (two while its RPC is pending): take the whole
    /// hard limit, as the 1024 default soft limit would cap a network far below MaxConnections.
    func raiseFileLimit() {
        var lim = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0, lim.rlim_cur < lim.rlim_max else { return }
        let old = lim.rlim_cur
        lim.rlim_cur = lim.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 {
            logger.debug("fd limit raised", metadata: ["from": "\(old)", "to": "\(lim.rlim_max)"])
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
