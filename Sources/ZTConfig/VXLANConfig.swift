// VXLANConfig.swift - the [VXLAN] section of a network file: one network spanning hosts over the
// kernel's own VXLAN (docs/MULTIHOST.md).
//
// With the section, ztapd creates a Linux bridge holding the TAP and a VXLAN device, puts
// KernelAddress= on the bridge, and adds one all-zeros FDB entry per Remote= (head-end
// replication). The keys are parsed into flat NetworkConfig fields like every other key (so
// `ztctl set` edits them one by one); `NetworkConfig.vxlan` is the validated whole.

/// A validated `[VXLAN]` section with the names and MAC ztapd derives from it.
public struct VXLANSettings: Equatable, Sendable {
    /// `VNI=`, 0...16777215, the same on every host of the network.
    public var vni: Int
    /// `Local=`: this host's underlay address (host prefix, /32 or /128).
    public var local: IPPrefix
    /// `Remote=`: every other host's underlay address, same family as `local`.
    public var remotes: [IPPrefix]
    /// `DestinationPort=`: UDP port on the underlay, default 4789 (IANA).
    public var destinationPort: Int
    /// `Device=`: underlay device the VXLAN device is bound to; nil lets the routing table decide.
    public var device: String?
    /// The bridge ztapd creates: TAP + VXLAN device as ports, KernelAddress= on it.
    public var bridgeInterface: String
    /// The VXLAN device ztapd creates.
    public var vxlanInterface: String
    /// The bridge's own MAC (fixed, so it does not follow its ports; per host).
    public var bridgeMAC: String

    /// Bytes VXLAN adds on the underlay: outer IPv4 (20) or IPv6 (40) header, UDP (8), VXLAN (8)
    /// and the inner Ethernet header (14).
    public var overhead: Int { local.family == .v4 ? 50 : 70 }

    /// The largest network MTU an underlay with `underlayMTU` carries without fragmenting.
    public func maxMTU(underlayMTU: Int) -> Int { underlayMTU - overhead }
}

extension NetworkConfig {
    public static let defaultVXLANPort = 4789
    public static let vniRange = 0...16_777_215

    /// The `[VXLAN]` section when present (`VNI=` and `Local=` set; `checkVXLAN` guarantees both
    /// whenever any VXLAN key is set).
    public var vxlan: VXLANSettings? {
        guard let vni = vxlanVNI, let local = vxlanLocal else { return nil }
        let base = effectiveInterface
        return VXLANSettings(vni: vni, local: local, remotes: vxlanRemotes, destinationPort: vxlanDestinationPort,
                             device: vxlanDevice,
                             bridgeInterface: NetworkConfig.derivedInterface(base, suffix: "-br"),
                             vxlanInterface: NetworkConfig.derivedInterface(base, suffix: "-vx"),
                             bridgeMAC: NetworkConfig.defaultMAC(for: "bridge:" + name + hostSalt))
    }

    /// Every interface name this network creates: the TAP, and with [VXLAN] the bridge and the
    /// VXLAN device. Two networks of one host must not share any of them.
    public var claimedInterfaces: [String] {
        [effectiveInterface] + (vxlan.map { [$0.bridgeInterface, $0.vxlanInterface] } ?? [])
    }

    /// `BASE + SUFFIX` when it fits in 15 characters (IFNAMSIZ - 1); else the first characters of
    /// BASE, 4 hex digits of BASE's FNV-1a hash, and SUFFIX, so long names stay distinct.
    static func derivedInterface(_ base: String, suffix: String) -> String {
        if base.utf8.count + suffix.utf8.count <= 15 { return base + suffix }
        let h = fnv1a32(base)
        let folded = UInt16(truncatingIfNeeded: h >> 16) ^ UInt16(truncatingIfNeeded: h)
        return String(base.prefix(15 - suffix.utf8.count - 4)) + Value.hex2(UInt8(folded >> 8))
            + Value.hex2(UInt8(folded & 0xFF)) + suffix
    }

    static let vxlanKeys = ["VNI", "Local", "Remote", "DestinationPort", "Device"]

    func checkVXLAN(file: String, lines: KeyLines) throws(ConfigError) {
        let setLines = NetworkConfig.vxlanKeys.compactMap { lines.first($0) }
        guard let firstLine = setLines.min() else { return }
        let missing = [vxlanVNI == nil ? "VNI=" : nil, vxlanLocal == nil ? "Local=" : nil].compactMap { $0 }
        if !missing.isEmpty {
            throw ConfigError(file: file, line: firstLine,
                              message: "[VXLAN] needs VNI= and Local= (missing: \(missing.joined(separator: " ")))")
        }
        guard let v = vxlan else { return }
        for (i, r) in v.remotes.enumerated() {
            if r.family != v.local.family {
                throw ConfigError(file: file, line: lines.item("Remote", i),
                                  message: "invalid Remote=\(r.address): Local=\(v.local.address) is "
                                      + "\(v.local.family == .v4 ? "IPv4" : "IPv6"); every Remote= must be too")
            }
            if r == v.local {
                throw ConfigError(file: file, line: lines.item("Remote", i),
                                  message: "invalid Remote=\(r.address): that is Local=, this host itself")
            }
        }
        if let bridge {
            throw ConfigError(file: file, line: lines.first("Bridge"),
                              message: "Bridge=\(bridge) and [VXLAN] exclude each other: with [VXLAN] ztapd creates "
                                  + "its own bridge \(v.bridgeInterface) for the TAP and the VXLAN device")
        }
        if let device = v.device, claimedInterfaces.contains(device) {
            throw ConfigError(file: file, line: lines.first("Device"),
                              message: "invalid Device=\(device): that is an interface of this network itself; "
                                  + "Device= names the underlay (like eth0 or wg0)")
        }
    }

