import Testing
@testable import NetStack

@Suite struct UDPTests {
    func recv(_ s: NetStack, _ h: SocketHandle, max: Int = 65536) throws -> (bytes: [UInt8], from: IPEndpoint, length: Int)? {
        var buf = [UInt8](repeating: 0, count: max)
        let r = try buf.withUnsafeMutableBytes { try s.udpReceiveDatagram(h, into: $0) }
        return r.map { (Array(buf[0..<$0.count]), $0.from, $0.length) }
    }

    @Test func bindEphemeralAndAddressInUse() throws {
        let (s, _) = makeStack()
        let a = try s.udpOpen(local: IPEndpoint(.any, 53))
        #expect(a.isUDP)
        #expect(throws: SocketError.addressInUse) { try s.udpOpen(local: IPEndpoint(ourIP, 53)) }
        #expect(throws: SocketError.addressNotAvailable) { try s.udpOpen(local: IPEndpoint(IPv4Address(10, 0, 0, 50), 54)) }
        let e1 = try s.udpOpen(local: IPEndpoint(.any, 0)), e2 = try s.udpOpen(local: IPEndpoint(ourIP, 0))
        let p1 = s.udpLocalEndpoint(e1)!.port, p2 = s.udpLocalEndpoint(e2)!.port
        #expect(PortTable.defaultEphemeral.contains(p1) && PortTable.defaultEphemeral.contains(p2) && p1 != p2)
        s.udpClose(a)
        #expect(s.udpLocalEndpoint(a) == nil)
        let b = try s.udpOpen(local: IPEndpoint(ourIP, 53))
        #expect(b != a)   // new generation: the stale handle stays invalid
        #expect(throws: SocketError.invalidHandle) { try s.udpConnect(a, remote: nil) }
    }

