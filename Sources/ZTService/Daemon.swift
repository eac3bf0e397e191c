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
        init(pid: pid_t, uid: uid_t, gid: gid_t, allowed: Bool) {
            self.pid = pid; self.uid = uid; self.gid = gid; self.allowed = allowed
        }
    }

    let options: DaemonOptions
    var logger: Logger
    var daemonConfig: DaemonConfig
    private var loop: PhyLoop<Daemon>!
    private var networks: [String: Network] = [:]
    /// Networks whose file exists but which failed to come up (shown by `list` with the reason).
    private var failed: [String: (config: NetworkConfig?, error: String)] = [:]
    private var running = true
    private var exitCode: Int32 = 0
    private let startTime = Date()
    private var controlPath: String { options.runDir + "/control.sock" }
    private var networksDir: String { options.configDir + "/networks.d" }
    private var controlPeers = 0
    private let maxControlPeers = 64
    var netlink: Netlink?
    /// Bridge + VXLAN device of each running [VXLAN] network (DaemonVXLAN.swift).
    var fabrics: [String: VXLANFabric.Created] = [:]

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
                try loop.poll(deadline: nil)
            } catch {
                logger.critical("control loop failed: \(error)")
                exitCode = 1
                break
            }
        }
        shutdown()
        return exitCode
    }

    private func start() throws(ServiceError) {
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

        for n in prepared {
            do {
                try n.start(logger: logger, runDir: options.runDir)
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

    private func applyLogLevel() {
        logger.logLevel = Self.level(daemonConfig.logLevel)
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

    private func dropPrivileges() throws(ServiceError) {
        guard geteuid() == 0 || Capabilities.current()["CapEff", default: 0] != 0 else { return }
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

    private func openControlSocket() throws(ServiceError) {
        if mkdir(options.runDir, 0o755) != 0 && errno != EEXIST {
            throw ServiceError("cannot create \(options.runDir): \(String(cString: strerror(errno)))", errno: errno)
        }
        // A socket file left by a crashed daemon is removed; a live daemon is not displaced.
        var st = stat()
        if lstat(controlPath, &st) == 0 {
            let probe = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            let live = cshim_connect_unix(probe, controlPath) == 0
            close(probe)
            if live { throw ServiceError("another ztapd is already serving \(controlPath)", errno: EADDRINUSE) }
            unlink(controlPath)
        }
        let fd = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServiceError("socket: \(String(cString: strerror(errno)))", errno: errno) }
        // World-connectable on purpose: SO_PEERCRED decides, so a refused user gets a clear
        // answer instead of a bare EACCES from connect.
        guard cshim_bind_unix(fd, controlPath) == 0, chmod(controlPath, 0o666) == 0, listen(fd, 64) == 0 else {
            let e = errno
            close(fd)
            throw ServiceError("cannot listen on \(controlPath): \(String(cString: strerror(e)))", errno: e)
        }
        do {
            try Sys.setNonBlocking(fd)
            try loop.add(fd: fd, kind: .listener, context: .controlListener)
        } catch {
            close(fd)
            throw ServiceError("cannot watch \(controlPath): \(error)")
        }
    }

    private func shutdown() {
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
    private func prepare(_ config: NetworkConfig) throws(ServiceError) -> Network {
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
            tap = try TapDevice.open(name: ifname)
        } catch {
            throw ServiceError("open TAP \(ifname): \(error)", errno: error.errno)
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

    private func bringUp(_ config: NetworkConfig) throws(ServiceError) {
        let n = try prepare(config)
        do {
            try n.start(logger: logger, runDir: options.runDir)
        } catch {
            n.stop()
            removeFabric(config.name)
            throw error
        }
        networks[config.name] = n
        failed[config.name] = nil
        logger.info("network \(config.name) up", metadata: ["interface": "\(n.interfaceName)"])
    }

    private func takeDown(_ name: String) {
        guard let n = networks.removeValue(forKey: name) else { return }
        n.stop()
        removeFabric(name)
        logger.info("network \(name) down", metadata: ["interface": "\(n.interfaceName)"])
    }

    /// Applies a config change to a running network: live where the kernel and stack allow it,
    /// by a restart of the network where they do not (interface name, MAC, bridge, the VXLAN
    /// device's identity). Remote= changes only FDB entries.
    private func applyChange(from old: NetworkConfig, to new: NetworkConfig) throws(ServiceError) {
        guard let n = networks[new.name], let netlink else {
            try bringUp(new)
            return
        }
        if old.effectiveInterface != new.effectiveInterface || old.effectiveMAC != new.effectiveMAC || old.bridge != new.bridge
            || !Self.sameSegment(old, new) {
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
        if old.allowUsers != new.allowUsers || old.allowGroups != new.allowGroups { n.post(.access(Network.access(for: new))) }
        let s = Network.settings(for: new, mac: n.stackMAC)
        if s != Network.settings(for: old, mac: n.stackMAC) { n.post(.reconfigure(s)) }
    }

    /// SIGHUP / `ztctl reload`: re-read everything; a bad file leaves its running config alone.
    private func reload() -> ControlResponse {
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
    private func raiseFileLimit() {
        var lim = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0, lim.rlim_cur < lim.rlim_max else { return }
        let old = lim.rlim_cur
        lim.rlim_cur = lim.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 {
            logger.debug("fd limit raised", metadata: ["from": "\(old)", "to": "\(lim.rlim_max)"])
        }
    }

    // MARK: - Control requests

    func handle(_ request: ControlRequest, peer: ControlPeer) -> ControlResponse {
        guard request.version <= ControlRequest.currentVersion else {
            return .failure("unsupported control protocol version \(request.version) (ztapd speaks \(ControlRequest.currentVersion))", errno: EPROTO)
        }
        logger.debug("control request", metadata: ["command": "\(request.command.rawValue)", "uid": "\(peer.uid)"])
        switch request.command {
        case .status: return status()
        case .list: return list(only: request.name)
        case .join: return join(request)
        case .leave: return leave(request.name)
        case .get: return get(request.name, key: request.key)
        case .set: return set(request.name, assignments: request.assignments ?? [])
        case .reload: return reload()
        case .connections: return connections(request.name)
        }
    }

    private func status() -> ControlResponse {
        var r = ControlResponse(ok: true)
        let caps = Capabilities.current()["CapEff", default: 0]
        r.status = DaemonStatus(version: ztapVersion, pid: getpid(), uptimeSeconds: Date().timeIntervalSince(startTime),
                                configDir: options.configDir, runDir: options.runDir,
                                networks: networks.count + failed.count, networksUp: networks.count,
                                capabilities: String(format: "%016llx", caps),
                                user: UserDB.userName(uid: geteuid()) ?? "\(geteuid())")
        return r
    }

    private func list(only: String?) -> ControlResponse {
        var out: [NetworkStatus] = []
        for (name, n) in networks where only == nil || only == name {
            let c = n.config
            var s = NetworkStatus(name: name, state: .up, interface: n.interfaceName, mac: c.effectiveMAC, mtu: c.mtu,
                                  addresses: c.addresses.map(\.description), kernelAddresses: c.kernelAddresses.map(\.description),
                                  bridge: c.vxlan?.bridgeInterface ?? c.bridge, services: c.services.map(\.rawValue), error: nil)
            if let st = n.ask({ .stats($0) }) {
                s.framesIn = st.framesIn
                s.framesOut = st.framesOut
                s.connections = st.connections
                if let e = st.error {
                    s.state = .failed
                    s.error = e
                }
            }
            out.append(s)
        }
        for (name, f) in failed where networks[name] == nil && (only == nil || only == name) {
            let c = f.config
            out.append(NetworkStatus(name: name, state: .failed, interface: c?.effectiveInterface ?? "-",
                                     mac: c?.effectiveMAC ?? "-", mtu: c?.mtu ?? 0,
                                     addresses: c?.addresses.map(\.description) ?? [],
                                     kernelAddresses: c?.kernelAddresses.map(\.description) ?? [],
                                     bridge: c?.bridge, services: c?.services.map(\.rawValue) ?? [], error: f.error))
        }
        if let only, out.isEmpty { return .failure("no network named \(only)", errno: ENOENT) }
        var r = ControlResponse(ok: true)
        r.networks = out.sorted { $0.name < $1.name }
        return r
    }

    func path(of name: String) -> String { networksDir + "/" + name + ".conf" }

    private func validName(_ name: String?) -> Result<String, ServiceError> {
        guard let name, !name.isEmpty else { return .failure(ServiceError("a network name is required", errno: EINVAL)) }
        guard NetworkConfig.isValidName(name) else {
            return .failure(ServiceError("invalid network name \"\(name)\": use [a-z0-9][a-z0-9-]{0,31}", errno: EINVAL))
        }
        return .success(name)
    }

    private func join(_ request: ControlRequest) -> ControlResponse {
        let name: String
        switch validName(request.name) {
        case .success(let n): name = n
        case .failure(let e): return .failure(e.message, errno: e.errno)
        }
        if networks[name] != nil { return .failure("network \(name) is already joined", errno: EEXIST) }
        let file = path(of: name)
        var created = false
        if access(file, F_OK) != 0 {
            // Build the file from the join options, validating through the same parser as at load.
            var c: NetworkConfig
            do { c = try NetworkConfig.parse(text: "[Network]\n", name: name, file: file) } catch {
                return .failure("\(error)", errno: EINVAL)
            }
            let o = request.join ?? JoinOptions()
            var text = c.renderNewFile()
            var doc: INIDocument
            do { doc = try INIDocument(text: text, file: file) } catch { return .failure("\(error)", errno: EINVAL) }
            if !o.addresses.isEmpty { doc.set(section: "Network", key: "Address", values: o.addresses) }
            if !o.kernelAddresses.isEmpty { doc.set(section: "Network", key: "KernelAddress", values: o.kernelAddresses) }
            if let m = o.mtu { doc.set(section: "Network", key: "MTU", values: [String(m)]) }
            if let m = o.mac { doc.set(section: "Network", key: "MACAddress", values: [m]) }
            if let i = o.interface { doc.set(section: "Network", key: "Interface", values: [i]) }
            if let b = o.bridge { doc.set(section: "Network", key: "Bridge", values: [b]) }
            if let v = o.vxlan {
                if let n = v.vni { doc.set(section: "VXLAN", key: "VNI", values: [String(n)]) }
                if let l = v.local { doc.set(section: "VXLAN", key: "Local", values: [l]) }
                if !v.remotes.isEmpty { doc.set(section: "VXLAN", key: "Remote", values: v.remotes) }
                if let p = v.destinationPort { doc.set(section: "VXLAN", key: "DestinationPort", values: [String(p)]) }
                if let d = v.device { doc.set(section: "VXLAN", key: "Device", values: [d]) }
            }
            text = doc.render()
            do { c = try NetworkConfig.parse(text: text, name: name, file: file) } catch {
                return .failure("\(error)", errno: EINVAL)
            }
            if mkdir(networksDir, 0o755) != 0 && errno != EEXIST {
                return .failure("cannot create \(networksDir): \(String(cString: strerror(errno)))", errno: errno)
            }
            do {
                try text.write(toFile: file, atomically: true, encoding: .utf8)
            } catch {
                return .failure("cannot write \(file): \(error.localizedDescription)", errno: EIO)
            }
            created = true
        }
        let config: NetworkConfig
        do {
            config = try NetworkConfig.load(path: file)
        } catch {
            if created { unlink(file) }
            return .failure("\(error)", errno: EINVAL)
        }
        do {
            try bringUp(config)
        } catch {
            if created { unlink(file) } else { failed[name] = (config, error.message) }
            return .failure("join \(name) failed: \(error.message)", errno: error.errno)
        }
        return list(only: name)
    }

    private func leave(_ rawName: String?) -> ControlResponse {
        let name: String
        switch validName(rawName) {
        case .success(let n): name = n
        case .failure(let e): return .failure(e.message, errno: e.errno)
        }
        let known = networks[name] != nil || failed[name] != nil || access(path(of: name), F_OK) == 0
        guard known else { return .failure("no network named \(name)", errno: ENOENT) }
        takeDown(name)
        failed[name] = nil
        if unlink(path(of: name)) != 0 && errno != ENOENT {
            return .failure("network \(name) left, but \(path(of: name)) could not be removed: \(String(cString: strerror(errno)))", errno: errno)
        }
        return .success("left \(name)")
    }

    private func get(_ rawName: String?, key: String?) -> ControlResponse {
        let name: String
        switch validName(rawName) {
        case .success(let n): name = n
        case .failure(let e): return .failure(e.message, errno: e.errno)
        }
        do {
            let kv = try NetworkConfigEditor.get(path: path(of: name), key: key)
            var r = ControlResponse(ok: true)
            r.values = kv.map { KeyValue(key: $0.key, value: $0.value) }
            return r
        } catch {
            return .failure("\(error)", errno: access(path(of: name), F_OK) == 0 ? EINVAL : ENOENT)
        }
    }

    private func set(_ rawName: String?, assignments: [String]) -> ControlResponse {
        let name: String
        switch validName(rawName) {
        case .success(let n): name = n
        case .failure(let e): return .failure(e.message, errno: e.errno)
        }
        guard !assignments.isEmpty else { return .failure("nothing to set: give KEY=VALUE", errno: EINVAL) }
        var pairs: [(key: String, value: String)] = []
        for a in assignments {
            guard let eq = a.firstIndex(of: "=") else { return .failure("\"\(a)\" is not KEY=VALUE", errno: EINVAL) }
            pairs.append((String(a[..<eq]), String(a[a.index(after: eq)...])))
        }
        let file = path(of: name)
        guard let before = FileManager.default.contents(atPath: file) else {
            return .failure("no network named \(name) (\(file) not found)", errno: ENOENT)
        }
        let change: (old: NetworkConfig, new: NetworkConfig)
        do {
            change = try NetworkConfigEditor.apply(path: file, assignments: pairs)
        } catch {
            return .failure("\(error)", errno: EINVAL)
        }
        if networks[name] != nil {
            do {
                try applyChange(from: change.old, to: change.new)
            } catch {
                // The file must describe what runs: put the old bytes back, and the old settings.
                _ = FileManager.default.createFile(atPath: file, contents: before)
                try? applyChange(from: change.new, to: change.old)
                return .failure("cannot apply to running network \(name): \(error.message); nothing changed", errno: error.errno)
            }
        }
        return get(name, key: nil)
    }

    private func connections(_ name: String?) -> ControlResponse {
        var out: [ConnectionInfo] = []
        if let name, networks[name] == nil { return .failure("no running network named \(name)", errno: ENOENT) }
        for (n, net) in networks.sorted(by: { $0.key < $1.key }) where name == nil || name == n {
            out += net.ask { .connections($0) } ?? []
        }
        var r = ControlResponse(ok: true)
        r.connections = out
        return r
    }

    // MARK: - PhySocketHandler

    public func phyOnAccept(listener: PhySocket<Context>, fd: Int32) -> Context? {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        guard cshim_peercred(fd, &pid, &uid, &gid) == 0 else { return nil }
        guard controlPeers < maxControlPeers else {
            logger.warning("control: too many clients, refusing pid \(pid)")
            return nil
        }
        let allowed = isAllowed(uid: uid, gid: gid)
        if !allowed { logger.notice("control: refusing uid \(uid) (pid \(pid))") }
        controlPeers += 1
        return .control(ControlPeer(pid: pid, uid: uid, gid: gid, allowed: allowed))
    }

    func isAllowed(uid: uid_t, gid: gid_t) -> Bool {
        AccessList(users: daemonConfig.controlUsers, groups: daemonConfig.controlGroups)
            .permits(uid: uid, gid: gid) { UserDB.groups(ofUID: $0) }
    }

    public func phyOnReadable(_ socket: PhySocket<Context>) {
        switch socket.context {
        case .signals:
            while true {
                let sig = cshim_signalfd_read(socket.fd)
                if sig <= 0 { break }
                if sig == SIGHUP {
                    logger.info("SIGHUP: reloading configuration")
                    _ = reload()
                } else {
                    logger.info("signal \(sig): stopping")
                    running = false
                }
            }
        case .controlListener:
            break
        case .control(let peer):
            readControl(socket, peer)
        }
    }

    private func readControl(_ socket: PhySocket<Context>, _ peer: ControlPeer) {
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { loop.close(socket); return }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { break }
                loop.close(socket)
                return
            }
            peer.buffer += chunk[0..<n]
            if peer.buffer.count > ControlRequest.maxSize { break }
        }
        while let nl = peer.buffer.firstIndex(of: 0x0A) {
            let line = Array(peer.buffer[..<nl])
            peer.buffer.removeSubrange(...nl)
            respond(socket, peer, to: line)
            if peer.closeAfterWrite { break }
        }
        if peer.buffer.count > ControlRequest.maxSize {
            enqueue(socket, peer, .failure("request larger than \(ControlRequest.maxSize) bytes", errno: EMSGSIZE), close: true)
        }
    }

    private func respond(_ socket: PhySocket<Context>, _ peer: ControlPeer, to line: [UInt8]) {
        let request: ControlRequest
        do {
            request = try ControlCodec.decode(ControlRequest.self, from: line)
        } catch {
            let denied = !peer.allowed
            enqueue(socket, peer, denied ? permissionDenied(peer) : .failure("malformed request: \(Self.describe(error))", errno: EBADMSG),
                    close: denied)
            return
        }
        if peer.allowed {
            enqueue(socket, peer, handle(request, peer: peer), close: false)
        } else if let r = handleNetworkUser(request, peer: peer) {
            enqueue(socket, peer, r, close: false)
        } else {
            enqueue(socket, peer, permissionDenied(peer), close: true)
        }
    }

    private func permissionDenied(_ peer: ControlPeer) -> ControlResponse {
        let who = UserDB.userName(uid: peer.uid) ?? "uid \(peer.uid)"
        return .failure("permission denied: \(who) may not control ztapd (allowed: root, ControlUsers=, ControlGroup= in ztapd.conf)", errno: EACCES)
    }

    /// What a user who may not control ztapd may still ask (what `ztctl run` needs): `list`
    /// (what `ip addr` shows anyway), and `get`/`connections` of the networks whose [Access] lets
    /// them in, in `connections` only their own sockets. nil = not allowed at all.
    private func handleNetworkUser(_ request: ControlRequest, peer: ControlPeer) -> ControlResponse? {
        if request.command == .list { return list(only: request.name) }
        let usable = Set(networks.compactMap { name, n in
            Network.access(for: n.config).permits(uid: peer.uid, gid: peer.gid, groups: { UserDB.groups(ofUID: $0) }) ? name : nil
        })
        if let name = request.name, !usable.contains(name) {
            guard [.get, .connections].contains(request.command) else { return nil }
            let who = UserDB.userName(uid: peer.uid) ?? "uid \(peer.uid)"
            return .failure("permission denied: \(who) may not use network \(name) ([Access] in its file)", errno: EACCES)
        }
        switch request.command {
        case .get:
            return request.name == nil ? .failure("a network name is required", errno: EINVAL) : get(request.name, key: request.key)
        case .connections:
            var r = connections(request.name)
            r.connections = r.connections?.filter { usable.contains($0.network) && $0.uid == peer.uid }
            return r
        default:
            return nil
        }
    }

    static func describe(_ error: Error) -> String {
        if let d = error as? DecodingError {
            switch d {
            case .dataCorrupted(let c): return c.debugDescription
            case .keyNotFound(let k, _): return "missing field \"\(k.stringValue)\""
            case .typeMismatch(_, let c), .valueNotFound(_, let c):
                return "bad field \"\(c.codingPath.map(\.stringValue).joined(separator: "."))\": \(c.debugDescription)"
            @unknown default: return "\(d)"
            }
        }
        return "\(error)"
    }

    private func enqueue(_ socket: PhySocket<Context>, _ peer: ControlPeer, _ r: ControlResponse, close: Bool) {
        peer.output += ControlCodec.encodeLine(r)
        if close { peer.closeAfterWrite = true }
        flush(socket, peer)
    }

    private func flush(_ socket: PhySocket<Context>, _ peer: ControlPeer) {
        while !peer.output.isEmpty {
            let n = peer.output.withUnsafeBytes { Glibc.send(socket.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { loop.setNotifyWritable(socket, true); return }
                loop.close(socket)
                return
            }
            peer.output.removeFirst(n)
        }
        loop.setNotifyWritable(socket, false)
        if peer.closeAfterWrite {
            // Let the client read the refusal before the hang-up: shut down our side only.
            Glibc.shutdown(socket.fd, Int32(SHUT_WR))
            loop.close(socket)
        }
    }

    public func phyOnWritable(_ socket: PhySocket<Context>) {
        if case .control(let peer) = socket.context { flush(socket, peer) }
    }

    public func phyOnClose(_ socket: PhySocket<Context>) {
        if case .control = socket.context { controlPeers -= 1 }
    }

    public func phyOnAcceptAborted(_ context: Context) {
        if case .control = context { controlPeers -= 1 }
    }

    public func phyOnWake() {}
    public func phyOnTimer() {}
}

#if canImport(Glibc)
import Glibc
#endif
