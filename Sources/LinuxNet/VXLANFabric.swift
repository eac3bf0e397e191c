// VXLANFabric.swift - the kernel objects that carry one network across hosts, made and removed
// as a unit.
//
//     TAP (InterfaceSetup) ──┐
//                            ├── bridge: fixed MAC, KernelAddress= addresses, MTU
//     VXLAN device ──────────┘   VNI, Local=, port, optional Device=; learning on;
//                                FDB 00:00:00:00:00:00 dst REMOTE, one destination per Remote=
//
// Head-end replication: a broadcast (ARP) leaving through the VXLAN device is sent once to each
// remote; unicast goes to the one remote the device learned the MAC from. Both devices carry the
// alias "ztap network NAME", so a leftover of a killed ztapd is recognised (and replaced) while a
// same-named device made by someone else is never touched.

#if canImport(Glibc)
import Glibc
#endif

public struct VXLANFabric: Sendable, Equatable {
    public var network: String
    public var bridge: String
    public var bridgeMAC: String
    public var vxlan: String
    public var vni: Int
    /// This host's underlay address, bare ("10.99.0.1").
    public var local: String
    public var remotes: [String]
    public var port: Int
    /// Underlay device to bind to; nil: the routing table picks.
    public var underlay: String?
    public var mtu: Int
    /// Put on the bridge, which is the kernel's interface on the network.
    public var kernelAddresses: [String]

    public init(network: String, bridge: String, bridgeMAC: String, vxlan: String, vni: Int, local: String,
                remotes: [String], port: Int, underlay: String?, mtu: Int, kernelAddresses: [String]) {
        self.network = network; self.bridge = bridge; self.bridgeMAC = bridgeMAC; self.vxlan = vxlan
        self.vni = vni; self.local = local; self.remotes = remotes; self.port = port
        self.underlay = underlay; self.mtu = mtu; self.kernelAddresses = kernelAddresses
    }

    /// What `create` made, by interface index, so that removal deletes exactly those devices.
    public struct Created: Sendable, Equatable {
        public internal(set) var fabric: VXLANFabric
        public let bridgeIndex: Int32
        public let vxlanIndex: Int32
    }

    public var alias: String { "ztap network \(network)" }

    /// The interface the VXLAN packets leave through and its MTU: `underlay` when given, else the
    /// interface holding `local` (an address no interface holds is refused: the packets would
    /// leave with a source no peer expects).
    public func underlayLink(using nl: Netlink) throws(LinuxError) -> LinkInfo {
        let op = "find the underlay of \(vxlan)"
        if let underlay {
            guard let info = try nl.linkInfo(interface: underlay) else {
                throw LinuxError(operation: op, errno: ENODEV, detail: "underlay device \(underlay) (Device=) does not exist")
            }
            return info
        }
        guard let name = try nl.interfaceHolding(address: local), let info = try nl.linkInfo(interface: name) else {
            throw LinuxError(operation: op, errno: EADDRNOTAVAIL,
                             detail: "Local=\(local) is not an address of any interface here; give this host's underlay address")
        }
        return info
    }

    /// Makes the bridge and the VXLAN device (in the order bridge -> its addresses -> VXLAN device
    /// -> port of the bridge -> FDB entries -> both up). A device of the same name left by a
    /// killed ztapd (our alias) is deleted first; any other one is an EEXIST error. Callers make
    /// sure the network's TAP does not exist first: a live ztapd holds it, so a device with our
    /// alias but no TAP is a leftover, not another daemon's. On any failure, deletes what it
    /// made (which drops their addresses and FDB entries too).
    public func create(using nl: Netlink) throws(LinuxError) -> Created {
        for name in [bridge, vxlan] {
            guard try nl.linkIndex(name: name) != nil else { continue }
            let theirs = try nl.alias(interface: name)
            guard theirs == alias else {
                throw LinuxError(operation: "create \(name)", errno: EEXIST,
                                 detail: "interface \(name) already exists and is not this network's"
                                     + (theirs.map { " (its alias is \"\($0)\")" } ?? ""))
            }
            try nl.deleteLink(interface: name)  // a leftover of ours: its ztapd was killed
        }
        var made: [(name: String, index: Int32)] = []
        do {
            try nl.createBridge(name: bridge, mac: bridgeMAC, mtu: mtu)
            made.append((bridge, try requireIndex(bridge, nl)))
            try nl.setAlias(interface: bridge, alias: alias)
            for a in kernelAddresses { try nl.addAddress(interface: bridge, address: a) }
            try nl.createVXLAN(name: vxlan, vni: vni, local: local, port: port, underlay: underlay, mtu: mtu)
            made.append((vxlan, try requireIndex(vxlan, nl)))
            try nl.setAlias(interface: vxlan, alias: alias)
            try nl.enslave(interface: vxlan, bridge: bridge)
            for r in remotes { try nl.addFDBRemote(interface: vxlan, remote: r) }
            try nl.setUp(interface: vxlan, true)
            try nl.setUp(interface: bridge, true)
        } catch {
            var first = error
            for m in made.reversed() {
                do { try nl.deleteLink(interface: m.name) } catch let e { first.rollbackFailures.append(e.description) }
            }
            throw first
        }
        return Created(fabric: self, bridgeIndex: made[0].index, vxlanIndex: made[1].index)
    }

    /// Deletes the VXLAN device and the bridge if they are still the devices `create` made (same
    /// name and index). Goes on after a failure; returns the failures.
    @discardableResult
    public static func remove(_ created: Created, using nl: Netlink) -> [LinuxError] {
        var failures: [LinuxError] = []
        let f = created.fabric
        for (name, index) in [(f.vxlan, created.vxlanIndex), (f.bridge, created.bridgeIndex)] {
            do {
                guard try nl.linkIndex(name: name) == index else { continue }  // already gone, or not ours
                try nl.deleteLink(interface: name)
            } catch {
                failures.append(error)
            }
        }
        return failures
    }

    /// Changes the FDB destinations to `remotes` live (no device is touched, so connections stay):
    /// adds the new ones, then removes the old ones. On failure, undoes the additions made.
    public static func setRemotes(_ created: inout Created, to remotes: [String], using nl: Netlink) throws(LinuxError) {
        let f = created.fabric
        let added = remotes.filter { !f.remotes.contains($0) }
        let removed = f.remotes.filter { !remotes.contains($0) }
        var done: [String] = []
        do {
            for r in added {
                try nl.addFDBRemote(interface: f.vxlan, remote: r)
                done.append(r)
            }
            for r in removed { try nl.removeFDBRemote(interface: f.vxlan, remote: r) }
        } catch {
            var first = error
            for r in done.reversed() {
                do { try nl.removeFDBRemote(interface: f.vxlan, remote: r) } catch let e {
                    first.rollbackFailures.append(e.description)
                }
            }
            // Put back the destinations removed before the failure.
            for r in removed where (try? nl.fdbRemotes(interface: f.vxlan).contains(r)) == false {
                do { try nl.addFDBRemote(interface: f.vxlan, remote: r) } catch let e {
                    first.rollbackFailures.append(e.description)
                }
            }
            throw first
        }
        created.fabric.remotes = remotes
    }

    private func requireIndex(_ name: String, _ nl: Netlink) throws(LinuxError) -> Int32 {
        guard let i = try nl.linkIndex(name: name) else {
            throw LinuxError(operation: "look up \(name)", errno: ENODEV, detail: "\(name) vanished right after it was created")
        }
        return i
    }
}