    @Test func sendToAndReceiveFrom() throws {
        let (s, rec) = makeStack()
        s.learnPeer(); _ = rec.take()
        let h = try s.udpOpen(local: IPEndpoint(.any, 5000))
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4000), to: IPEndpoint(ourIP, 5000), [1, 2, 3]))
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4001), to: IPEndpoint(ourIP, 5000), [4]))
        #expect(s.collectEvents() == [.readable(h)])   // coalesced: one per empty -> non-empty
        #expect(s.udpNextDatagramSize(h) == 3)
        let d1 = try recv(s, h), d2 = try recv(s, h)
        #expect(d1?.bytes == [1, 2, 3] && d1?.from == IPEndpoint(peerIP, 4000))
        #expect(d2?.bytes == [4] && d2?.from == IPEndpoint(peerIP, 4001))
        #expect(try recv(s, h) == nil)
        try ([9, 9] as [UInt8]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 4000), $0, now: t0) }
        let out = rec.take().compactMap(parseIP)
        #expect(out.count == 1)
        let ok = out[0].payload.withUnsafeBytes { raw -> Bool in
            guard let u = try? UDPHeaderView(raw) else { return false }
            return u.sourcePort == 5000 && u.destinationPort == 4000 && Array(u.payload) == [9, 9]
                && u.checksum != 0 && u.checksumValid(source: IPAddress(ourIP), destination: IPAddress(peerIP))
        }
        #expect(ok)
        #expect(throws: SocketError.notConnected) { try ([1] as [UInt8]).withUnsafeBytes { try s.udpSend(h, to: nil, $0, now: t0) } }
        let big = [UInt8](repeating: 0, count: 65508)
        #expect(throws: SocketError.messageTooLong) { try big.withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 1), $0, now: t0) } }
    }

    @Test func connectFiltersInputAndSetsDefaultDestination() throws {
        let (s, rec) = makeStack()
        s.learnPeer(); _ = rec.take()
        let h = try s.udpOpen(local: IPEndpoint(.any, 5000))
        try s.udpConnect(h, remote: IPEndpoint(peerIP, 4000))
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4001), to: IPEndpoint(ourIP, 5000), [1]))
        #expect(try recv(s, h) == nil)
        #expect(s.counters.droppedNoSocket == 1)
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4000), to: IPEndpoint(ourIP, 5000), [2]))
        #expect(try recv(s, h)?.bytes == [2])
        _ = rec.take()
        try ([7] as [UInt8]).withUnsafeBytes { try s.udpSend(h, to: nil, $0, now: t0) }
        #expect(rec.take().compactMap(parseIP).first?.dst == peerIP)
        #expect(throws: SocketError.networkUnreachable) { try s.udpConnect(h, remote: IPEndpoint(IPv4Address(1, 1, 1, 1), 1)) }
        try s.udpConnect(h, remote: nil)
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4001), to: IPEndpoint(ourIP, 5000), [3]))
        #expect(try recv(s, h)?.bytes == [3])
    }

    @Test func specificBindBeatsWildcard() throws {
        let (s, _) = makeStack { $0.addresses.append(IPv4CIDR(address: IPv4Address(10, 0, 1, 1), prefixLength: 24)) }
        let other = IPv4Address(10, 0, 1, 1)
        let specific = try s.udpOpen(local: IPEndpoint(other, 5000))
        #expect(throws: SocketError.addressInUse) { try s.udpOpen(local: IPEndpoint(.any, 5000)) }
        let mine = try s.udpOpen(local: IPEndpoint(ourIP, 5000))
        s.receive(Build.udpFrame(from: IPEndpoint(IPv4Address(10, 0, 1, 7), 1), to: IPEndpoint(other, 5000), [1]))
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 1), to: IPEndpoint(ourIP, 5000), [2]))
        #expect(try recv(s, specific)?.bytes == [1])
        #expect(try recv(s, mine)?.bytes == [2])
    }

    @Test func queueIsBoundedByCountAndBytes() throws {
        let (s, _) = makeStack { $0.udpQueueDatagrams = 4; $0.udpQueueBytes = 1000 }
        let h = try s.udpOpen(local: IPEndpoint(.any, 5000))
        for i in 0..<6 { s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4000), to: IPEndpoint(ourIP, 5000), [UInt8(i)])) }
        #expect(s.counters.droppedUDPQueueFull == 2)
        for i in 0..<4 { #expect(try recv(s, h)?.bytes == [UInt8(i)]) }
        for _ in 0..<3 { s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4000), to: IPEndpoint(ourIP, 5000), pattern(400))) }
        #expect(s.counters.droppedUDPQueueFull == 3)   // 3 x 400 > 1000 bytes
        #expect(try recv(s, h)?.bytes == pattern(400))
        #expect(try recv(s, h)?.bytes == pattern(400))
        #expect(try recv(s, h) == nil)
    }

    @Test func truncatesLikeRecvfrom() throws {
        let (s, _) = makeStack()
        let h = try s.udpOpen(local: IPEndpoint(.any, 5000))
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4000), to: IPEndpoint(ourIP, 5000), pattern(100)))
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4000), to: IPEndpoint(ourIP, 5000), [5]))
        let d = try recv(s, h, max: 10)
        #expect(d?.bytes == Array(pattern(100)[0..<10]) && d?.length == 100)
        #expect(try recv(s, h)?.bytes == [5])   // the rest of the first datagram is gone
    }

    @Test func checksumZeroAcceptedBadChecksumDropped() throws {
        let (s, _) = makeStack()
        let h = try s.udpOpen(local: IPEndpoint(.any, 5000))
        let nock = Build.udp(src: IPEndpoint(peerIP, 4000), dst: IPEndpoint(ourIP, 5000), [1], checksum: false)
        s.receive(Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.udp, nock)))
        #expect(try recv(s, h)?.bytes == [1])
        var bad = Build.udp(src: IPEndpoint(peerIP, 4000), dst: IPEndpoint(ourIP, 5000), [1])
        bad[8] ^= 0x40
        s.receive(Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.udp, bad)))
        #expect(try recv(s, h) == nil)
        #expect(s.counters.droppedChecksum == 1)
    }

    @Test func udpEchoService() throws {
        let (s, rec) = makeStack(services: [.echo])
        s.learnPeer(); _ = rec.take()
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 4000), to: IPEndpoint(ourIP, 7), [1, 2, 3]))
        let out = rec.take().compactMap(parseIP)
        #expect(out.count == 1)
        let ok = out[0].payload.withUnsafeBytes { raw -> Bool in
            guard let u = try? UDPHeaderView(raw) else { return false }
            return u.sourcePort == 7 && u.destinationPort == 4000 && Array(u.payload) == [1, 2, 3]
        }
        #expect(ok)
        #expect(s.collectEvents().isEmpty)
    }
}

