/// One network, from `networks.d/NAME.conf`: sections `[Network]`, `[VXLAN]`, `[Stack]` and `[Access]`.
public struct NetworkConfig: Equatable, Sendable {
    /// From the file name NAME.conf; `[a-z0-9][a-z0-9-]{0,31}`.
    public var name: String

    // [Network]
    /// `Interface=`: TAP name; unset means `effectiveInterface`.
    public var interface: String?
    /// `MACAddress=`: unicast, normalised to lowercase `xx:xx:xx:xx:xx:xx`; unset means `effectiveMAC`.
    public var macAddress: String?
    /// `MTU=`: default 2800, allowed 1280...65521 (a TAP's largest: 65535 minus its Ethernet header).
    public var mtu: Int
    /// `Address=`: the stack's own addresses (repeatable, IPv4 and IPv6, each with its on-link
    /// prefix; the stack adds its IPv6 link-local address by itself).
    public var addresses: [IPPrefix]
    /// `KernelAddress=`: addresses for the kernel side of the TAP (repeatable, v4 and v6).
    public var kernelAddresses: [IPPrefix]
    /// `Gateway=` (IPv4): an address inside an `Address=` subnet that the stack routes other
    /// IPv4 traffic to.
    public var gateway: String?
    /// `Gateway=` (IPv6): a link-local address or one inside an IPv6 `Address=` prefix, for other
    /// IPv6 traffic. `Gateway=` takes one address of each family.
    public var gateway6: String?
    /// `DefaultRoute=`: intercept all non-loopback IPv4 and IPv6 (default no).
    public var defaultRoute: Bool
    /// `Route=`: extra destinations reached through this network (repeatable).
    public var routes: [IPPrefix]
    /// `Bridge=`: an existing Linux bridge to enslave the TAP into.
    public var bridge: String?
    /// `Services=`: built-in diagnostic services (space separated / repeatable).
    public var services: [ZTService]

    // [VXLAN] as written; `vxlan` (VXLANConfig.swift) is the validated view.
    /// `VNI=`: VXLAN network identifier.
    public var vxlanVNI: Int?
    /// `Local=`: this host's underlay address (host prefix).
    public var vxlanLocal: IPPrefix?
    /// `Remote=`: the other hosts' underlay addresses (repeatable).
    public var vxlanRemotes: [IPPrefix]
    /// `DestinationPort=`: UDP port, default 4789.
    public var vxlanDestinationPort: Int
    /// `Device=`: underlay device the VXLAN device is bound to.
    public var vxlanDevice: String?

    // [Stack]
    /// `TCPReceiveBuffer=`: bytes per connection, default 4 MiB, 64 KiB...64 MiB.
    public var tcpReceiveBuffer: Int
    /// `TCPSendBuffer=`: same rules.
    public var tcpSendBuffer: Int
    /// `MaxConnections=`: default 4096, 1...65536.
    public var maxConnections: Int
    /// `Offload=`: virtio header with checksum and segmentation offloads on the TAP (default yes).
    public var offload: Bool
    /// `BusyPoll=`: microseconds the network's loop keeps polling after activity before it
    /// sleeps (default 20, 0 = off, at most 1000).
    public var busyPoll: Int

    // [Access]
    /// `AllowUsers=`: users (names or uids) allowed to use this network besides root.
    public var allowUsers: [String]
    /// `AllowGroups=`: groups (names or gids) whose members may use this network.
    public var allowGroups: [String]
    /// `AllowPrivilegedPorts=`: admitted users may bind ports below 1024 on this network without
    /// being root or holding CAP_NET_BIND_SERVICE (default no).
    public var allowPrivilegedPorts: Bool

    public static let defaultMTU = 2800
    public static let mtuRange = 1280...65521
    public static let defaultTCPBuffer = 4 << 20
    public static let tcpBufferRange = (64 << 10)...(64 << 20)
    public static let defaultMaxConnections = 4096
    public static let maxConnectionsRange = 1...65536
    public static let defaultBusyPoll = 20
    public static let busyPollRange = 0...1000

