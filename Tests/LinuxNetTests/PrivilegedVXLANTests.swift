// PrivilegedVXLANTests.swift - VXLANFabric against the real kernel, inside the private namespace
// of the test process (see Support.swift). Each test uses its own names and its own underlay
// device, because tests run in parallel.

import Foundation
import Testing
@testable import LinuxNet

private func fdbZeroDestinations(_ dev: String) throws -> [String] {
    let text = try run(["bridge", "-j", "fdb", "show", "dev", dev])
    let entries = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] ?? []
    return entries.filter { $0["mac"] as? String == "00:00:00:00:00:00" }.compactMap { $0["dst"] as? String }.sorted()
}

/// An underlay holding `address` (one end of a veth pair: this kernel has no dummy devices),
/// removed by the returned closure.
private func underlay(_ name: String, _ address: String, mtu: Int = 1500) throws -> () -> Void {
    try run(["ip", "link", "add", name, "mtu", "\(mtu)", "type", "veth", "peer", "name", name + "p"])
    try run(["ip", "addr", "add", address, "dev", name])
    try run(["ip", "link", "set", name, "up"])
    return { _ = try? run(["ip", "link", "del", name]) }
}

/// A fabric named after `tag` ("a1"...); its VNI is the tag's digit, as the kernel allows one
/// VXLAN device per VNI and port and the tests share one namespace.
private func fabric(_ tag: String, local: String, remotes: [String], underlay: String? = nil,
                    addresses: [String] = []) -> VXLANFabric {
    VXLANFabric(network: tag, bridge: "br-\(tag)", bridgeMAC: "02:00:00:00:\(tag.suffix(2)):01", vxlan: "vx-\(tag)",
                vni: Int(tag.suffix(1))!, local: local, remotes: remotes, port: 4789, underlay: underlay, mtu: 1400,
                kernelAddresses: addresses)
}

@Suite struct PrivilegedVXLANTests {
    @Test func createMakesBridgeVXLANAndFDBAndRemoveDeletesExactlyThat() throws {
        guard Privileged.check("createMakesBridgeVXLANAndFDBAndRemoveDeletesExactlyThat") else { return }
        let done = try underlay("ul-a1", "10.91.0.1/24")
        defer { done() }
        let nl = try Netlink()
        let f = fabric("a1", local: "10.91.0.1", remotes: ["10.91.0.2", "10.91.0.3"], underlay: "ul-a1",
                       addresses: ["10.90.0.11/24"])
        #expect(try f.underlayLink(using: nl).name == "ul-a1")
        let made = try f.create(using: nl)

        let br = try #require(ipLink("br-a1")), vx = try #require(ipLink("vx-a1"))
        #expect(br["address"] as? String == "02:00:00:00:a1:01" && br["mtu"] as? Int == 1400)
        #expect(vx["master"] as? String == "br-a1" && vx["mtu"] as? Int == 1400)
        #expect((br["flags"] as? [String])?.contains("UP") == true && (vx["flags"] as? [String])?.contains("UP") == true)
        #expect(try ipAddresses("br-a1").contains("10.90.0.11/24"))
        let details = try #require(try ipJSON(["-d", "link", "show", "dev", "vx-a1"]).first)
        let info = (details["linkinfo"] as? [String: Any])?["info_data"] as? [String: Any]
        #expect(info?["id"] as? Int == 1 && info?["port"] as? Int == 4789 && info?["local"] as? String == "10.91.0.1")
        #expect(info?["link"] as? String == "ul-a1")
        #expect(details["ifalias"] as? String == "ztap network a1")
        #expect(try fdbZeroDestinations("vx-a1") == ["10.91.0.2", "10.91.0.3"])
        #expect(try nl.fdbRemotes(interface: "vx-a1").sorted() == ["10.91.0.2", "10.91.0.3"])
        #expect(try nl.interfaceHolding(address: "10.91.0.1") == "ul-a1")
        #expect(try nl.interfaceHolding(address: "10.91.0.9") == nil)

        #expect(VXLANFabric.remove(made, using: nl).isEmpty)
        #expect(ipLink("br-a1") == nil && ipLink("vx-a1") == nil)
        #expect(ipLink("ul-a1") != nil, "the underlay is not ours to remove")
        // Removing again touches nothing (the devices are gone).
        #expect(VXLANFabric.remove(made, using: nl).isEmpty)
    }