@Suite struct SimUDPTests {
    /// Two stacks resolve each other by ARP over a lossy, duplicating, reordering link and
    /// exchange numbered datagrams; every datagram that arrives is intact.
    @Test(arguments: [0.0, 0.1, 0.3])
    func datagramsOverLossyLink(loss: Double) throws {
        let sim = NetSim(seed: 7)
        let faults = LinkFaults(dropRate: loss, duplicateRate: 0.05, reorderRate: 0.1, corruptRate: 0.02)
        let pa = sim.makePort(faults: faults), pb = sim.makePort(faults: faults)
        let a = NetStack(config: StackConfig(mac: ourMAC, mtu: 1500, addresses: [IPv4CIDR(address: ourIP, prefixLength: 24)]),
                         sink: pa, random: XorShiftRandom(seed: 1))
        let b = NetStack(config: StackConfig(mac: peerMAC, mtu: 1500, addresses: [IPv4CIDR(address: peerIP, prefixLength: 24)]),
                         sink: pb, random: XorShiftRandom(seed: 2))
        sim.attach(a, to: pa); sim.attach(b, to: pb)
        a.up(now: sim.now); b.up(now: sim.now)
        let ha = try a.udpOpen(local: IPEndpoint(.any, 1000)), hb = try b.udpOpen(local: IPEndpoint(.any, 2000))
        var got: [Int: [UInt8]] = [:]
        for i in 0..<200 {
            let payload = pattern(100 + i * 17, seed: i)   // up to ~3.5 KB: some are fragmented
            try payload.withUnsafeBytes { try a.udpSend(ha, to: IPEndpoint(peerIP, 2000), $0, now: sim.now) }
            sim.advance(.milliseconds(20))
            var buf = [UInt8](repeating: 0, count: 8000)
            while let r = try buf.withUnsafeMutableBytes({ try b.udpReceive(hb, into: $0) }) {
                let d = Array(buf[0..<r.count])
                let n = (d.count - 100) / 17
                #expect(d == pattern(100 + n * 17, seed: n))
                got[n] = d
            }
        }
        if loss == 0 { #expect(got.count >= 180) } else { #expect(got.count > 0) }
        #expect(a.neighbor(peerIP) == peerMAC)
    }
}

@Suite struct NetSimTests {
    /// Same seed, same faults, same traffic: the same frames in the same order.
    @Test func simulatorIsDeterministic() throws {
        func run() throws -> (Int, Int, Int, [[UInt8]]) {
            let sim = NetSim(seed: 1234)
            sim.recordTrace = true
            let f = LinkFaults(dropRate: 0.2, duplicateRate: 0.1, reorderRate: 0.3, corruptRate: 0.1)
            let pa = sim.makePort(faults: f), pb = sim.makePort(faults: f)
            let a = NetStack(config: StackConfig(mac: ourMAC, mtu: 1500, addresses: [IPv4CIDR(address: ourIP, prefixLength: 24)]),
                             sink: pa, random: XorShiftRandom(seed: 1))
            let b = NetStack(config: StackConfig(mac: peerMAC, mtu: 1500, addresses: [IPv4CIDR(address: peerIP, prefixLength: 24)],
                                                 services: [.echo]), sink: pb, random: XorShiftRandom(seed: 2))
            sim.attach(a, to: pa); sim.attach(b, to: pb)
            let h = try a.udpOpen(local: IPEndpoint(.any, 1000))
            for i in 0..<50 {
                try pattern(10 + i * 61).withUnsafeBytes { try a.udpSend(h, to: IPEndpoint(peerIP, 7), $0, now: sim.now) }
                sim.advance(.milliseconds(30))
            }
            return (sim.dropped, sim.duplicated, sim.corrupted, sim.trace.map(\.bytes))
        }
        let r1 = try run(), r2 = try run()
        #expect(r1.0 == r2.0 && r1.1 == r2.1 && r1.2 == r2.2)
        #expect(r1.0 > 0 && r1.1 > 0 && r1.2 > 0)
        let same = r1.3 == r2.3
        #expect(same)
    }

    @Test func scriptedPeerAnswersARP() throws {
        let sim = NetSim(seed: 5)
        let ps = sim.makePort(), pp = sim.makePort()
        let s = NetStack(config: StackConfig(mac: ourMAC, mtu: 1500, addresses: [IPv4CIDR(address: ourIP, prefixLength: 24)]),
                         sink: ps, random: XorShiftRandom(seed: 1))
        let peer = ScriptedNode(port: pp) { frame, _, port in
            // Answer ARP requests for peerIP; swallow everything else.
            if let a = parseARP(frame), a.op == ARPOperation.request, a.tpa == peerIP {
                port.send(Build.ethernet(dst: a.sha, src: peerMAC, type: EtherType.arp,
                                         Build.arp(op: ARPOperation.reply, sha: peerMAC, spa: peerIP, tha: a.sha, tpa: a.spa)))
            }
        }
        sim.attach(s, to: ps); sim.attach(peer, to: pp)
        let h = try s.udpOpen(local: IPEndpoint(.any, 1000))
        try pattern(100).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 9), $0, now: sim.now) }
        sim.advance(.milliseconds(50))
        let udp = peer.received.compactMap(parseIP)
        #expect(udp.count == 1 && udp[0].ethDst == peerMAC)
        var states: [String] = []
        s.forEachNeighbor { ip, mac, st in states.append("\(ip) \(mac.map(\.description) ?? "-") \(st.rawValue)") }
        #expect(states == ["10.0.0.2 02:00:00:00:00:02 reachable"])
    }
}
