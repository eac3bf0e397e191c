import Testing
@testable import ZTConfig

@Suite struct NetworkConfigParseTests {
    @Test func defaults() throws {
        let c = try parseNet("")
        #expect(c == NetworkConfig(name: "net"))
        #expect(c.mtu == 2800 && c.tcpReceiveBuffer == 4 << 20 && c.tcpSendBuffer == 4 << 20)
        #expect(c.maxConnections == 4096 && !c.defaultRoute && c.addresses.isEmpty && c.services.isEmpty)
        #expect(c.interface == nil && c.macAddress == nil && c.gateway == nil && c.bridge == nil)
    }

    @Test func everyKey() throws {
        let c = try parseNet("""
            [Network]
            Interface=tap.zt_0-a
            MACAddress=02:AB:cd:00:00:01
            MTU=9000
            Address=10.1.0.2/24 fd00::2/64
            Address = 10.2.0.2/16
            KernelAddress=10.1.0.1/24
            KernelAddress=FD00:0:0::1/64
            Gateway=10.1.0.254
            DefaultRoute=yes
            Route=192.168.0.0/16 10.9.9.9
            Bridge=br0
            Services=echo chargen
            Services=discard
            [Stack]
            TCPReceiveBuffer=64K
            TCPSendBuffer=67108864
            MaxConnections=65536
            [Access]
            AllowUsers=alice 1001
            AllowGroups=ztap wheel
            AllowGroups=0
            AllowPrivilegedPorts=yes
            """)
        #expect(c.interface == "tap.zt_0-a")
        #expect(c.macAddress == "02:ab:cd:00:00:01")
        #expect(c.mtu == 9000)
        #expect(c.addresses.map(\.description) == ["10.1.0.2/24", "fd00::2/64", "10.2.0.2/16"])
        #expect(c.addresses[0].family == .v4 && c.addresses[0].bytes == [10, 1, 0, 2] && c.addresses[0].prefixLength == 24)
        #expect(c.addresses[1].family == .v6 && c.addresses[1].bytes.count == 16 && c.addresses[1].address == "fd00::2")
        #expect(c.kernelAddresses.map(\.description) == ["10.1.0.1/24", "fd00::1/64"])
        #expect(c.gateway == "10.1.0.254")
        #expect(c.defaultRoute)
        #expect(c.routes.map(\.description) == ["192.168.0.0/16", "10.9.9.9/32"])
        #expect(c.bridge == "br0")
        #expect(c.services == [.echo, .chargen, .discard])
        #expect(c.tcpReceiveBuffer == 65536 && c.tcpSendBuffer == 64 << 20)
        #expect(c.maxConnections == 65536)
        #expect(c.allowUsers == ["alice", "1001"])
        #expect(c.allowGroups == ["ztap", "wheel", "0"])
        #expect(c.allowPrivilegedPorts)
        #expect(try !parseNet("[Access]\nAllowUsers=alice").allowPrivilegedPorts)
    }

