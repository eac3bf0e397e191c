import Foundation
import Testing
@testable import ZTConfig

private let section = """
    [Network]
    MTU=1400
    Address=10.98.0.2/24
    KernelAddress=10.98.0.11/24
    [VXLAN]
    VNI=4242
    Local=10.99.0.1
    Remote=10.99.0.2
    Remote=10.99.0.3 10.99.0.4
    DestinationPort=8472
    Device=eth0
    """

@Suite struct VXLANParseTests {
    @Test func fullSection() throws {
        let c = try parseNet(section)
        let v = try #require(c.vxlan)
        #expect(v.vni == 4242 && v.local.address == "10.99.0.1" && v.local.prefixLength == 32)
        #expect(v.remotes.map(\.address) == ["10.99.0.2", "10.99.0.3", "10.99.0.4"])
        #expect(v.destinationPort == 8472 && v.device == "eth0")
        #expect(v.bridgeInterface == "zt-net-br" && v.vxlanInterface == "zt-net-vx")
        #expect(v.overhead == 50 && v.maxMTU(underlayMTU: 1500) == 1450)
        #expect(c.claimedInterfaces == ["zt-net", "zt-net-br", "zt-net-vx"])
    }

    @Test func defaultsAndAbsence() throws {
        let c = try parseNet("[VXLAN]\nVNI=0\nLocal=fd99::1\n")
        let v = try #require(c.vxlan)
        #expect(v.vni == 0 && v.destinationPort == 4789 && v.device == nil && v.remotes.isEmpty)
        #expect(v.overhead == 70 && v.maxMTU(underlayMTU: 1500) == 1430)
        // An empty section, or none, is a single-host network.
        #expect(try parseNet("[VXLAN]\n").vxlan == nil)
        #expect(try parseNet("[Network]\nMTU=1500\n").vxlan == nil)
        #expect(try parseNet("").claimedInterfaces == ["zt-net"])
    }

    @Test func errorsCarryFileLineAndWhatIsAllowed() {
        let head = "[VXLAN]\nVNI=1\nLocal=10.99.0.1\n"
        let cases: [(String, String)] = [
            ("[VXLAN]\nVNI=16777216\nLocal=10.99.0.1", "net.conf:2: invalid VNI=16777216: expected an integer in 0...16777215"),
            ("[VXLAN]\nVNI=-1", "net.conf:2: invalid VNI=-1: expected an integer in 0...16777215"),
            ("[VXLAN]\nVNI=1\nLocal=10.99.0.1/24", "net.conf:3: invalid Local=10.99.0.1/24: expected an IPv4 or IPv6 address like 10.99.0.1 (no /prefix)"),
            ("[VXLAN]\nVNI=1\nLocal=127.0.0.1", "net.conf:3: invalid Local=127.0.0.1: expected a unicast, non-loopback address"),
            (head + "Remote=239.1.1.1", "net.conf:4: invalid Remote=239.1.1.1: expected a unicast, non-loopback address"),
            (head + "Remote=0.0.0.0", "net.conf:4: invalid Remote=0.0.0.0: expected a unicast, non-loopback address"),
            (head + "Remote=10.99.0.2 10.99.0.2", "net.conf:4: duplicate Remote=10.99.0.2: already listed"),
            (head + "DestinationPort=0", "net.conf:4: invalid DestinationPort=0: expected an integer in 1...65535"),
            (head + "DestinationPort=65536", "net.conf:4: invalid DestinationPort=65536: expected an integer in 1...65535"),
            (head + "Device=a b", "net.conf:4: invalid Device=a b: expected an interface name, 1 to 15 characters [A-Za-z0-9_.-]"),
            (head + "VNI=2", "net.conf:4: duplicate VNI=2: VNI= takes one value and is already set on line 2 (an empty VNI= line resets it)"),
            // Cross-key checks, at the line that has to change.
            ("[VXLAN]\nRemote=10.99.0.2\nVNI=1", "net.conf:2: [VXLAN] needs VNI= and Local= (missing: Local=)"),
            ("[VXLAN]\nDevice=eth0", "net.conf:2: [VXLAN] needs VNI= and Local= (missing: VNI= Local=)"),
            (head + "Remote=10.99.0.2\nRemote=fd00::2", "net.conf:5: invalid Remote=fd00::2: Local=10.99.0.1 is IPv4; every Remote= must be too"),
            (head + "Remote=10.99.0.1", "net.conf:4: invalid Remote=10.99.0.1: that is Local=, this host itself"),
            ("[Network]\nBridge=br0\n" + head, "net.conf:2: Bridge=br0 and [VXLAN] exclude each other: with [VXLAN] ztapd creates its own bridge zt-net-br for the TAP and the VXLAN device"),
            (head + "Device=zt-net-br", "net.conf:4: invalid Device=zt-net-br: that is an interface of this network itself; Device= names the underlay (like eth0 or wg0)"),
            ("[Vxlan]\nVNI=1", "net.conf:1: unknown section [Vxlan]; allowed: [Network], [Stack], [Access], [VXLAN]"),
            (head + "Remotes=10.99.0.2", "net.conf:4: unknown key Remotes= in [VXLAN]; allowed: VNI= Local= Remote= DestinationPort= Device="),
        ]
        for (text, want) in cases {
            #expect(netError(text) == want, "\(text)")
        }
        // Resetting every key removes the section's meaning: no error.
        #expect(netError(head + "VNI=\nLocal=\n") == nil)
    }

