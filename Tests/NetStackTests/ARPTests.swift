import Testing
@testable import NetStack

@Suite struct ARPTests {
    @Test func gratuitousARPOnUp() {
        let (s, rec) = makeStack { $0.addresses.append(IPv4CIDR(address: IPv4Address(192, 168, 5, 1), prefixLength: 24)) }
        s.up(now: t0)
        let arps = rec.take().compactMap(parseARP)
        #expect(arps.count == 2)
        for a in arps {
            #expect(a.ethDst == .broadcast && a.op == ARPOperation.request && a.sha == ourMAC)
            #expect(a.spa == a.tpa)
        }
        #expect(Set(arps.map(\.spa)) == [ourIP, IPv4Address(192, 168, 5, 1)])
    }

    @Test func repliesToRequestForOurAddressAndLearnsSender() {
        let (s, rec) = makeStack()
        s.learnPeer()
        let out = rec.take()
        #expect(out.count == 1)
        let r = parseARP(out[0])
        #expect(r?.op == ARPOperation.reply)
        #expect(r?.ethDst == peerMAC && r?.sha == ourMAC && r?.spa == ourIP && r?.tha == peerMAC && r?.tpa == peerIP)
        #expect(s.neighbor(peerIP) == peerMAC)
        #expect(s.counters.arpRepliesSent == 1)
    }

    @Test func ignoresRequestsForOtherAddressesWithoutLearning() {
        let (s, rec) = makeStack()
        s.receive(Build.ethernet(dst: .broadcast, type: EtherType.arp,
                                 Build.arp(op: ARPOperation.request, sha: peerMAC, spa: peerIP, tha: .zero,
                                           tpa: IPv4Address(10, 0, 0, 77))))
        #expect(rec.frames.isEmpty)
        #expect(s.neighbor(peerIP) == nil)
    }

    @Test func queuesWhileResolvingAndFlushesOnReply() throws {
        let (s, rec) = makeStack()
        let h = try s.udpOpen(local: IPEndpoint(.any, 1000))
        for i in 0..<3 {
            try [UInt8(i)].withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 2000), $0, now: t0) }
        }
        let first = rec.take()
        #expect(first.count == 1)   // one request, datagrams held
        #expect(parseARP(first[0])?.tpa == peerIP && parseARP(first[0])?.ethDst == .broadcast)
        #expect(s.counters.arpQueued == 3)
        s.receive(Build.ethernet(type: EtherType.arp,
                                 Build.arp(op: ARPOperation.reply, sha: peerMAC, spa: peerIP, tha: ourMAC, tpa: ourIP)))
        let flushed = rec.take().compactMap(parseIP)
        #expect(flushed.count == 3)
        #expect(flushed.allSatisfy { $0.ethDst == peerMAC && $0.proto == IPProtocol.udp })
        #expect(flushed.map { $0.payload.last } == [0, 1, 2])
    }

    @Test func givesUpAfterThreeTries() throws {
        let (s, rec) = makeStack()
        let h = try s.udpOpen(local: IPEndpoint(.any, 1000))
        try ([1] as [UInt8]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 2000), $0, now: t0) }
        var now = t0
        var deadline = s.poll(now: now)
        while let d = deadline, d < t0 + .seconds(10) { now = d; deadline = s.poll(now: now) }
        let reqs = rec.take().compactMap(parseARP)
        #expect(reqs.count == 3)
        #expect(s.counters.arpFailures == 1 && s.counters.arpUnresolvedDrops == 1)
        #expect(now == t0 + .seconds(3))
        #expect(s.neighborCount == 0)
    }

    @Test func queueIsBounded() throws {
        let (s, _) = makeStack { $0.arpQueuePerNeighbor = 4 }
        let h = try s.udpOpen(local: IPEndpoint(.any, 1000))
        for _ in 0..<10 { try ([1] as [UInt8]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 2000), $0, now: t0) } }
        #expect(s.counters.arpQueued == 4)
        #expect(s.counters.arpQueueDrops == 6)
    }

    @Test func staleEntryIsReRequestedButStillUsed() throws {
        let (s, rec) = makeStack()
        s.learnPeer()
        _ = rec.take()
        let h = try s.udpOpen(local: IPEndpoint(.any, 1000))
        let later = t0 + .seconds(61)
        try ([1] as [UInt8]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 2000), $0, now: later) }
        let out = rec.take()
        #expect(out.compactMap(parseIP).count == 1)          // sent at once with the old MAC
        let probe = out.compactMap(parseARP)
        #expect(probe.count == 1 && probe[0].ethDst == peerMAC && probe[0].tpa == peerIP)   // unicast re-request
        // No answer: after the retries the entry is dropped.
        var now = later
        while let d = s.poll(now: now), d < later + .seconds(10) { now = d }
        #expect(s.neighbor(peerIP) == nil)
    }

    @Test func cacheIsBounded() {
        let (s, _) = makeStack { $0.arpMaxEntries = 8 }
        for i in 0..<20 { s.learnPeer(IPv4Address(10, 0, 0, UInt8(10 + i)), mac: MACAddress(2, 0, 0, 0, 1, UInt8(i))) }
        #expect(s.neighborCount == 8)
        #expect(s.neighbor(IPv4Address(10, 0, 0, 29)) == MACAddress(2, 0, 0, 0, 1, 19))
    }
}