    /// A network with every key at its default.
    public init(name: String) {
        self.name = name
        interface = nil
        macAddress = nil
        mtu = NetworkConfig.defaultMTU
        addresses = []
        kernelAddresses = []
        gateway = nil
        gateway6 = nil
        defaultRoute = false
        routes = []
        bridge = nil
        services = []
        vxlanVNI = nil
        vxlanLocal = nil
        vxlanRemotes = []
        vxlanDestinationPort = NetworkConfig.defaultVXLANPort
        vxlanDevice = nil
        tcpReceiveBuffer = NetworkConfig.defaultTCPBuffer
        tcpSendBuffer = NetworkConfig.defaultTCPBuffer
        maxConnections = NetworkConfig.defaultMaxConnections
        offload = true
        busyPoll = NetworkConfig.defaultBusyPoll
        allowUsers = []
        allowGroups = []
        allowPrivilegedPorts = false
    }

    /// `[a-z0-9][a-z0-9-]{0,31}`: safe in file names, interface names and command lines.
    public static func isValidName(_ s: String) -> Bool {
        guard (1...32).contains(s.utf8.count) else { return false }
        for (i, c) in s.utf8.enumerated() {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): continue
            case UInt8(ascii: "-") where i > 0: continue
            default: return false
            }
        }
        return true
    }

    static func nameReason(_ s: String) -> String {
        "invalid network name \"\(s)\": expected 1 to 32 characters [a-z0-9-], not starting with -"
    }

    public static func parse(text: String, name: String, file: String) throws(ConfigError) -> NetworkConfig {
        guard isValidName(name) else { throw ConfigError(file: file, message: nameReason(name)) }
        let doc = try INIDocument(text: text, file: file)
        return try parse(doc, name: name)
    }

    static func parse(_ doc: INIDocument, name: String) throws(ConfigError) -> NetworkConfig {
        var config = NetworkConfig(name: name)
        let lines = try ModelParser.apply(doc, specs: NetworkConfig.specs, to: &config)
        try config.checkConsistency(file: doc.file, lines: lines)
        return config
    }

    /// Reads and parses `path`; the name is the file name without `.conf`.
    public static func load(path: String) throws(ConfigError) -> NetworkConfig {
        let name = try nameFromPath(path)
        guard let text = try FileIO.readText(path: path) else {
            throw ConfigError(file: path, message: "cannot open")  // unreachable: missingOK is false
        }
        return try parse(text: text, name: name, file: path)
    }

    static func nameFromPath(_ path: String) throws(ConfigError) -> String {
        let base = FileIO.baseName(path)
        guard base.hasSuffix(".conf") else {
            throw ConfigError(file: path, message: "network file name must be NAME.conf")
        }
        let name = String(base.dropLast(5))
        guard isValidName(name) else { throw ConfigError(file: path, message: nameReason(name)) }
        return name
    }

    // MARK: - Derived names

    /// The TAP name: `Interface=` if set, else `zt-NAME` when that fits in 15 characters, else
    /// `zt` + the first 9 characters of the name + 4 hex digits of its FNV-1a hash. The long form
    /// has no `-` after `zt` (names never start with `-`), so it cannot collide with a short form.
    public var effectiveInterface: String {
        if let interface { return interface }
        return NetworkConfig.defaultInterface(for: name)
    }

    static func defaultInterface(for name: String) -> String {
        if name.utf8.count <= 12 { return "zt-" + name }
        let h = fnv1a32(name)
        let folded = UInt16(truncatingIfNeeded: h >> 16) ^ UInt16(truncatingIfNeeded: h)
        return "zt" + name.prefix(9) + Value.hex2(UInt8(folded >> 8)) + Value.hex2(UInt8(folded & 0xFF))
    }

    /// `MACAddress=` if set, else a locally administered unicast MAC from the name's FNV-1a hash,
    /// so a network keeps its MAC across restarts (neighbours' ARP caches stay valid). With
    /// `[VXLAN]` the hash also covers `Local=`: the hosts share one segment, so their MACs differ.
    public var effectiveMAC: String {
        if let macAddress { return macAddress }
        return NetworkConfig.defaultMAC(for: name + hostSalt)
    }

    /// "" for a single-host network; "@LOCAL" with [VXLAN], to derive per-host MACs.
    public var hostSalt: String { vxlanLocal.map { "@" + $0.address } ?? "" }

    static func defaultMAC(for name: String) -> String {
        let h = fnv1a64("ztap-mac:" + name)
        var b = (0..<6).map { UInt8(truncatingIfNeeded: h >> (8 * UInt64($0))) }
        b[0] = (b[0] & 0xFC) | 0x02  // locally administered, unicast
        return Value.renderMAC(b)
    }

    // MARK: - Rendering

    /// A complete file for `ztctl join`: a short header, then every key that differs from its
    /// default. `NetworkConfig.parse(text: renderNewFile(), name: name, ...)` gives back `self`.
    public func renderNewFile() -> String {
        var out = "# ztap network \"\(name)\", created by ztctl join.\n"
        out += "# Edit with `ztctl set \(name) KEY=VALUE` or by hand, then `ztctl reload`.\n"
        out += "# Reference of all keys: docs/CONFIG.md.\n"
        for section in NetworkConfig.sectionNames {
            let lines = NetworkConfig.specs.filter { $0.section == section && !$0.isDefault(self) }
                .flatMap { spec in spec.render(self).map { "\(spec.key)=\($0)" } }
            // [Network] always appears: a join without addresses still names the section to fill in.
            guard !lines.isEmpty || section == "Network" else { continue }
            out += "\n[\(section)]\n"
            for l in lines { out += l + "\n" }
        }
        return out
    }

    static let sectionNames = ["Network", "VXLAN", "Stack", "Access"]

    // MARK: - Cross-key checks

    func checkConsistency(file: String, lines: KeyLines) throws(ConfigError) {
        for (i, k) in kernelAddresses.enumerated() {
            if let j = addresses.firstIndex(where: { $0.bytes == k.bytes }) {
                throw ConfigError(file: file, line: lines.item("KernelAddress", i),
                                  message: "KernelAddress=\(k) has the same address as Address=\(addresses[j])"
                                      + (lines.item("Address", j).map { " on line \($0)" } ?? "")
                                      + "; the kernel side and the stack are two different hosts")
            }
        }
        if let gateway6, let (_, gw) = IPPrefix.parseAddress(gateway6) {
            let line = lines.item("Gateway", gateway == nil ? 0 : 1) ?? lines.first("Gateway")
            let v6 = addresses.filter { $0.family == .v6 }
            if let own = v6.first(where: { $0.bytes == gw }) {
                throw ConfigError(file: file, line: line,
                                  message: "invalid Gateway=\(gateway6): it is the stack's own Address=\(own)")
            }
            let linkLocal = gw[0] == 0xFE && gw[1] & 0xC0 == 0x80
            if !linkLocal && !v6.contains(where: { $0.contains(addressBytes: gw) }) {
                let have = v6.isEmpty ? "there is no IPv6 Address=" : "Address= has " + v6.map(\.description).joined(separator: " ")
                throw ConfigError(file: file, line: line,
                                  message: "invalid Gateway=\(gateway6): must be link-local (fe80::/10) or inside an IPv6 Address= prefix (\(have))")
            }
        }
        if let gateway, let (_, gw) = IPPrefix.parseAddress(gateway) {
            let line = lines.first("Gateway")
            let v4 = addresses.filter { $0.family == .v4 }
            if let own = v4.first(where: { $0.bytes == gw }) {
                throw ConfigError(file: file, line: line,
                                  message: "invalid Gateway=\(gateway): it is the stack's own Address=\(own)")
            }
            if !v4.contains(where: { $0.contains(addressBytes: gw) }) {
                let have = v4.isEmpty ? "there is no IPv4 Address=" : "Address= has " + v4.map(\.description).joined(separator: " ")
                throw ConfigError(file: file, line: line,
                                  message: "invalid Gateway=\(gateway): must be inside an IPv4 Address= subnet (\(have))")
            }
        }
        if let bridge, bridge == effectiveInterface {
            throw ConfigError(file: file, line: lines.first("Bridge"),
                              message: "invalid Bridge=\(bridge): that is this network's own interface name")
        }
        try checkVXLAN(file: file, lines: lines)
    }

    // MARK: - Keys

    static let specs: [KeySpec<NetworkConfig>] = baseSpecs + vxlanSpecs

    static let baseSpecs: [KeySpec<NetworkConfig>] = [
        KeySpec(section: "Network", key: "Interface", arity: .single,
                help: "TAP interface name (1-15 of [A-Za-z0-9_.-]); default zt-NAME",
                apply: { (c, v) throws(Reason) in
                    guard Value.isValidInterfaceName(v) else {
                        throw Value.invalid("Interface", v, "expected 1 to 15 characters [A-Za-z0-9_.-], not . or ..")
                    }
                    c.interface = v
                },
                reset: { $0.interface = nil }, render: { $0.interface.map { [$0] } ?? [] },
                isDefault: { $0.interface == nil }),
        KeySpec(section: "Network", key: "MACAddress", arity: .single,
                help: "unicast MAC of the stack side, xx:xx:xx:xx:xx:xx; default derived from the name",
                apply: { (c, v) throws(Reason) in
                    guard let b = Value.macBytes(v) else {
                        throw Value.invalid("MACAddress", v, "expected six hex pairs like 02:00:5e:10:00:01")
                    }
                    guard b[0] & 1 == 0, b.contains(where: { $0 != 0 }) else {
                        throw Value.invalid("MACAddress", v, "expected a unicast address (lowest bit of the first byte clear, not all zero)")
                    }
                    c.macAddress = Value.renderMAC(b)
                },
                reset: { $0.macAddress = nil }, render: { $0.macAddress.map { [$0] } ?? [] },
                isDefault: { $0.macAddress == nil }),
        KeySpec(section: "Network", key: "MTU", arity: .single,
                help: "interface MTU, 1280...65521 (default 2800)",
                apply: { (c, v) throws(Reason) in c.mtu = try Value.integer("MTU", v, NetworkConfig.mtuRange) },
                reset: { $0.mtu = NetworkConfig.defaultMTU }, render: { ["\($0.mtu)"] },
                isDefault: { $0.mtu == NetworkConfig.defaultMTU }),
        KeySpec(section: "Network", key: "Address", arity: .list,
                help: "the stack's own addresses, ADDRESS/PREFIX (repeatable)",
                apply: { (c, v) throws(Reason) in
                    let p = try hostAddress("Address", v)
                    if let other = c.addresses.first(where: { $0.bytes == p.bytes }) {
                        throw Reason("duplicate Address=\(v): \(other) is already listed")
                    }
                    c.addresses.append(p)
                },
                reset: { $0.addresses = [] }, render: { $0.addresses.map(\.description) },
                isDefault: { $0.addresses.isEmpty }),
        KeySpec(section: "Network", key: "KernelAddress", arity: .list,
                help: "addresses of the kernel side of the TAP, ADDRESS/PREFIX, IPv4 or IPv6 (repeatable)",
                apply: { (c, v) throws(Reason) in
                    let p = try hostAddress("KernelAddress", v)
                    if let other = c.kernelAddresses.first(where: { $0.bytes == p.bytes }) {
                        throw Reason("duplicate KernelAddress=\(v): \(other) is already listed")
                    }
                    c.kernelAddresses.append(p)
                },
                reset: { $0.kernelAddresses = [] }, render: { $0.kernelAddresses.map(\.description) },
                isDefault: { $0.kernelAddresses.isEmpty }),
        KeySpec(section: "Network", key: "Gateway", arity: .list,
                help: "routers for traffic to other destinations: one IPv4 address inside an Address= subnet, one IPv6 "
                    + "address (link-local or inside an IPv6 Address= prefix)",
                apply: { (c, v) throws(Reason) in
                    guard let (family, bytes) = IPPrefix.parseAddress(v) else {
                        throw Value.invalid("Gateway", v, "expected an address like 10.200.0.1 or fe80::1 (no /prefix)")
                    }
                    let p = IPPrefix(family: family, bytes: bytes, prefixLength: family.maxPrefixLength)
                    guard !p.isUnspecified, !p.isMulticast, !p.isLimitedBroadcast, !p.isLoopback else {
                        throw Value.invalid("Gateway", v, "expected a unicast, non-loopback address")
                    }
                    if family == .v4 {
                        if let g = c.gateway { throw Reason("duplicate Gateway=\(v): the IPv4 gateway is already \(g)") }
                        c.gateway = p.address
                    } else {
                        if let g = c.gateway6 { throw Reason("duplicate Gateway=\(v): the IPv6 gateway is already \(g)") }
                        c.gateway6 = p.address
                    }
                },
                reset: { $0.gateway = nil; $0.gateway6 = nil },
                render: { [$0.gateway, $0.gateway6].compactMap { $0 } },
                isDefault: { $0.gateway == nil && $0.gateway6 == nil }),
        KeySpec(section: "Network", key: "DefaultRoute", arity: .single,
                help: "yes: intercept all non-loopback IPv4 and IPv6 through this network (default no)",
                apply: { (c, v) throws(Reason) in c.defaultRoute = try Value.bool("DefaultRoute", v) },
                reset: { $0.defaultRoute = false }, render: { [$0.defaultRoute ? "yes" : "no"] },
                isDefault: { !$0.defaultRoute }),
        KeySpec(section: "Network", key: "Route", arity: .list,
                help: "extra destinations NETWORK/PREFIX reached through this network (repeatable)",
                apply: { (c, v) throws(Reason) in
                    guard let p = IPPrefix(v, defaultsToHost: true) else {
                        throw Value.invalid("Route", v, "expected NETWORK/PREFIX like 10.20.0.0/16 or fd00:1::/64, or one address")
                    }
                    guard p.isNetwork else {
                        throw Value.invalid("Route", v, "host bits are set; did you mean \(p.network)?")
                    }
                    guard !p.isMulticast, !p.isLoopback else {
                        throw Value.invalid("Route", v, "expected a unicast, non-loopback destination")
                    }
                    if c.routes.contains(p) { throw Reason("duplicate Route=\(v): already listed") }
                    c.routes.append(p)
                },
                reset: { $0.routes = [] }, render: { $0.routes.map(\.description) },
                isDefault: { $0.routes.isEmpty }),
        KeySpec(section: "Network", key: "Bridge", arity: .single,
                help: "existing Linux bridge to enslave the TAP into",
                apply: { (c, v) throws(Reason) in
                    guard Value.isValidInterfaceName(v) else {
                        throw Value.invalid("Bridge", v, "expected an interface name, 1 to 15 characters [A-Za-z0-9_.-]")
                    }
                    c.bridge = v
                },
                reset: { $0.bridge = nil }, render: { $0.bridge.map { [$0] } ?? [] },
                isDefault: { $0.bridge == nil }),
        KeySpec(section: "Network", key: "Services", arity: .list,
                help: "built-in diagnostic services: echo discard chargen",
                apply: { (c, v) throws(Reason) in
                    guard let s = ZTService(rawValue: v) else {
                        throw Value.invalid("Services", v,
                                            "expected any of " + ZTService.allCases.map(\.rawValue).joined(separator: ", "))
                    }
                    if c.services.contains(s) { throw Reason("duplicate Services=\(v): already listed") }
                    c.services.append(s)
                },
                reset: { $0.services = [] }, render: { $0.services.map(\.rawValue) },
                isDefault: { $0.services.isEmpty }),
        KeySpec(section: "Stack", key: "TCPReceiveBuffer", arity: .single,
                help: "TCP receive buffer per connection, 64K...64M (default 4M)",
                apply: { (c, v) throws(Reason) in
                    c.tcpReceiveBuffer = try Value.size("TCPReceiveBuffer", v, NetworkConfig.tcpBufferRange)
                },
                reset: { $0.tcpReceiveBuffer = NetworkConfig.defaultTCPBuffer },
                render: { [Value.renderSize($0.tcpReceiveBuffer)] },
                isDefault: { $0.tcpReceiveBuffer == NetworkConfig.defaultTCPBuffer }),
        KeySpec(section: "Stack", key: "TCPSendBuffer", arity: .single,
                help: "TCP send buffer per connection, 64K...64M (default 4M)",
                apply: { (c, v) throws(Reason) in
                    c.tcpSendBuffer = try Value.size("TCPSendBuffer", v, NetworkConfig.tcpBufferRange)
                },
                reset: { $0.tcpSendBuffer = NetworkConfig.defaultTCPBuffer },
                render: { [Value.renderSize($0.tcpSendBuffer)] },
                isDefault: { $0.tcpSendBuffer == NetworkConfig.defaultTCPBuffer }),
        KeySpec(section: "Stack", key: "MaxConnections", arity: .single,
                help: "most simultaneous TCP connections, 1...65536 (default 4096)",
                apply: { (c, v) throws(Reason) in
                    c.maxConnections = try Value.integer("MaxConnections", v, NetworkConfig.maxConnectionsRange)
                },
                reset: { $0.maxConnections = NetworkConfig.defaultMaxConnections }, render: { ["\($0.maxConnections)"] },
                isDefault: { $0.maxConnections == NetworkConfig.defaultMaxConnections }),
        KeySpec(section: "Stack", key: "Offload", arity: .single,
                help: "no: plain TAP frames, without checksum and segmentation offloads (default yes)",
                apply: { (c, v) throws(Reason) in c.offload = try Value.bool("Offload", v) },
                reset: { $0.offload = true }, render: { [$0.offload ? "yes" : "no"] },
                isDefault: { $0.offload }),
        KeySpec(section: "Stack", key: "BusyPoll", arity: .single,
                help: "poll this long after activity before sleeping, 0...1000us (default 20us, 0 = off)",
                apply: { (c, v) throws(Reason) in
                    c.busyPoll = try Value.microseconds("BusyPoll", v, NetworkConfig.busyPollRange)
                },
                reset: { $0.busyPoll = NetworkConfig.defaultBusyPoll },
                render: { [$0.busyPoll == 0 ? "0" : "\($0.busyPoll)us"] },
                isDefault: { $0.busyPoll == NetworkConfig.defaultBusyPoll }),
        KeySpec(section: "Access", key: "AllowUsers", arity: .list,
                help: "users (names or uids) allowed to use this network; root always is",
                apply: { (c, v) throws(Reason) in
                    let u = try Value.principal("AllowUsers", v, kind: "user")
                    if c.allowUsers.contains(u) { throw Reason("duplicate AllowUsers=\(v): already listed") }
                    c.allowUsers.append(u)
                },
                reset: { $0.allowUsers = [] }, render: { $0.allowUsers }, isDefault: { $0.allowUsers.isEmpty }),
        KeySpec(section: "Access", key: "AllowGroups", arity: .list,
                help: "groups (names or gids) whose members may use this network",
                apply: { (c, v) throws(Reason) in
                    let g = try Value.principal("AllowGroups", v, kind: "group")
                    if c.allowGroups.contains(g) { throw Reason("duplicate AllowGroups=\(v): already listed") }
                    c.allowGroups.append(g)
                },
                reset: { $0.allowGroups = [] }, render: { $0.allowGroups }, isDefault: { $0.allowGroups.isEmpty }),
        KeySpec(section: "Access", key: "AllowPrivilegedPorts", arity: .single,
                help: "admitted users may bind ports below 1024 without CAP_NET_BIND_SERVICE (default no)",
                apply: { (c, v) throws(Reason) in c.allowPrivilegedPorts = try Value.bool("AllowPrivilegedPorts", v) },
                reset: { $0.allowPrivilegedPorts = false }, render: { [$0.allowPrivilegedPorts ? "yes" : "no"] },
                isDefault: { !$0.allowPrivilegedPorts }),
    ]

    /// An interface address: prefix required, unicast, not loopback.
    static func hostAddress(_ key: String, _ v: String) throws(Reason) -> IPPrefix {
        guard let p = IPPrefix(v) else {
            throw Value.invalid(key, v, "expected ADDRESS/PREFIX like 10.200.0.2/24 (prefix 0-32) or fd00::2/64 (0-128)")
        }
        guard !p.isUnspecified, !p.isMulticast, !p.isLimitedBroadcast, !p.isLoopback else {
            throw Value.invalid(key, v, "expected a unicast, non-loopback address")
        }
        return p
    }
}