    @Test func derivedNamesFitIFNAMSIZ() {
        #expect(NetworkConfig.derivedInterface("zt-mh", suffix: "-br") == "zt-mh-br")
        #expect(NetworkConfig.derivedInterface("twelve-chars", suffix: "-vx") == "twelve-chars-vx")
        let long = "thirteen-char"
        let br = NetworkConfig.derivedInterface(long, suffix: "-br"), vx = NetworkConfig.derivedInterface(long, suffix: "-vx")
        #expect(br.utf8.count == 15 && vx.utf8.count == 15)
        #expect(br.hasPrefix("thirteen") && br.hasSuffix("-br") && vx.hasSuffix("-vx"))
        #expect(br.dropLast(3) == vx.dropLast(3))
        // Two long names sharing their first 8 characters still differ.
        #expect(NetworkConfig.derivedInterface("thirteen-chaX", suffix: "-br") != br)
        // The default TAP name of a long network name gives 15-character derived names too.
        let c = NetworkConfig(name: "a-rather-long-network")
        #expect(c.effectiveInterface.utf8.count == 15)
    }

    @Test func macsDifferPerHost() throws {
        let a = try parseNet("[VXLAN]\nVNI=1\nLocal=10.99.0.1\n"), b = try parseNet("[VXLAN]\nVNI=1\nLocal=10.99.0.2\n")
        let single = try parseNet("")
        #expect(a.effectiveMAC != b.effectiveMAC && a.effectiveMAC != single.effectiveMAC)
        #expect(single.effectiveMAC == NetworkConfig(name: "net").effectiveMAC, "single-host MACs must not change")
        let va = try #require(a.vxlan), vb = try #require(b.vxlan)
        #expect(va.bridgeMAC != vb.bridgeMAC && va.bridgeMAC != a.effectiveMAC)
        for mac in [va.bridgeMAC, vb.bridgeMAC, a.effectiveMAC] {
            let first = UInt8(mac.prefix(2), radix: 16)!
            #expect(first & 0x03 == 0x02, "\(mac): locally administered unicast")
        }
        // Stable: the same file gives the same MACs.
        #expect(try parseNet("[VXLAN]\nVNI=1\nLocal=10.99.0.1\n").vxlan?.bridgeMAC == va.bridgeMAC)
        // An explicit MACAddress= wins.
        #expect(try parseNet("[Network]\nMACAddress=02:00:00:00:00:07\n[VXLAN]\nVNI=1\nLocal=10.99.0.1\n").effectiveMAC == "02:00:00:00:00:07")
    }