@Suite struct InterfaceChangeTests {
    @Test func setAddressesAnnouncesNewOnesAndChangesWhatIsLocal() throws {
        let (s, rec) = makeStack()
        let extra = IPv4CIDR(address: IPv4Address(192, 168, 9, 1), prefixLength: 24)
        s.setAddresses([IPv4CIDR(address: ourIP, prefixLength: 24), extra], now: t0)
        let arps = rec.take().compactMap(parseARP)
        #expect(arps.count == 1 && arps[0].spa == extra.address && arps[0].tpa == extra.address)
        // Pings to the new address are answered; the old one once removed is not.
        s.learnPeer(IPv4Address(192, 168, 9, 2), mac: peerMAC)
        _ = rec.take()
        s.receive(Build.ethernet(type: EtherType.ipv4, Build.ipv4(src: IPv4Address(192, 168, 9, 2), dst: extra.address, proto: IPProtocol.icmp,
                                                                  Build.icmp(type: ICMPv4Type.echoRequest, [1]))))
        #expect(rec.take().compactMap(parseIP).first?.src == extra.address)
        s.setAddresses([extra], now: t0)
        s.receive(Build.pingFrame([1]))
        #expect(rec.take().isEmpty)
        #expect(s.counters.droppedNotForUs >= 1)
    }

    @Test func setMTUClampsAndChangesFragmentation() throws {
        let (s, rec) = makeStack(mtu: 9000)
        s.learnPeer(); _ = rec.take()
        s.setMTU(100)
        #expect(s.mtu == 1280)
        let h = try s.udpOpen(local: IPEndpoint(.any, 1))
        try pattern(2000).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 2), $0, now: t0) }
        let frags = rec.take().compactMap(parseIP)
        #expect(frags.count == 2 && frags.allSatisfy { $0.payload.count + 20 <= 1280 })
    }

    @Test func answersARPProbesAndIgnoresLoopedFrames() {
        let (s, rec) = makeStack()
        // RFC 5227 probe: sender IP 0. Answer it, learn nothing.
        s.receive(Build.ethernet(dst: .broadcast, type: EtherType.arp,
                                 Build.arp(op: ARPOperation.request, sha: peerMAC, spa: .any, tha: .zero, tpa: ourIP)))
        let r = rec.take().compactMap(parseARP)
        #expect(r.count == 1 && r[0].op == ARPOperation.reply && r[0].tpa == .any)
        #expect(s.neighborCount == 0)
        // Our own announcement coming back (a bridge loop) is ignored.
        s.receive(Build.ethernet(dst: .broadcast, src: ourMAC, type: EtherType.arp,
                                 Build.arp(op: ARPOperation.request, sha: ourMAC, spa: ourIP, tha: .zero, tpa: ourIP)))
        #expect(rec.frames.isEmpty)
        #expect(s.counters.droppedMartian == 1)
    }

    @Test func tcpConnectPicksSourceAndRejectsUnroutable() throws {
        let (s, rec) = makeStack()
        s.learnPeer(); _ = rec.take()
        #expect(throws: SocketError.networkUnreachable) {
            try s.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(IPv4Address(8, 8, 8, 8), 80), now: t0)
        }
        #expect(throws: SocketError.addressNotAvailable) {
            try s.tcpConnect(local: IPEndpoint(IPv4Address(10, 0, 0, 77), 0), remote: IPEndpoint(peerIP, 80), now: t0)
        }
        guard tcpImplemented else { return }
        let h = try s.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(peerIP, 80), now: t0)
        #expect(s.tcp.localEndpoint(h)?.address == ourIP)
        _ = s.poll(now: t0)
        let syn = rec.take().compactMap(parseIP)
        #expect(syn.count == 1 && syn[0].proto == IPProtocol.tcp && syn[0].df && syn[0].src == ourIP && syn[0].dst == peerIP)
    }
}