    /// nil when `MTU=` fits an underlay interface of `underlayMTU`; otherwise the refusal, placed
    /// at the `MTU=` line of `file` (at the first [VXLAN] key when MTU= is the default).
    public func underlayMTUError(underlayInterface: String, underlayMTU: Int, file: String) -> ConfigError? {
        guard let v = vxlan else { return nil }
        let most = v.maxMTU(underlayMTU: underlayMTU)
        guard mtu > most else { return nil }
        var line: Int?
        if let text = try? FileIO.readText(path: file), let doc = try? INIDocument(text: text, file: file) {
            let entries = doc.entries
            line = entries.last(where: { $0.section == "Network" && $0.key == "MTU" && !$0.value.isEmpty })?.line
                ?? entries.first(where: { $0.section == "VXLAN" })?.line
        }
        let family = v.local.family == .v4 ? "IPv4" : "IPv6"
        return ConfigError(file: file, line: line,
                           message: "MTU=\(mtu) does not fit the underlay: \(underlayInterface) has MTU \(underlayMTU) "
                               + "and VXLAN over \(family) adds \(v.overhead) bytes, so MTU= may be at most \(most) "
                               + "(or raise \(underlayInterface)'s MTU to \(mtu + v.overhead))")
    }

    /// An underlay address: a bare unicast, non-loopback address, kept as a host prefix.
    static func underlayAddress(_ key: String, _ v: String) throws(Reason) -> IPPrefix {
        guard let (family, bytes) = IPPrefix.parseAddress(v) else {
            throw Value.invalid(key, v, "expected an IPv4 or IPv6 address like 10.99.0.1 (no /prefix)")
        }
        let p = IPPrefix(family: family, bytes: bytes, prefixLength: family.maxPrefixLength)
        guard !p.isUnspecified, !p.isMulticast, !p.isLimitedBroadcast, !p.isLoopback else {
            throw Value.invalid(key, v, "expected a unicast, non-loopback address")
        }
        return p
    }

    static let vxlanSpecs: [KeySpec<NetworkConfig>] = [
        KeySpec(section: "VXLAN", key: "VNI", arity: .single,
                help: "VXLAN network identifier, 0...16777215, the same on every host; the section needs it",
                apply: { (c, v) throws(Reason) in c.vxlanVNI = try Value.integer("VNI", v, NetworkConfig.vniRange) },
                reset: { $0.vxlanVNI = nil }, render: { $0.vxlanVNI.map { ["\($0)"] } ?? [] },
                isDefault: { $0.vxlanVNI == nil }),
        KeySpec(section: "VXLAN", key: "Local", arity: .single,
                help: "this host's underlay address (IPv4 or IPv6, no /prefix); the section needs it",
                apply: { (c, v) throws(Reason) in c.vxlanLocal = try underlayAddress("Local", v) },
                reset: { $0.vxlanLocal = nil }, render: { $0.vxlanLocal.map { [$0.address] } ?? [] },
                isDefault: { $0.vxlanLocal == nil }),
        KeySpec(section: "VXLAN", key: "Remote", arity: .list,
                help: "underlay address of every other host (repeatable); broadcasts go to each",
                apply: { (c, v) throws(Reason) in
                    let p = try underlayAddress("Remote", v)
                    if c.vxlanRemotes.contains(p) { throw Reason("duplicate Remote=\(v): already listed") }
                    c.vxlanRemotes.append(p)
                },
                reset: { $0.vxlanRemotes = [] }, render: { $0.vxlanRemotes.map(\.address) },
                isDefault: { $0.vxlanRemotes.isEmpty }),
        KeySpec(section: "VXLAN", key: "DestinationPort", arity: .single,
                help: "UDP port of the VXLAN packets on the underlay, 1...65535 (default 4789)",
                apply: { (c, v) throws(Reason) in c.vxlanDestinationPort = try Value.integer("DestinationPort", v, 1...65535) },
                reset: { $0.vxlanDestinationPort = NetworkConfig.defaultVXLANPort },
                // Empty without a VXLAN segment, so `get` output fed back to `set` adds no lone
                // DestinationPort= (which checkVXLAN would refuse).
                render: { $0.vxlanVNI == nil && $0.vxlanDestinationPort == NetworkConfig.defaultVXLANPort
                    ? [] : ["\($0.vxlanDestinationPort)"] },
                isDefault: { $0.vxlanDestinationPort == NetworkConfig.defaultVXLANPort }),
        KeySpec(section: "VXLAN", key: "Device", arity: .single,
                help: "underlay device to send VXLAN packets through (like eth0 or wg0); default: by route",
                apply: { (c, v) throws(Reason) in
                    guard Value.isValidInterfaceName(v) else {
                        throw Value.invalid("Device", v, "expected an interface name, 1 to 15 characters [A-Za-z0-9_.-]")
                    }
                    c.vxlanDevice = v
                },
                reset: { $0.vxlanDevice = nil }, render: { $0.vxlanDevice.map { [$0] } ?? [] },
                isDefault: { $0.vxlanDevice == nil }),
    ]
}