    @Test func underlayMTUErrorNamesBothNumbersAtTheMTULine() throws {
        try withTempDir { dir in
            let path = dir + "/net.conf"
            try write(section, to: path)
            let c = try NetworkConfig.load(path: path)
            #expect(c.underlayMTUError(underlayInterface: "eth0", underlayMTU: 1450, file: path) == nil)
            let e = try #require(c.underlayMTUError(underlayInterface: "eth0", underlayMTU: 1449, file: path))
            #expect(e.description == "\(path):2: MTU=1400 does not fit the underlay: eth0 has MTU 1449 and VXLAN over "
                    + "IPv4 adds 50 bytes, so MTU= may be at most 1399 (or raise eth0's MTU to 1450)")
            // Default MTU (2800): the error points at the section.
            try write("# x\n[VXLAN]\nVNI=7\nLocal=fd99::1\n", to: path)
            let d = try NetworkConfig.load(path: path)
            let e2 = try #require(d.underlayMTUError(underlayInterface: "wg0", underlayMTU: 1420, file: path))
            #expect(e2.line == 3 && e2.message.contains("MTU=2800") && e2.message.contains("IPv6 adds 70 bytes")
                    && e2.message.contains("at most 1350"))
            #expect(try parseNet("").underlayMTUError(underlayInterface: "eth0", underlayMTU: 576, file: path) == nil)
        }
    }

    @Test func renderNewFileRoundTrip() throws {
        var c = NetworkConfig(name: "mh")
        c.mtu = 1400
        c.vxlanVNI = 4242
        c.vxlanLocal = IPPrefix("10.99.0.1", defaultsToHost: true)
        c.vxlanRemotes = [IPPrefix("10.99.0.2", defaultsToHost: true)!, IPPrefix("10.99.0.3", defaultsToHost: true)!]
        let text = c.renderNewFile()
        #expect(text.contains("\n[VXLAN]\nVNI=4242\nLocal=10.99.0.1\nRemote=10.99.0.2\nRemote=10.99.0.3\n"))
        #expect(!text.contains("DestinationPort"))
        #expect(try NetworkConfig.parse(text: text, name: "mh", file: "mh.conf") == c)
    }
}

@Suite struct VXLANEditTests {
    let file = """
        # host A
        [Network]
        MTU=1400

        [VXLAN]
        # this host
        VNI=4242
        Local=10.99.0.1
        # the others
        Remote=10.99.0.2
        Remote=10.99.0.3

        """

    func apply(_ path: String, _ a: [(String, String)]) throws(ConfigError) -> (old: NetworkConfig, new: NetworkConfig) {
        try NetworkConfigEditor.apply(path: path, assignments: a.map { (key: $0.0, value: $0.1) })
    }