    @Test func ipv6Underlay() throws {
        guard Privileged.check("ipv6Underlay") else { return }
        try run(["ip", "link", "add", "ul-a5", "type", "veth", "peer", "name", "ul-a5p"])
        defer { _ = try? run(["ip", "link", "del", "ul-a5"]) }
        try run(["ip", "addr", "add", "fd95::1/64", "dev", "ul-a5", "nodad"])
        let nl = try Netlink()
        let made = try fabric("a5", local: "fd95::1", remotes: ["fd95::2", "fd95::3"]).create(using: nl)
        defer { VXLANFabric.remove(made, using: nl) }
        #expect(try fabric("a5", local: "fd95::1", remotes: []).underlayLink(using: nl).name == "ul-a5")
        let details = try #require(try ipJSON(["-d", "link", "show", "dev", "vx-a5"]).first)
        let info = (details["linkinfo"] as? [String: Any])?["info_data"] as? [String: Any]
        #expect(info?["local6"] as? String == "fd95::1" || info?["local"] as? String == "fd95::1", "\(String(describing: info))")
        #expect(try fdbZeroDestinations("vx-a5") == ["fd95::2", "fd95::3"])
        #expect(try nl.fdbRemotes(interface: "vx-a5").sorted() == ["fd95::2", "fd95::3"])
    }

    @Test func setRemotesChangesOnlyTheFDB() throws {
        guard Privileged.check("setRemotesChangesOnlyTheFDB") else { return }
        let done = try underlay("ul-a2", "10.92.0.1/24")
        defer { done() }
        let nl = try Netlink()
        var made = try fabric("a2", local: "10.92.0.1", remotes: ["10.92.0.2", "10.92.0.3"]).create(using: nl)
        defer { VXLANFabric.remove(made, using: nl) }
        let index = try nl.linkIndex(name: "vx-a2")
        try VXLANFabric.setRemotes(&made, to: ["10.92.0.3", "10.92.0.4"], using: nl)
        #expect(try fdbZeroDestinations("vx-a2") == ["10.92.0.3", "10.92.0.4"])
        #expect(made.fabric.remotes == ["10.92.0.3", "10.92.0.4"])
        #expect(try nl.linkIndex(name: "vx-a2") == index)
        // Adding an existing destination again is harmless.
        try nl.addFDBRemote(interface: "vx-a2", remote: "10.92.0.3")
        #expect(try fdbZeroDestinations("vx-a2") == ["10.92.0.3", "10.92.0.4"])
        // A bad destination fails and leaves the entries as they were.
        #expect(throws: LinuxError.self) { try VXLANFabric.setRemotes(&made, to: ["10.92.0.3", "fd00::1"], using: nl) }
        #expect(try fdbZeroDestinations("vx-a2") == ["10.92.0.3", "10.92.0.4"])
        #expect(made.fabric.remotes == ["10.92.0.3", "10.92.0.4"])
    }

    @Test func failedCreateRollsBackEverything() throws {
        guard Privileged.check("failedCreateRollsBackEverything") else { return }
        let done = try underlay("ul-a3", "10.93.0.1/24")
        defer { done() }
        let nl = try Netlink()
        // The bridge and the VXLAN device get made, then the IPv6 remote of an IPv4 VXLAN fails.
        let bad = fabric("a3", local: "10.93.0.1", remotes: ["10.93.0.2", "fd00::2"], addresses: ["10.90.3.1/24"])
        #expect(throws: LinuxError.self) { _ = try bad.create(using: nl) }
        #expect(ipLink("br-a3") == nil && ipLink("vx-a3") == nil)
        // An underlay device that does not exist, and a Local= no interface holds.
        let e1 = #expect(throws: LinuxError.self) { _ = try fabric("a3", local: "10.93.0.1", remotes: [], underlay: "nosuchdev").underlayLink(using: nl) }
        #expect(e1?.errno == ENODEV)
        let e2 = #expect(throws: LinuxError.self) { _ = try fabric("a3", local: "10.93.9.9", remotes: []).underlayLink(using: nl) }
        #expect(e2?.errno == EADDRNOTAVAIL && e2?.description.contains("Local=10.93.9.9") == true)
    }

    @Test func leftoverIsReplacedButAForeignDeviceIsNot() throws {
        guard Privileged.check("leftoverIsReplacedButAForeignDeviceIsNot") else { return }
        let done = try underlay("ul-a4", "10.94.0.1/24")
        defer { done() }
        let nl = try Netlink()
        let f = fabric("a4", local: "10.94.0.1", remotes: ["10.94.0.2"])
        let first = try f.create(using: nl)
        // As if ztapd was killed: the devices stay; a new create replaces them.
        let second = try f.create(using: nl)
        #expect(second.bridgeIndex != first.bridgeIndex)
        #expect(VXLANFabric.remove(first, using: nl).isEmpty)
        #expect(ipLink("br-a4") != nil, "remove() must not delete a device it did not make")
        VXLANFabric.remove(second, using: nl)
        // Someone else's device of the same name is refused, not deleted.
        try run(["ip", "link", "add", "br-a4", "type", "bridge"])
        defer { _ = try? run(["ip", "link", "del", "br-a4"]) }
        let e = #expect(throws: LinuxError.self) { _ = try f.create(using: nl) }
        #expect(e?.errno == EEXIST)
        #expect(ipLink("br-a4") != nil && ipLink("vx-a4") == nil)
    }
}