    @Test func booleansAndSizes() throws {
        for v in ["yes", "1", "true", "on", "Y", "TRUE"] { #expect(try parseNet("[Network]\nDefaultRoute=\(v)").defaultRoute) }
        for v in ["no", "0", "false", "off", "n"] { #expect(try !parseNet("[Network]\nDefaultRoute=\(v)").defaultRoute) }
        // Offloads are on unless turned off; the largest MTU a TAP takes is accepted.
        #expect(try parseNet("[Network]\nMTU=65521").offload)
        #expect(try parseNet("[Network]\nMTU=65521").mtu == 65521)
        #expect(try !parseNet("[Stack]\nOffload=no").offload)
        #expect(try parseNet("[Stack]\nOffload=yes").offload)
        // Busy polling: 20us unless set; microseconds or milliseconds, 0 or no for off.
        #expect(try parseNet("[Network]\nMTU=1500").busyPoll == 20)
        #expect(try parseNet("[Stack]\nBusyPoll=50us").busyPoll == 50)
        #expect(try parseNet("[Stack]\nBusyPoll=1ms").busyPoll == 1000)
        #expect(try parseNet("[Stack]\nBusyPoll=0").busyPoll == 0)
        #expect(try parseNet("[Stack]\nBusyPoll=no").busyPoll == 0)
        #expect(try parseNet("[Stack]\nTCPSendBuffer=4m").tcpSendBuffer == 4 << 20)
        #expect(try parseNet("[Stack]\nTCPSendBuffer=65536").tcpSendBuffer == 65536)
        #expect(try parseNet("[Stack]\nTCPSendBuffer=64M").tcpSendBuffer == 64 << 20)
    }

    @Test func resetWithEmptyAssignment() throws {
        let c = try parseNet("""
            [Network]
            Address=10.0.0.2/24
            Address=
            Address=10.1.0.2/24
            MTU=1500
            MTU=
            Services=echo
            Services=
            """)
        #expect(c.addresses.map(\.description) == ["10.1.0.2/24"])
        #expect(c.mtu == 2800)
        #expect(c.services == [])
        // After a reset a single-valued key may be set again.
        #expect(try parseNet("[Network]\nMTU=1500\nMTU=\nMTU=9000").mtu == 9000)
    }

    @Test func badValuesNameKeyValueAndAllowed() {
        let cases: [(String, String)] = [
            ("[Network]\nMTU=1279", "net.conf:2: invalid MTU=1279: expected an integer in 1280...65521"),
            ("[Network]\nMTU=65522", "net.conf:2: invalid MTU=65522: expected an integer in 1280...65521"),
            ("[Network]\nMTU=15OO", "net.conf:2: invalid MTU=15OO: expected an integer in 1280...65521"),
            ("[Network]\nMTU=-1500", "net.conf:2: invalid MTU=-1500: expected an integer in 1280...65521"),
            ("[Network]\nInterface=much-too-long-name", "net.conf:2: invalid Interface=much-too-long-name: expected 1 to 15 characters [A-Za-z0-9_.-], not . or .."),
            ("[Network]\nInterface=..", "net.conf:2: invalid Interface=..: expected 1 to 15 characters [A-Za-z0-9_.-], not . or .."),
            ("[Network]\nInterface=a/b", "net.conf:2: invalid Interface=a/b: expected 1 to 15 characters [A-Za-z0-9_.-], not . or .."),
            ("[Network]\nMACAddress=02:00:00:00:00", "net.conf:2: invalid MACAddress=02:00:00:00:00: expected six hex pairs like 02:00:5e:10:00:01"),
            ("[Network]\nMACAddress=01:00:5e:00:00:01", "net.conf:2: invalid MACAddress=01:00:5e:00:00:01: expected a unicast address (lowest bit of the first byte clear, not all zero)"),
            ("[Network]\nMACAddress=00:00:00:00:00:00", "net.conf:2: invalid MACAddress=00:00:00:00:00:00: expected a unicast address (lowest bit of the first byte clear, not all zero)"),
            ("[Network]\nAddress=10.0.0.2", "net.conf:2: invalid Address=10.0.0.2: expected ADDRESS/PREFIX like 10.200.0.2/24 (prefix 0-32) or fd00::2/64 (0-128)"),
            ("[Network]\nAddress=10.0.0.2/33", "net.conf:2: invalid Address=10.0.0.2/33: expected ADDRESS/PREFIX like 10.200.0.2/24 (prefix 0-32) or fd00::2/64 (0-128)"),
            ("[Network]\nAddress=10.0.0.256/24", "net.conf:2: invalid Address=10.0.0.256/24: expected ADDRESS/PREFIX like 10.200.0.2/24 (prefix 0-32) or fd00::2/64 (0-128)"),
            ("[Network]\nAddress=fd00::1/129", "net.conf:2: invalid Address=fd00::1/129: expected ADDRESS/PREFIX like 10.200.0.2/24 (prefix 0-32) or fd00::2/64 (0-128)"),
            ("[Network]\nAddress=10.0.0.2/+4", "net.conf:2: invalid Address=10.0.0.2/+4: expected ADDRESS/PREFIX like 10.200.0.2/24 (prefix 0-32) or fd00::2/64 (0-128)"),
            ("[Network]\nAddress=224.0.0.1/4", "net.conf:2: invalid Address=224.0.0.1/4: expected a unicast, non-loopback address"),
            ("[Network]\nAddress=127.0.0.2/8", "net.conf:2: invalid Address=127.0.0.2/8: expected a unicast, non-loopback address"),
            ("[Network]\nAddress=10.0.0.2/24 10.0.0.2/16", "net.conf:2: duplicate Address=10.0.0.2/16: 10.0.0.2/24 is already listed"),
            ("[Network]\nKernelAddress=::/64", "net.conf:2: invalid KernelAddress=::/64: expected a unicast, non-loopback address"),
            ("[Network]\nGateway=10.0.0.1/24", "net.conf:2: invalid Gateway=10.0.0.1/24: expected an address like 10.200.0.1 or fe80::1 (no /prefix)"),
            ("[Network]\nGateway=fd00::1", "net.conf:2: invalid Gateway=fd00::1: must be link-local (fe80::/10) or inside an IPv6 Address= prefix (there is no IPv6 Address=)"),
            ("[Network]\nGateway=ff02::1", "net.conf:2: invalid Gateway=ff02::1: expected a unicast, non-loopback address"),
            ("[Network]\nDefaultRoute=maybe", "net.conf:2: invalid DefaultRoute=maybe: expected yes or no (also 1/0, true/false, on/off)"),
            ("[Stack]\nBusyPoll=20", "net.conf:2: invalid BusyPoll=20: expected a duration in 0us...1000us (digits with us or ms, e.g. 20us; 0 or no for off)"),
            ("[Stack]\nBusyPoll=2ms", "net.conf:2: invalid BusyPoll=2ms: expected a duration in 0us...1000us (digits with us or ms, e.g. 20us; 0 or no for off)"),
            ("[Stack]\nBusyPoll=-5us", "net.conf:2: invalid BusyPoll=-5us: expected a duration in 0us...1000us (digits with us or ms, e.g. 20us; 0 or no for off)"),
            ("[Stack]\nOffload=tso", "net.conf:2: invalid Offload=tso: expected yes or no (also 1/0, true/false, on/off)"),
            ("[Network]\nRoute=10.1.2.3/16", "net.conf:2: invalid Route=10.1.2.3/16: host bits are set; did you mean 10.1.0.0/16?"),
            ("[Network]\nRoute=10.1.0.0/", "net.conf:2: invalid Route=10.1.0.0/: expected NETWORK/PREFIX like 10.20.0.0/16 or fd00:1::/64, or one address"),
            ("[Network]\nBridge=my bridge", "net.conf:2: invalid Bridge=my bridge: expected an interface name, 1 to 15 characters [A-Za-z0-9_.-]"),
            ("[Network]\nServices=echo ftp", "net.conf:2: invalid Services=ftp: expected any of echo, discard, chargen"),
            ("[Network]\nServices=echo\nServices=echo", "net.conf:3: duplicate Services=echo: already listed"),
            ("[Stack]\nTCPReceiveBuffer=32K", "net.conf:2: invalid TCPReceiveBuffer=32K: expected a size in 64K...64M (bytes, or with suffix K or M, e.g. 4M)"),
            ("[Stack]\nTCPSendBuffer=65M", "net.conf:2: invalid TCPSendBuffer=65M: expected a size in 64K...64M (bytes, or with suffix K or M, e.g. 4M)"),
            ("[Stack]\nTCPSendBuffer=4X", "net.conf:2: invalid TCPSendBuffer=4X: expected a size in 64K...64M (bytes, or with suffix K or M, e.g. 4M)"),
            ("[Stack]\nTCPSendBuffer=99999999999999999999G", "net.conf:2: invalid TCPSendBuffer=99999999999999999999G: expected a size in 64K...64M (bytes, or with suffix K or M, e.g. 4M)"),
            ("[Stack]\nMaxConnections=0", "net.conf:2: invalid MaxConnections=0: expected an integer in 1...65536"),
            ("[Access]\nAllowUsers=alice b@d", "net.conf:2: invalid AllowUsers=b@d: expected a user name ([A-Za-z_][A-Za-z0-9_.-]{0,31}) or a numeric uid"),
            ("[Access]\nAllowGroups=-wheel", "net.conf:2: invalid AllowGroups=-wheel: expected a group name ([A-Za-z_][A-Za-z0-9_.-]{0,31}) or a numeric gid"),
            ("[Access]\nAllowGroups=4294967295", "net.conf:2: invalid AllowGroups=4294967295: expected a group name ([A-Za-z_][A-Za-z0-9_.-]{0,31}) or a numeric gid"),
        ]
        for (text, expected) in cases {
            #expect(netError(text) == expected, "\(text)")
        }
    }

    @Test func structuralErrors() {
        #expect(netError("[Network]\nMTU=1500\n\nMTU=9000")
                == "net.conf:4: duplicate MTU=9000: MTU= takes one value and is already set on line 2 (an empty MTU= line resets it)")
        #expect(netError("[Network]\nFoo=1")
                == "net.conf:2: unknown key Foo= in [Network]; allowed: Interface= MACAddress= MTU= Address= KernelAddress= Gateway= DefaultRoute= Route= Bridge= Services=")
        #expect(netError("[Network]\nmtu=1500") == "net.conf:2: unknown key mtu= in [Network]; did you mean MTU= (keys are case-sensitive)?")
        #expect(netError("[Network]\nMaxConnections=5") == "net.conf:2: unknown key MaxConnections= in [Network]; MaxConnections= belongs in [Stack]")
        #expect(netError("# c\n[Netwrk]\nMTU=1500") == "net.conf:2: unknown section [Netwrk]; allowed: [Network], [Stack], [Access], [VXLAN]")
        #expect(netError("[network]\n") == "net.conf:1: unknown section [network]; allowed: [Network], [Stack], [Access], [VXLAN]")
        #expect(netError("[Network]\nMTU 1500")
                == "net.conf:2: expected Key=Value, [Section], or a comment starting with # or ;, got MTU 1500")
    }

    @Test func firstErrorInFileOrderIsReported() {
        #expect(netError("[Network]\nMTU=1\n[Bogus]\n") == "net.conf:2: invalid MTU=1: expected an integer in 1280...65521")
        #expect(netError("[Bogus]\n[Network]\nMTU=1\n") == "net.conf:1: unknown section [Bogus]; allowed: [Network], [Stack], [Access], [VXLAN]")
    }

    @Test func crossKeyChecks() {
        #expect(netError("[Network]\nAddress=10.0.0.2/24\nKernelAddress=10.0.0.1/24 10.0.0.2/24")
                == "net.conf:3: KernelAddress=10.0.0.2/24 has the same address as Address=10.0.0.2/24 on line 2; the kernel side and the stack are two different hosts")
        #expect(netError("[Network]\nAddress=10.0.0.2/24\nGateway=10.1.0.1")
                == "net.conf:3: invalid Gateway=10.1.0.1: must be inside an IPv4 Address= subnet (Address= has 10.0.0.2/24)")
        #expect(netError("[Network]\nGateway=10.1.0.1")
                == "net.conf:2: invalid Gateway=10.1.0.1: must be inside an IPv4 Address= subnet (there is no IPv4 Address=)")
        #expect(netError("[Network]\nGateway=10.0.0.2\nAddress=10.0.0.2/24")
                == "net.conf:2: invalid Gateway=10.0.0.2: it is the stack's own Address=10.0.0.2/24")
        #expect(netError("[Network]\nInterface=br0\nBridge=br0")
                == "net.conf:3: invalid Bridge=br0: that is this network's own interface name")
        #expect(netError("[Network]\nAddress=10.0.0.2/24\nGateway=10.0.0.1") == nil)
        // IPv6: one gateway per family, link-local or inside an IPv6 prefix.
        #expect(netError("[Network]\nAddress=10.0.0.2/24 fd00::2/64\nGateway=10.0.0.1 fe80::1") == nil)
        #expect(netError("[Network]\nAddress=fd00::2/64\nGateway=fd00::1") == nil)
        #expect(netError("[Network]\nAddress=fd00::2/64\nGateway=fd00:1::1")
                == "net.conf:3: invalid Gateway=fd00:1::1: must be link-local (fe80::/10) or inside an IPv6 Address= prefix (Address= has fd00::2/64)")
        #expect(netError("[Network]\nAddress=fd00::2/64\nGateway=fd00::2")
                == "net.conf:3: invalid Gateway=fd00::2: it is the stack's own Address=fd00::2/64")
        #expect(netError("[Network]\nGateway=fe80::1 fe80::2")
                == "net.conf:2: duplicate Gateway=fe80::2: the IPv6 gateway is already fe80::1")
        let c = try? NetworkConfig.parse(text: "[Network]\nAddress=10.0.0.2/24\nGateway=fe80::1\nGateway=10.0.0.1\n", name: "net", file: "net.conf")
        #expect(c?.gateway == "10.0.0.1" && c?.gateway6 == "fe80::1")
    }

    @Test func networkNames() {
        for good in ["a", "0", "example", "my-net-1", String(repeating: "a", count: 32)] {
            #expect(NetworkConfig.isValidName(good), "\(good)")
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a b", "ä", String(repeating: "a", count: 33), "../x"] {
            #expect(!NetworkConfig.isValidName(bad), "\(bad)")
        }
        #expect(configError { () throws(ConfigError) in _ = try NetworkConfig.parse(text: "", name: "Bad", file: "Bad.conf") }?.description
                == "Bad.conf: invalid network name \"Bad\": expected 1 to 32 characters [a-z0-9-], not starting with -")
    }

    @Test func ipPrefix() throws {
        let p = try #require(IPPrefix("FD00:0::1/64"))
        #expect(p.description == "fd00::1/64" && p.family == .v6 && p.prefixLength == 64)
        #expect(IPPrefix("10.0.0.1") == nil)
        #expect(IPPrefix("10.0.0.1", defaultsToHost: true)?.description == "10.0.0.1/32")
        #expect(IPPrefix("010.0.0.1/8") == nil, "inet_pton rejects leading zeros")
        #expect(IPPrefix("10.1/8") == nil)
        #expect(IPPrefix("fe80::1%eth0/64") == nil)
        let v4 = try #require(IPPrefix("10.1.2.3/20"))
        #expect(v4.ipv4Value == 0x0A01_0203)
        #expect(v4.network.description == "10.1.0.0/20" && !v4.isNetwork)
        #expect(v4.contains(addressBytes: [10, 1, 15, 255]) && !v4.contains(addressBytes: [10, 1, 16, 0]))
        #expect(IPPrefix("0.0.0.0/0")?.contains(addressBytes: [8, 8, 8, 8]) == true)
    }
}

