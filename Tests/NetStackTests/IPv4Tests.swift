import Testing
@testable import NetStack

@Suite struct IPv4Tests {
    func udpPacket(_ payload: [UInt8], id: UInt16 = 1) -> [UInt8] {
        Build.ipv4(proto: IPProtocol.udp, Build.udp(src: IPEndpoint(peerIP, 4000), dst: IPEndpoint(ourIP, 5000), payload), id: id)
    }

    func boundStack() throws -> (NetStack, FrameRecorder, SocketHandle) {
        let (s, rec) = makeStack()
        s.learnPeer()
        _ = rec.take()
        let h = try s.udpOpen(local: IPEndpoint(.any, 5000))
        return (s, rec, h)
    }

    func read(_ s: NetStack, _ h: SocketHandle) throws -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: 70000)
        let r = try buf.withUnsafeMutableBytes { try s.udpReceive(h, into: $0) }
        return r.map { Array(buf[0..<$0.count]) }
    }

    @Test func badHeadersAreDroppedAndCounted() throws {
        let (s, _, h) = try boundStack()
        let good = udpPacket([1, 2, 3])
        var v6 = good; v6[0] = 0x65
        var ihl = good; ihl[0] = 0x43
        var len = good; len[2] = 0x10            // total length 4096 > buffer
        var csum = good; csum[10] ^= 0xFF
        for p in [v6, ihl, len] { s.receive(Build.ethernet(type: EtherType.ipv4, p)) }
        #expect(s.counters.droppedMalformed == 3)
        s.receive(Build.ethernet(type: EtherType.ipv4, csum))
        #expect(s.counters.droppedChecksum == 1)
        s.receive(Build.ethernet(type: EtherType.ipv4, Array(good[0..<19])))
        #expect(s.counters.droppedMalformed == 4)
        #expect(try read(s, h) == nil)
        s.receive(Build.ethernet(type: EtherType.ipv4, good))
        #expect(try read(s, h) == [1, 2, 3])
    }

    @Test func notForUsAndMartiansDropped() throws {
        let (s, _, h) = try boundStack()
        s.receive(Build.ethernet(type: EtherType.ipv4, Build.ipv4(dst: IPv4Address(10, 0, 0, 99), proto: IPProtocol.udp, [])))
        s.receive(Build.ethernet(dst: MACAddress(2, 9, 9, 9, 9, 9), type: EtherType.ipv4, udpPacket([1])))
        #expect(s.counters.droppedNotForUs == 2)
        s.receive(Build.ethernet(type: EtherType.ipv4, Build.ipv4(src: .broadcast, proto: IPProtocol.udp, [])))
        #expect(s.counters.droppedMartian == 1)
        #expect(try read(s, h) == nil)
    }

    @Test func optionsAreSkipped() throws {
        let (s, _, h) = try boundStack()
        let udp = Build.udp(src: IPEndpoint(peerIP, 4000), dst: IPEndpoint(ourIP, 5000), [42])
        s.receive(Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.udp, udp, options: [0x94, 4, 0, 0, 1, 0, 0, 0])))
        #expect(try read(s, h) == [42])
    }

    func fragments(of datagram: [UInt8], size: Int, id: UInt16 = 9) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var off = 0
        while off < datagram.count {
            let n = min(size, datagram.count - off)
            out.append(Build.ethernet(type: EtherType.ipv4,
                                      Build.ipv4(proto: IPProtocol.udp, Array(datagram[off..<off + n]), id: id,
                                                 mf: off + n < datagram.count, offset: off)))
            off += n
        }
        return out
    }

    var bigUDP: ([UInt8], [UInt8]) {
        let payload = pattern(3000)
        return (payload, Build.udp(src: IPEndpoint(peerIP, 4000), dst: IPEndpoint(ourIP, 5000), payload))
    }

    @Test func reassemblyInOrder() throws {
        let (s, _, h) = try boundStack()
        let (payload, dgram) = bigUDP
        for f in fragments(of: dgram, size: 1000) { s.receive(f) }
        #expect(try read(s, h) == payload)
        #expect(s.counters.reassembled == 1 && s.counters.fragmentsIn == 4)
    }

    @Test func reassemblyOutOfOrderWithDuplicate() throws {
        let (s, _, h) = try boundStack()
        let (payload, dgram) = bigUDP
        let f = fragments(of: dgram, size: 512)
        for i in [5, 2, 0, 2, 4, 1, 3] { s.receive(f[i]) }
        #expect(try read(s, h) == payload)
        #expect(s.counters.reassemblyOverlaps == 0)
    }

    @Test func overlappingFragmentDropsDatagram() throws {
        let (s, _, h) = try boundStack()
        let (_, dgram) = bigUDP
        let f = fragments(of: dgram, size: 1000)
        s.receive(f[0])
        // Overlaps the first fragment's tail with different offset.
        s.receive(Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.udp, Array(dgram[992..<1992]), id: 9, mf: true, offset: 992)))
        for x in f[1...] { s.receive(x) }
        #expect(try read(s, h) == nil)
        #expect(s.counters.reassemblyOverlaps == 1)
        // A same-range fragment with different bytes is an overlap too.
        s.receive(fragments(of: dgram, size: 1000, id: 10)[0])
        var evil = dgram; evil[10] ^= 0xFF
        s.receive(fragments(of: evil, size: 1000, id: 10)[0])
        #expect(s.counters.reassemblyOverlaps == 2)
    }

    @Test func reassemblyTimesOutWithTimeExceeded() throws {
        let (s, rec, h) = try boundStack()
        let (_, dgram) = bigUDP
        let f = fragments(of: dgram, size: 1000)
        s.receive(f[0]); s.receive(f[1])
        let deadline = s.poll(now: t0)
        #expect(deadline == t0 + .seconds(30))
        _ = s.poll(now: t0 + .seconds(30))
        #expect(s.counters.reassemblyTimeouts == 1)
        let icmp = rec.take().compactMap(parseIP).filter { $0.proto == IPProtocol.icmp }
        #expect(icmp.count == 1 && icmp.first?.payload.first == ICMPv4Type.timeExceeded && icmp.first?.payload[1] == 1)
        s.receive(f[2], now: t0 + .seconds(31))
        #expect(try read(s, h) == nil)
    }

    @Test func reassemblyMemoryIsBounded() throws {
        let (s, _, h) = try boundStack()
        let (payload, dgram) = bigUDP
        // 20 datagrams with only their first fragment: at most 8 held at once.
        for id in 100..<120 { s.receive(fragments(of: dgram, size: 1000, id: UInt16(id))[0]) }
        #expect(s.reassembler.inProgress == 8)
        #expect(s.reassembler.slots.count == 8)
        // The newest ones are still there and complete.
        for f in fragments(of: dgram, size: 1000, id: 119)[1...] { s.receive(f) }
        #expect(try read(s, h) == payload)
        // Fragments reaching past 65535 are refused.
        s.receive(Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.udp, [UInt8](repeating: 1, count: 16), id: 5, mf: true, offset: 65528)))
        #expect(s.counters.reassemblyDrops >= 1)
    }

    @Test func udpSendFragmentsAboveMTU() throws {
        let (s, rec, h) = try boundStack()
        let payload = pattern(4000)
        try payload.withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 4000), $0, now: t0) }
        let frames = rec.take()
        let frags = frames.compactMap(parseIP)
        #expect(frags.count == 3)
        #expect(frags.allSatisfy { $0.payload.count + 20 <= 1500 && !$0.df && $0.ttl == 64 })
        #expect(Set(frags.map(\.id)).count == 1)
        let whole = reassemble(frags)
        #expect(whole.map { Array($0[8...]) } == payload)
        // The peer's stack reassembles our fragments (checksum included), in any order.
        let (peer, _) = makeStack {
            $0.mac = peerMAC
            $0.addresses = [IPv4CIDR(address: peerIP, prefixLength: 24)]
        }
        let ph = try peer.udpOpen(local: IPEndpoint(.any, 4000))
        for f in frames.reversed() { peer.receive(f) }
        var buf = [UInt8](repeating: 0, count: 5000)
        let got = try buf.withUnsafeMutableBytes { try peer.udpReceive(ph, into: $0) }
        #expect(got?.count == 4000 && got?.from == IPEndpoint(ourIP, 5000))
        #expect(Array(buf[0..<4000]) == payload)
    }

    @Test func routingUsesGatewayOrFails() throws {
        let (s, rec) = makeStack(gateway: IPv4Address(10, 0, 0, 254))
        let h = try s.udpOpen(local: IPEndpoint(.any, 1))
        try ([1] as [UInt8]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(IPv4Address(8, 8, 8, 8), 53), $0, now: t0) }
        #expect(parseARP(rec.take()[0])?.tpa == IPv4Address(10, 0, 0, 254))
        let (s2, _) = makeStack()
        let h2 = try s2.udpOpen(local: IPEndpoint(.any, 1))
        #expect(throws: SocketError.networkUnreachable) {
            try ([1] as [UInt8]).withUnsafeBytes { try s2.udpSend(h2, to: IPEndpoint(IPv4Address(8, 8, 8, 8), 53), $0, now: t0) }
        }
        #expect(s2.counters.noRoute == 1)
    }

    @Test func transmitterSetsDFAndTTLAndUsesMTU() {
        let (s, rec) = makeStack(mtu: 2800)
        s.learnPeer()
        _ = rec.take()
        #expect(s.maxPayload(to: IPAddress(peerIP)) == 2780)
        let ok = s.transmit(src: IPAddress(ourIP), dst: IPAddress(peerIP), proto: IPProtocol.tcp, capacity: 100_000) { buf in
            #expect(buf.count == 2780)
            for i in 0..<20 { buf[i] = UInt8(i) }
            return 20
        }
        #expect(ok)
        let ip = parseIP(rec.take()[0])
        #expect(ip?.df == true && ip?.ttl == 64 && ip?.payload == (0..<20).map { UInt8($0) } && ip?.ethDst == peerMAC)
        s.setMTU(1400)
        #expect(s.maxPayload(to: IPAddress(peerIP)) == 1380)
    }
}