    @Test func setRemoteReplacesTheListInPlace() throws {
        try withTempDir { dir in
            let path = dir + "/mh.conf"
            try write(file, to: path)
            let (old, new) = try apply(path, [("Remote", "10.99.0.3 10.99.0.4")])
            #expect(old.vxlanRemotes.map(\.address) == ["10.99.0.2", "10.99.0.3"])
            #expect(new.vxlanRemotes.map(\.address) == ["10.99.0.3", "10.99.0.4"])
            #expect(try read(path) == file.replacingOccurrences(of: "Remote=10.99.0.2\nRemote=10.99.0.3\n",
                                                                with: "Remote=10.99.0.3\nRemote=10.99.0.4\n"))
            _ = try apply(path, [("VXLAN.Remote", "")])
            #expect(try !read(path).contains("Remote=") && read(path).contains("# the others\n"))
            #expect(try NetworkConfig.load(path: path).vxlan?.remotes == [])
        }
    }

    @Test func refusedChangesLeaveTheFileAlone() throws {
        try withTempDir { dir in
            let path = dir + "/mh.conf"
            try write(file, to: path)
            let cases: [([(String, String)], String)] = [
                ([("Local", "")], "change rejected: [VXLAN] needs VNI= and Local= (missing: Local=)"),
                ([("Remote", "fd00::9")], "change rejected: invalid Remote=fd00::9: Local=10.99.0.1 is IPv4; every Remote= must be too"),
                ([("Bridge", "br0")], "change rejected: Bridge=br0 and [VXLAN] exclude each other"),
                ([("VNI", "99999999")], "invalid VNI=99999999: expected an integer in 0...16777215"),
                ([("Remote", "10.99.0.5"), ("Remote", "10.99.0.5")], "duplicate Remote=10.99.0.5: already listed"),
            ]
            for (a, want) in cases {
                let e = configError { () throws(ConfigError) in _ = try apply(path, a) }
                #expect(e?.description.hasPrefix("\(path): \(want)") == true, "\(a): \(String(describing: e))")
                #expect(try read(path) == file)
            }
            #expect(configError { () throws(ConfigError) in _ = try apply(path, [("Remote", "10.99.0.1")]) }?.description
                    == "\(path): change rejected: invalid Remote=10.99.0.1: that is Local=, this host itself")
        }
    }

    @Test func addingASectionToASingleHostNetwork() throws {
        try withTempDir { dir in
            let path = dir + "/lab.conf"
            try write("[Network]\nMTU=1400\n", to: path)
            // VNI alone is not enough, and nothing is written.
            #expect(configError { () throws(ConfigError) in _ = try apply(path, [("VNI", "5")]) }?.description
                    == "\(path): change rejected: [VXLAN] needs VNI= and Local= (missing: Local=)")
            #expect(try read(path) == "[Network]\nMTU=1400\n")
            _ = try apply(path, [("VNI", "5"), ("Local", "10.99.0.1"), ("Remote", "10.99.0.2")])
            #expect(try read(path) == "[Network]\nMTU=1400\n\n[VXLAN]\nVNI=5\nLocal=10.99.0.1\nRemote=10.99.0.2\n")
            // get -> set round trip keeps it unchanged, DestinationPort included.
            let all = try NetworkConfigEditor.get(path: path, key: nil)
            #expect(all.first { $0.key == "VXLAN.DestinationPort" }?.value == "4789")
            let before = try read(path)
            _ = try apply(path, all.map { ($0.key, $0.value) })
            #expect(try NetworkConfig.load(path: path) == NetworkConfig.parse(text: before, name: "lab", file: path))
        }
    }
}

@Suite struct VXLANDirectoryTests {
    @Test func derivedNamesAndSegmentsMustNotClash() throws {
        try withTempDir { dir in
            let vx = "[VXLAN]\nVNI=9\nLocal=10.99.0.1\n"
            try write("[Network]\nInterface=zt-b\n" + vx, to: dir + "/a.conf")
            try write("[Network]\nInterface=zt-b-br\n", to: dir + "/b.conf")             // a's bridge
            try write("[Network]\nInterface=zt-c\n" + vx, to: dir + "/c.conf")          // a's segment
            try write("[Network]\nInterface=zt-d\n[VXLAN]\nVNI=9\nLocal=10.99.0.1\nDestinationPort=4790\n", to: dir + "/d.conf")
            try write("[Network]\nInterface=zt-e\n[VXLAN]\nVNI=9\nLocal=10.99.0.5\n", to: dir + "/e.conf")
            try write("[Network]\nInterface=zt-f\n[VXLAN]\nVNI=9\nLocal=fd99::1\n", to: dir + "/f.conf")
            let (networks, errors) = NetworkDirectory.load(directory: dir)
            #expect(networks.map(\.name) == ["a", "d", "f"])
            #expect(errors.map(\.description) == [
                "\(dir)/b.conf: interface zt-b-br is already used by \(dir)/a.conf",
                "\(dir)/c.conf: VNI=9 on port 4789 is already used by \(dir)/a.conf (one VXLAN device per VNI and port)",
                "\(dir)/e.conf: VNI=9 on port 4789 is already used by \(dir)/a.conf (one VXLAN device per VNI and port)",
            ])
        }
    }
}