@Suite struct DerivedNameTests {
    func isValidMAC(_ s: String) -> Bool {
        guard let b = Value.macBytes(s) else { return false }
        return b[0] & 0x02 != 0 && b[0] & 0x01 == 0 && Value.renderMAC(b) == s
    }

    @Test func effectiveInterface() {
        #expect(NetworkConfig(name: "example").effectiveInterface == "zt-example")
        #expect(NetworkConfig(name: "abcdefghijkl").effectiveInterface == "zt-abcdefghijkl")
        var c = NetworkConfig(name: "example")
        c.interface = "tap7"
        #expect(c.effectiveInterface == "tap7")
        let long = NetworkConfig(name: "abcdefghijklm").effectiveInterface
        // FNV-1a("abcdefghijklm") folded to 16 bits, fixed here so a change of hash is noticed.
        #expect(long == "ztabcdefghi" + String(format4(fold(fnv1a32("abcdefghijklm")))))
        #expect(long.count == 15 && long.hasPrefix("ztabcdefghi"))
        for n in ["a", "office-lan", "abcdefghijklm", String(repeating: "x", count: 32), "x-y-z-0123456789-abcdef"] {
            let i = NetworkConfig(name: n).effectiveInterface
            #expect(Value.isValidInterfaceName(i) && i.utf8.count <= 15, "\(n) -> \(i)")
            #expect(i == NetworkConfig(name: n).effectiveInterface)
        }
        // Same 9-character prefix, different names: different interfaces.
        #expect(NetworkConfig(name: "building-a-floor-1").effectiveInterface
                != NetworkConfig(name: "building-a-floor-2").effectiveInterface)
    }

    @Test func knownHashValues() {
        // FNV-1a reference values: stable across processes (Swift's Hasher is not).
        #expect(fnv1a32("") == 0x811C_9DC5)
        #expect(fnv1a32("a") == 0xE40C_292C)
        #expect(fnv1a64("a") == 0xAF63_DC4C_8601_EC8C)
    }

    @Test func effectiveMAC() {
        let a = NetworkConfig(name: "example").effectiveMAC
        #expect(isValidMAC(a), "\(a)")
        #expect(a == NetworkConfig(name: "example").effectiveMAC)
        #expect(a != NetworkConfig(name: "example2").effectiveMAC)
        for n in ["a", "b", "office", "0", String(repeating: "z", count: 32)] {
            #expect(isValidMAC(NetworkConfig(name: n).effectiveMAC))
        }
        var c = NetworkConfig(name: "example")
        c.macAddress = "02:00:00:00:00:09"
        #expect(c.effectiveMAC == "02:00:00:00:00:09")
    }

    func fold(_ h: UInt32) -> UInt16 { UInt16(truncatingIfNeeded: h >> 16) ^ UInt16(truncatingIfNeeded: h) }
    func format4(_ v: UInt16) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 4 - s.count) + s
    }
}

