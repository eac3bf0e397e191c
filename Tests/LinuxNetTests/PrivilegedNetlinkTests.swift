// PrivilegedNetlinkTests.swift - real TAP + netlink changes, only inside the private namespace of
// the test process (see Support.swift). Each test uses its own interface names because tests run
// in parallel.

import Foundation
import Testing
@testable import LinuxNet

@Suite struct PrivilegedNetlinkTests {
    @Test func tapOpensWithRequestedNameAndVanishesOnClose() throws {
        guard Privileged.check("tapOpensWithRequestedNameAndVanishesOnClose") else { return }
        let tap = try TapDevice.open(name: "zt-open")
        #expect(tap.name == "zt-open")
        #expect(tap.fd >= 0)
        let link = try #require(ipLink("zt-open"))
        #expect(link["ifindex"] as? Int == Int(tap.ifIndex))
        let nl = try Netlink()
        #expect(try nl.linkIndex(name: "zt-open") == tap.ifIndex)
        #expect(try nl.linkInfo(interface: "zt-open")?.kind == "tun")
        tap.close()
        tap.close()  // idempotent
        #expect(try nl.linkIndex(name: "zt-open") == nil)
    }

    @Test func kernelChosenName() throws {
        guard Privileged.check("kernelChosenName") else { return }
        let tap = try TapDevice.open(name: "")
        defer { tap.close() }
        #expect(!tap.name.isEmpty)
        #expect(ipLink(tap.name) != nil)
    }

    @Test func fullApplyConfiguresEverything() throws {
        guard Privileged.check("fullApplyConfiguresEverything") else { return }
        try run(["ip", "link", "add", "br-t", "type", "bridge"])
        defer { _ = try? run(["ip", "link", "del", "br-t"]) }
        let tap = try TapDevice.open(name: "zt-full")
        defer { tap.close() }
        let nl = try Netlink()
        let setup = InterfaceSetup(name: "zt-full", mac: "02:11:22:33:44:55", mtu: 2800,
                                   kernelAddresses: ["10.77.0.1/24", "fd77::1/64"], bridge: "br-t")
        try setup.apply(using: nl)

        let link = try #require(ipLink("zt-full"))
        #expect(link["ifname"] as? String == "zt-full")
        #expect(link["address"] as? String == "02:11:22:33:44:55")
        #expect(link["mtu"] as? Int == 2800)
        #expect(link["master"] as? String == "br-t")
        #expect((link["flags"] as? [String])?.contains("UP") == true)
        let addrs = try ipAddresses("zt-full")
        #expect(addrs.contains("10.77.0.1/24"))
        #expect(addrs.contains("fd77::1/64"))

        // The same view through our own reader.
        let info = try #require(try nl.linkInfo(interface: "zt-full"))
        #expect(info.mac == "02:11:22:33:44:55")
        #expect(info.mtu == 2800)
        #expect(info.isUp)
        #expect(info.masterIndex == (try nl.linkIndex(name: "br-t")))
        let ours = try nl.addresses(interface: "zt-full")
        #expect(ours.contains("10.77.0.1/24"))
        #expect(ours.contains("fd77::1/64"))

        // Applying again is harmless (addresses already present are skipped).
        try setup.apply(using: nl)
        #expect(try ipAddresses("zt-full").filter { $0 == "10.77.0.1/24" }.count == 1)
    }

    @Test func mtuAboveDeviceMaximumFailsWithKernelTextAndRollsBack() throws {
        guard Privileged.check("mtuAboveDeviceMaximumFailsWithKernelTextAndRollsBack") else { return }
        let tap = try TapDevice.open(name: "zt-mtu")
        defer { tap.close() }
        let nl = try Netlink()
        let before = try #require(try nl.linkInfo(interface: "zt-mtu"))
        let setup = InterfaceSetup(name: "zt-mtu", mac: "02:00:00:00:00:11", mtu: 70000,
                                   kernelAddresses: ["10.79.0.1/24", "fd79::1/64"])
        do {
            try setup.apply(using: nl)
            Issue.record("MTU 70000 should be rejected")
        } catch {
            #expect(error.errno == EINVAL)
            #expect(error.description.hasPrefix("set MTU 70000 on zt-mtu: Invalid argument (errno 22)"))
            #expect(error.kernelMessage?.contains("mtu") == true)  // extended ACK text came through
            #expect(error.rollbackFailures.isEmpty)
        }
        let after = try #require(try nl.linkInfo(interface: "zt-mtu"))
        #expect(after.mac == before.mac)  // MAC change undone
        #expect(after.mtu == before.mtu)
        #expect(!after.isUp)
        #expect(try ipAddresses("zt-mtu").allSatisfy { !$0.hasPrefix("10.79.") && !$0.hasPrefix("fd79:") })
    }

