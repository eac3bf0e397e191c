import CShims
import Foundation
import LinuxNet
import Logging
import NetStack
import PhyLoop
import SystemPackage
import ZTConfig
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

/// The control commands (`ztctl`): each turns a request into a response on the main thread.
extension Daemon {
    func handle(_ request: ControlRequest, peer: ControlPeer) -> ControlResponse {
        let r = dispatch(request, peer: peer)
        controlStats.count(request.command.rawValue, r.ok ? "ok" : "error")
        return r
    }

    private func dispatch(_ request: ControlRequest, peer: ControlPeer) -> ControlResponse {
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
        case .metrics: return metrics()
        case .capture: return .failure("capture is answered with a socket; this connection cannot carry one", errno: EINVAL)
        }
    }

    func status() -> ControlResponse {
        var r = ControlResponse(ok: true)
        let caps = Capabilities.current()["CapEff", default: 0]
        r.status = DaemonStatus(version: ztapVersion, pid: getpid(), uptimeSeconds: Date().timeIntervalSince(startTime),
                                configDir: options.configDir, runDir: options.runDir,
                                networks: networks.count + failed.count, networksUp: networks.count,
                                capabilities: String(format: "%016llx", caps),
                                user: UserDB.userName(uid: geteuid()) ?? "\(geteuid())")
        return r
    }

    func list(only: String?) -> ControlResponse {
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

    func validName(_ name: String?) -> Result<String, ServiceError> {
        guard let name, !name.isEmpty else { return .failure(ServiceError("a network name is required", errno: EINVAL)) }
        guard NetworkConfig.isValidName(name) else {
            return .failure(ServiceError("invalid network name \"\(name)\": use [a-z0-9][a-z0-9-]{0,31}", errno: EINVAL))
        }
        return .success(name)
    }

    func join(_ request: ControlRequest) -> ControlResponse {
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
            if let bad = Self.invalidJoinOption(o) { return .failure(bad, errno: EINVAL) }
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

    func leave(_ rawName: String?) -> ControlResponse {
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

    func get(_ rawName: String?, key: String?) -> ControlResponse {
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

    func set(_ rawName: String?, assignments: [String]) -> ControlResponse {
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

    func connections(_ name: String?) -> ControlResponse {
        var out: [ConnectionInfo] = []
        if let name, networks[name] == nil { return .failure("no running network named \(name)", errno: ENOENT) }
        for (n, net) in networks.sorted(by: { $0.key < $1.key }) where name == nil || name == n {
            out += net.ask { .connections($0) } ?? []
        }
        var r = ControlResponse(ok: true)
        r.connections = out
        return r
    }

}