@Suite struct RenderNewFileTests {
    @Test func roundTripDefaults() throws {
        let c = NetworkConfig(name: "fresh")
        let text = c.renderNewFile()
        #expect(text.hasPrefix("# ztap network \"fresh\""))
        #expect(text.contains("\n[Network]\n"))
        #expect(try NetworkConfig.parse(text: text, name: "fresh", file: "fresh.conf") == c)
    }

    @Test func roundTripEverything() throws {
        var c = NetworkConfig(name: "full")
        c.interface = "ztfull"
        c.macAddress = "02:11:22:33:44:55"
        c.mtu = 1500
        c.addresses = [IPPrefix("10.3.0.2/24")!, IPPrefix("fd00::2/64")!]
        c.kernelAddresses = [IPPrefix("10.3.0.1/24")!]
        c.gateway = "10.3.0.1"
        c.defaultRoute = true
        c.routes = [IPPrefix("10.4.0.0/16")!]
        c.bridge = "br-lan"
        c.services = [.chargen, .echo]
        c.tcpReceiveBuffer = 65536 + 1
        c.tcpSendBuffer = 8 << 20
        c.maxConnections = 10
        c.allowUsers = ["alice"]
        c.allowGroups = ["ztap", "100"]
        c.allowPrivilegedPorts = true
        let text = c.renderNewFile()
        #expect(try NetworkConfig.parse(text: text, name: "full", file: "full.conf") == c)
        #expect(text.contains("TCPSendBuffer=8M\n") && text.contains("TCPReceiveBuffer=65537\n"))
        #expect(text.contains("Address=10.3.0.2/24\nAddress=fd00::2/64\n"))
        #expect(text.contains("\n[Access]\nAllowUsers=alice\nAllowGroups=ztap\nAllowGroups=100\nAllowPrivilegedPorts=yes\n"))
    }
}