    @Test func mtu100WithIPv6FailsBeforeAnyChange() throws {
        guard Privileged.check("mtu100WithIPv6FailsBeforeAnyChange") else { return }
        let tap = try TapDevice.open(name: "zt-mtu6")
        defer { tap.close() }
        let nl = try Netlink()
        let before = try #require(try nl.linkInfo(interface: "zt-mtu6"))
        let setup = InterfaceSetup(name: "zt-mtu6", mac: "02:00:00:00:00:12", mtu: 100,
                                   kernelAddresses: ["10.83.0.1/24", "fd83::1/64"])
        do {
            try setup.apply(using: nl)
            Issue.record("MTU 100 with an IPv6 address should be rejected")
        } catch {
            #expect(error.errno == EINVAL)
            #expect(error.description == "set MTU 100 on zt-mtu6: Invalid argument: IPv6 address fd83::1/64 needs an MTU of at least 1280 (errno 22)")
        }
        #expect(try nl.linkInfo(interface: "zt-mtu6") == before)
        #expect(try ipAddresses("zt-mtu6").isEmpty)

        // Without IPv6 the kernel accepts 100 for a TAP (its minimum is 68).
        try InterfaceSetup(name: "zt-mtu6", mtu: 100, kernelAddresses: ["10.83.0.1/24"]).apply(using: nl)
        #expect(try nl.linkInfo(interface: "zt-mtu6")?.mtu == 100)
    }

    @Test func missingBridgeFailsWithENODEVAndRollsBackAddresses() throws {
        guard Privileged.check("missingBridgeFailsWithENODEVAndRollsBackAddresses") else { return }
        let tap = try TapDevice.open(name: "zt-nobr")
        defer { tap.close() }
        let nl = try Netlink()
        let before = try #require(try nl.linkInfo(interface: "zt-nobr"))
        let setup = InterfaceSetup(name: "zt-nobr", mtu: 1400,
                                   kernelAddresses: ["10.80.0.1/24", "fd80::1/64"], bridge: "br-none")
        do {
            try setup.apply(using: nl)
            Issue.record("a missing bridge should fail")
        } catch {
            #expect(error.errno == ENODEV)
            #expect(error.description == "enslave zt-nobr to br-none: bridge br-none does not exist (errno 19)")
        }
        // Addresses were added before the bridge step; all must be gone again.
        #expect(try nl.addresses(interface: "zt-nobr").allSatisfy { !$0.hasPrefix("10.80.") && !$0.hasPrefix("fd80:") })
        #expect(try ipAddresses("zt-nobr").isEmpty)
        let after = try #require(try nl.linkInfo(interface: "zt-nobr"))
        #expect(after.mtu == before.mtu)
        #expect(!after.isUp)
    }

    @Test func enslavingToANonBridgeIsAClearError() throws {
        guard Privileged.check("enslavingToANonBridgeIsAClearError") else { return }
        let tap = try TapDevice.open(name: "zt-notbr")
        defer { tap.close() }
        let nl = try Netlink()
        do {
            try nl.enslave(interface: "zt-notbr", bridge: "lo")
            Issue.record("lo is not a bridge")
        } catch {
            #expect(error.errno == EINVAL)
            #expect(error.description.contains("lo is not a bridge"))
        }
        #expect(try nl.linkInfo(interface: "zt-notbr")?.masterIndex == nil)
    }

    @Test func addressAddRemoveAndDuplicates() throws {
        guard Privileged.check("addressAddRemoveAndDuplicates") else { return }
        let tap = try TapDevice.open(name: "zt-addr")
        defer { tap.close() }
        let nl = try Netlink()
        try nl.addAddress(interface: "zt-addr", address: "10.81.0.1/16")
        try nl.addAddress(interface: "zt-addr", address: "fd81::5/112")
        do {
            try nl.addAddress(interface: "zt-addr", address: "10.81.0.1/16")
            Issue.record("duplicate add should fail")
        } catch {
            #expect(error.errno == EEXIST)
            #expect(error.description.hasPrefix("add address 10.81.0.1/16 to zt-addr: File exists"))
        }
        #expect(Set(try nl.addresses(interface: "zt-addr")).isSuperset(of: ["10.81.0.1/16", "fd81::5/112"]))
        let v4 = try ipJSON(["addr", "show", "dev", "zt-addr"]).first?["addr_info"] as? [[String: Any]]
        #expect(v4?.first { $0["local"] as? String == "10.81.0.1" }?["broadcast"] as? String == "10.81.255.255")

        try nl.removeAddress(interface: "zt-addr", address: "10.81.0.1")  // prefix looked up
        try nl.removeAddress(interface: "zt-addr", address: "fd81::5/112")
        #expect(try ipAddresses("zt-addr").isEmpty)
        do {
            try nl.removeAddress(interface: "zt-addr", address: "10.81.0.1/16")
            Issue.record("removing an absent address should fail")
        } catch {
            #expect(error.errno == EADDRNOTAVAIL)
        }
    }

    @Test func deleteLinkRemovesTheInterface() throws {
        guard Privileged.check("deleteLinkRemovesTheInterface") else { return }
        let tap = try TapDevice.open(name: "zt-del")
        defer { tap.close() }
        let nl = try Netlink()
        try nl.setUp(interface: "zt-del", true)
        #expect(try nl.linkInfo(interface: "zt-del")?.isUp == true)
        try nl.deleteLink(interface: "zt-del")
        #expect(try nl.linkIndex(name: "zt-del") == nil)
        #expect(ipLink("zt-del") == nil)
        do {
            try nl.deleteLink(interface: "zt-del")
            Issue.record("deleting twice should fail")
        } catch {
            #expect(error.errno == ENODEV)
            #expect(error.description == "delete interface zt-del: interface zt-del does not exist (errno 19)")
        }
        do {
            try nl.setMTU(interface: "zt-del", mtu: 1500)
            Issue.record("changing a deleted link should fail")
        } catch {
            #expect(error.errno == ENODEV)
        }
    }
}
