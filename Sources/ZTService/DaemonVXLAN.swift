// DaemonVXLAN.swift - the [VXLAN] part of join/leave/reload: the bridge + VXLAN device around a
// network's TAP (LinuxNet/VXLANFabric.swift), remembered per network so that leave, stop and a
// failed bring-up remove exactly what was made, and Remote= changes applied live.

import LinuxNet
import ZTConfig

#if canImport(Glibc)
import Glibc
#endif

extension Daemon {
    static func fabric(for config: NetworkConfig, _ v: VXLANSettings) -> VXLANFabric {
        VXLANFabric(network: config.name, bridge: v.bridgeInterface, bridgeMAC: v.bridgeMAC, vxlan: v.vxlanInterface,
                    vni: v.vni, local: v.local.address, remotes: v.remotes.map(\.address), port: v.destinationPort,
                    underlay: v.device, mtu: config.mtu, kernelAddresses: config.kernelAddresses.map(\.description))
    }

    /// Refuses an MTU= that does not fit the underlay with the encapsulation (FILE:LINE: both numbers).
    func checkUnderlayMTU(_ config: NetworkConfig, using netlink: Netlink) throws(ServiceError) {
        guard let v = config.vxlan else { return }
        let under: LinkInfo
        do {
            under = try Self.fabric(for: config, v).underlayLink(using: netlink)
        } catch {
            throw ServiceError("\(error)", errno: error.errno)
        }
        if let e = config.underlayMTUError(underlayInterface: under.name, underlayMTU: under.mtu, file: path(of: config.name)) {
            throw ServiceError("\(e)", errno: EINVAL)
        }
    }

    /// Makes the bridge and VXLAN device of a [VXLAN] network, after checking the MTU against the
    /// underlay. The caller records the result in `fabrics` once the TAP is in the bridge.
    func makeFabric(_ config: NetworkConfig, using netlink: Netlink) throws(ServiceError) -> VXLANFabric.Created {
        guard let v = config.vxlan else { throw ServiceError("network \(config.name) has no [VXLAN] section") }
        try checkUnderlayMTU(config, using: netlink)
        do {
            let made = try Self.fabric(for: config, v).create(using: netlink)
            logger.info("network \(config.name): VXLAN \(v.vni) over \(v.local.address)",
                        metadata: ["bridge": "\(v.bridgeInterface)", "vxlan": "\(v.vxlanInterface)",
                                   "remotes": "\(v.remotes.map(\.address).joined(separator: " "))"])
            return made
        } catch {
            throw ServiceError("\(error)", errno: error.errno)
        }
    }

    /// Deletes the bridge and VXLAN device of network `name`, if it has them (after its TAP is gone).
    func removeFabric(_ name: String) {
        guard let made = fabrics.removeValue(forKey: name), let netlink else { return }
        for e in VXLANFabric.remove(made, using: netlink) {
            logger.error("network \(name): cannot remove its VXLAN devices: \(e)")
        }
    }

    /// True when `old` and `new` describe the same VXLAN device (Remote= aside), so a change can
    /// be applied live; otherwise the network restarts.
    static func sameSegment(_ old: NetworkConfig, _ new: NetworkConfig) -> Bool {
        guard let a = old.vxlan, let b = new.vxlan else { return old.vxlan == nil && new.vxlan == nil }
        return a.vni == b.vni && a.local == b.local && a.destinationPort == b.destinationPort && a.device == b.device
            && a.bridgeInterface == b.bridgeInterface && a.vxlanInterface == b.vxlanInterface && a.bridgeMAC == b.bridgeMAC
    }

    /// The interfaces whose MTU follows MTU= (TAP first), and the one holding KernelAddress=.
    func liveInterfaces(of name: String, tap: String) -> (mtu: [String], addresses: String) {
        guard let f = fabrics[name]?.fabric else { return ([tap], tap) }
        return ([tap, f.vxlan, f.bridge], f.bridge)
    }

    /// Remote= changed: FDB entries added/removed on the running VXLAN device; nothing restarts.
    func applyRemotes(of config: NetworkConfig, using netlink: Netlink) throws(LinuxError) {
        guard var made = fabrics[config.name] else { return }
        let remotes = config.vxlanRemotes.map(\.address)
        guard made.fabric.remotes != remotes else { return }
        try VXLANFabric.setRemotes(&made, to: remotes, using: netlink)
        fabrics[config.name] = made
        logger.info("network \(config.name): VXLAN remotes now \(remotes.joined(separator: " "))")
    }
}
