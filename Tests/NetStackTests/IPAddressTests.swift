import Testing
@testable import NetStack

/// The family-independent address type, its text forms and the dual-stack binding rules.
struct IPAddressTests {
    @Test func ipv4IsStoredMapped() {
        let a = IPAddress(IPv4Address(10, 0, 0, 1))
        #expect(a.isV4 && a.v4 == IPv4Address(10, 0, 0, 1) && a.hi == 0 && a.lo == 0xFFFF_0A00_0001)
        #expect(a.description == "10.0.0.1" && a.ipv6Text == "::ffff:10.0.0.1")
        #expect(IPAddress("10.0.0.1") == a)
        #expect(IPAddress("::ffff:10.0.0.1") == a)
        #expect(IPAddress.v4Any.isUnspecified && IPAddress.v6Any.isUnspecified && IPAddress.v4Any != .v6Any)
        #expect(IPAddress.v4Any.isV4 && !IPAddress.v6Any.isV4)
    }

    @Test func parsesIPv6Text() {
        #expect(IPAddress("fd00::1") == IPAddress(hi: 0xFD00_0000_0000_0000, lo: 1))
        #expect(IPAddress("::") == .v6Any)
        #expect(IPAddress("::1") == .loopback6)
        #expect(IPAddress("fe80::") == IPAddress(hi: 0xFE80_0000_0000_0000, lo: 0))
        #expect(IPAddress("1:2:3:4:5:6:7:8") == IPAddress(hi: 0x0001_0002_0003_0004, lo: 0x0005_0006_0007_0008))
        #expect(IPAddress("1:2:3:4:5:6:1.2.3.4") == IPAddress(hi: 0x0001_0002_0003_0004, lo: 0x0005_0006_0102_0304))
        #expect(IPAddress("2001:DB8::a:0:1") == IPAddress(hi: 0x2001_0DB8_0000_0000, lo: 0x0000_000A_0000_0001))
        for bad in ["", ":", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "fe80::1%eth0",
                    "::g", "1.2.3.4::", "::1.2.3", "1:2:3:4:5:6:7::8:9", ":1::2", "1::2:"] {
            #expect(IPAddress(bad) == nil, "\(bad)")
        }
    }

    @Test func formatsRFC5952() {
        for (text, want) in [("fd00:0:0:0:0:0:0:1", "fd00::1"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
                             ("2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"),
                             ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"), ("::", "::"), ("::1", "::1"),
                             ("fe80::", "fe80::"), ("1:0:0:2:0:0:0:3", "1:0:0:2::3")] {
            #expect(IPAddress(text)?.description == want, "\(text)")
        }
        #expect(IPEndpoint(IPAddress("fd00::1")!, 80).description == "[fd00::1]:80")
        #expect(IPEndpoint(IPv4Address(10, 0, 0, 1), 80).description == "10.0.0.1:80")
    }

    @Test func classifies() {
        let ll = IPAddress("fe80::200:ff:fe00:1")!
        #expect(ll.isLinkLocal && !ll.isMulticast && ll.isUnicast)
        #expect(ll.solicitedNode == IPAddress("ff02::1:ff00:1")! && ll.solicitedNode.isSolicitedNode)
        #expect(IPAddress.allNodes.isMulticast && !IPAddress.allNodes.isUnicast)
        #expect(IPAddress("255.255.255.255")!.isBroadcast && IPAddress("224.0.0.1")!.isMulticast)
        #expect(!IPAddress.v6Any.isUnicast && !IPAddress.v4Any.isUnicast)
        let p = IPv6CIDR("fd00:1::5/64")!
        #expect(p.contains(IPAddress("fd00:1::ffff")!) && !p.contains(IPAddress("fd00:2::1")!))
        #expect(p.network == IPAddress("fd00:1::")!)
        #expect(IPv6CIDR("fd00::1/128")!.contains(IPAddress("fd00::1")!) && !IPv6CIDR("fd00::1/128")!.contains(IPAddress("fd00::2")!))
        #expect(IPv6CIDR("::/0")!.contains(IPAddress("2001:db8::1")!))
        #expect(IPv6CIDR("fd00::/7")!.contains(IPAddress("fdff::1")!) && !IPv6CIDR("fd00::/8")!.contains(IPAddress("fc00::1")!))
        #expect(IPv6CIDR("10.0.0.1/24") == nil && IPv6CIDR("fd00::/129") == nil)
    }

    @Test func pseudoHeaderOfMappedAddressesIsIPv4s() {
        let a = IPAddress(IPv4Address(10, 0, 0, 1)), b = IPAddress(IPv4Address(192, 168, 7, 9))
        #expect(Checksum.finish(Checksum.pseudoHeader(src: a, dst: b, proto: 6, length: 1234))
                == Checksum.finish(Checksum.pseudoHeader(src: a.v4, dst: b.v4, proto: 6, length: 1234)))
        // IPv6: the sum over the 40-byte pseudo-header written out.
        let s = IPAddress("fd00::1")!, d = IPAddress("2001:db8::2:3")!
        var raw = [UInt8](repeating: 0, count: 40)
        raw.replaceSubrange(0..<16, with: s.bytes)
        raw.replaceSubrange(16..<32, with: d.bytes)
        raw[34] = 0x04; raw[35] = 0xD2; raw[39] = 17
        let want = raw.withUnsafeBytes { Checksum.compute($0.baseAddress!, count: 40) }
        #expect(Checksum.finish(Checksum.pseudoHeader(src: s, dst: d, proto: 17, length: 1234)) == want)
        #expect(Checksum.finish(Checksum.pseudoHeader(src: d, dst: s, proto: 17, length: 1234)) == want)
    }

    @Test func dualStackBindingRules() throws {
        let t = PortTable(seed: 1)
        let v4 = IPAddress(IPv4Address(10, 0, 0, 1)), v6 = IPAddress("fd00::1")!
        let dual = try t.bind(.tcp, IPEndpoint(.v6Any, 80))
        #expect(!dual.v6Only && dual.accepts(v4) && dual.accepts(v6))
        // A dual-stack :: covers IPv4: 0.0.0.0 and every IPv4 address conflict, like Linux.
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, IPEndpoint(.v4Any, 80)) }
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, IPEndpoint(v4, 80)) }
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, IPEndpoint(v6, 80)) }
        t.release(dual)
        // IPV6_V6ONLY: :: and 0.0.0.0 share the port.
        let only = try t.bind(.tcp, IPEndpoint(.v6Any, 80), options: .init(v6Only: true))
        #expect(only.v6Only && !only.accepts(v4) && only.accepts(v6))
        let any4 = try t.bind(.tcp, IPEndpoint(.v4Any, 80))
        #expect(any4.accepts(v4) && !any4.accepts(v6))
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, IPEndpoint(v6, 80)) }
        #expect(throws: SocketError.addressInUse) { try t.bind(.tcp, IPEndpoint(.v6Any, 80)) }
        // Specific addresses of the two families never overlap.
        _ = try t.bind(.udp, IPEndpoint(v4, 53))
        _ = try t.bind(.udp, IPEndpoint(v6, 53))
        #expect(throws: SocketError.addressInUse) { try t.bind(.udp, IPEndpoint(.v6Any, 53)) }
        #expect(throws: SocketError.addressInUse) {
            try t.bind(.udp, IPEndpoint(.v6Any, 53), options: .init(v6Only: true))
        }
        _ = try t.bind(.udp, IPEndpoint(.v6Any, 54), options: .init(v6Only: true))
        _ = try t.bind(.udp, IPEndpoint(v4, 54))
    }
}
