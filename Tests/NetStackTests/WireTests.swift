import Testing
@testable import NetStack

@Suite struct WireTests {
    @Test func ethernetRoundTripAndTruncation() throws {
        let f = Build.ethernet(dst: .broadcast, src: peerMAC, type: EtherType.arp, [1, 2, 3])
        try f.withUnsafeBytes { raw in
            let e = try EthernetHeaderView(raw)
            #expect(e.destination == .broadcast)
            #expect(e.source == peerMAC)
            #expect(e.etherType == EtherType.arp)
            #expect(Array(e.payload) == [1, 2, 3])
            for n in 0..<14 {
                #expect(throws: WireError.truncated(needed: 14, available: n)) {
                    try EthernetHeaderView(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
                }
            }
        }
    }

    @Test func arpRoundTripTruncationAndUnsupported() throws {
        var a = Build.arp(op: ARPOperation.reply, sha: peerMAC, spa: peerIP, tha: ourMAC, tpa: ourIP)
        try a.withUnsafeBytes { raw in
            let v = try ARPPacketView(raw)
            #expect(v.operation == ARPOperation.reply)
            #expect(v.senderHardwareAddress == peerMAC && v.senderProtocolAddress == peerIP)
            #expect(v.targetHardwareAddress == ourMAC && v.targetProtocolAddress == ourIP)
            #expect(throws: WireError.truncated(needed: 28, available: 27)) {
                try ARPPacketView(UnsafeRawBufferPointer(rebasing: raw[0..<27]))
            }
        }
        a[1] = 6   // hardware type IEEE 802
        _ = a.withUnsafeBytes { raw in
            #expect(throws: WireError.unsupported(field: .hardwareType, value: 6)) { try ARPPacketView(raw) }
        }
        a[1] = 1; a[4] = 8
        _ = a.withUnsafeBytes { raw in
            #expect(throws: WireError.unsupported(field: .hardwareLength, value: 8)) { try ARPPacketView(raw) }
        }
    }

    @Test func ipv4RoundTripAndValidation() throws {
        let p = Build.ipv4(proto: IPProtocol.udp, [9, 8, 7, 6], id: 0x1234, mf: true, offset: 64, df: false)
        try p.withUnsafeBytes { raw in
            let v = try IPv4HeaderView(raw)
            #expect(v.source == peerIP && v.destination == ourIP)
            #expect(v.protocolNumber == IPProtocol.udp && v.identification == 0x1234)
            #expect(v.moreFragments && !v.dontFragment && v.fragmentOffset == 64 && v.isFragment)
            #expect(v.ttl == 64 && v.headerLength == 20 && v.totalLength == 24)
            #expect(Array(v.payload) == [9, 8, 7, 6])
            for n in 0..<20 {
                #expect(throws: WireError.truncated(needed: 20, available: n)) {
                    try IPv4HeaderView(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
                }
            }
            // Total length says 24 but only 22 bytes are there.
            #expect(throws: WireError.badLength(field: 24, available: 22)) {
                try IPv4HeaderView(UnsafeRawBufferPointer(rebasing: raw[0..<22]))
            }
        }
        var bad = p
        bad[0] = 0x65
        _ = bad.withUnsafeBytes { raw in #expect(throws: WireError.badVersion(6)) { try IPv4HeaderView(raw) } }
        bad = p; bad[0] = 0x44
        _ = bad.withUnsafeBytes { raw in #expect(throws: WireError.badHeaderLength(16)) { try IPv4HeaderView(raw) } }
        bad = p; bad[0] = 0x4F   // IHL 60 > 24 bytes
        _ = bad.withUnsafeBytes { raw in #expect(throws: WireError.badHeaderLength(60)) { try IPv4HeaderView(raw) } }
        bad = p; bad[8] = 1      // TTL changed, checksum stale
        bad.withUnsafeBytes { raw in
            #expect(throws: WireError.badChecksum) { try IPv4HeaderView(raw) }
            #expect((try? IPv4HeaderView(raw, verifyChecksum: false)) != nil)
        }
        // Ethernet padding after the datagram is cut off by the view.
        let padded = p + [0, 0, 0, 0]
        let n = padded.withUnsafeBytes { raw in (try? IPv4HeaderView(raw))?.payload.count }
        #expect(n == 4)
    }

    @Test func ipv4OptionsSkipped() throws {
        let p = Build.ipv4(proto: IPProtocol.udp, [1, 2], options: [0x94, 0x04, 0, 0, 1, 1, 1, 0])
        try p.withUnsafeBytes { raw in
            let v = try IPv4HeaderView(raw)
            #expect(v.headerLength == 28)
            #expect(Array(v.options) == [0x94, 0x04, 0, 0, 1, 1, 1, 0])
            #expect(Array(v.payload) == [1, 2])
        }
    }

    @Test func icmpRoundTripAndChecksum() throws {
        var m = Build.icmp(type: ICMPv4Type.echoRequest, rest: 0x0007_0003, [0xAA, 0xBB, 0xCC])
        try m.withUnsafeBytes { raw in
            let v = try ICMPv4View(raw)
            #expect(v.type == ICMPv4Type.echoRequest && v.code == 0)
            #expect(v.identifier == 7 && v.sequence == 3)
            #expect(Array(v.body) == [0xAA, 0xBB, 0xCC])
            #expect(throws: WireError.truncated(needed: 8, available: 7)) {
                try ICMPv4View(UnsafeRawBufferPointer(rebasing: raw[0..<7]))
            }
        }
        m[9] ^= 1
        _ = m.withUnsafeBytes { raw in #expect(throws: WireError.badChecksum) { try ICMPv4View(raw) } }
    }

    @Test func udpRoundTripChecksumAndLength() throws {
        let s = IPEndpoint(peerIP, 5000), d = IPEndpoint(ourIP, 53)
        var u = Build.udp(src: s, dst: d, [1, 2, 3, 4, 5])
        try u.withUnsafeBytes { raw in
            let v = try UDPHeaderView(raw)
            #expect(v.sourcePort == 5000 && v.destinationPort == 53 && v.length == 13)
            #expect(Array(v.payload) == [1, 2, 3, 4, 5])
            #expect(v.checksum != 0)
            #expect(v.checksumValid(source: IPAddress(peerIP), destination: IPAddress(ourIP)))
            #expect(!v.checksumValid(source: IPAddress(peerIP), destination: IPAddress(IPv4Address(10, 0, 0, 9))))
            #expect(throws: WireError.truncated(needed: 8, available: 5)) {
                try UDPHeaderView(UnsafeRawBufferPointer(rebasing: raw[0..<5]))
            }
            #expect(throws: WireError.badLength(field: 13, available: 12)) {
                try UDPHeaderView(UnsafeRawBufferPointer(rebasing: raw[0..<12]))
            }
        }
        u[4] = 0; u[5] = 7   // length < 8
        _ = u.withUnsafeBytes { raw in #expect(throws: WireError.badLength(field: 7, available: 13)) { try UDPHeaderView(raw) } }
        let none = Build.udp(src: s, dst: d, [1], checksum: false)
        try none.withUnsafeBytes { raw in
            let v = try UDPHeaderView(raw)
            #expect(v.checksum == 0 && v.checksumValid(source: .v4Any, destination: .v4Any))
        }
    }
}
