import Testing
@testable import NetStack

/// Neighbor Discovery (RFC 4861), duplicate address detection (RFC 4862) and MLD reports
/// (RFC 3810) at the frame level.
struct NDPTests {
    func nd(_ f: Sent6) -> (type: UInt8, flags: UInt32, target: IPAddress, lla: [UInt8])? {
        guard f.next == IPProtocol.icmpv6, f.payload.count >= 24 else { return nil }
        return (f.payload[0], f.payload.u32(4), IPAddress(bytes: f.payload[8..<24]), Array(f.payload[24...]))
    }

    @Test func answersSolicitationsAndLearnsTheAskerAsStale() {
        let (s, rec) = makeStack6()
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: ourIP6.solicitedNode),
                               Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourIP6, mac: peerMAC, src: peerIP6,
                                         dst: ourIP6.solicitedNode)))
        let out = rec.take6()
        #expect(out.count == 1)
        guard let f = out.first, let m = nd(f) else { return }
        #expect(f.src == ourIP6 && f.dst == peerIP6 && f.ethDst == peerMAC && f.hopLimit == 255)
        #expect(m.type == ICMPv6Type.neighborAdvertisement && m.target == ourIP6)
        #expect(m.flags == NDPFlag.solicited | NDPFlag.override)
        #expect(m.lla == [NDPOption.targetLinkLayerAddress, 1, 2, 0, 0, 0, 0, 1])
        #expect(f.payload.withUnsafeBytes { try! ICMPv6View($0).checksumValid(source: f.src, destination: f.dst) })
        var states: [NetStack.NeighborState] = []
        s.forEachNeighbor6 { ip, mac, st in if ip == peerIP6 && mac == peerMAC { states.append(st) } }
        #expect(states == [.stale] && s.counters.ndAdvertisementsSent == 1)
    }

    @Test func refusesMalformedSolicitations() {
        let (s, rec) = makeStack6()
        let bad: [[UInt8]] = [
            // Forwarded (hop limit not 255).
            Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourIP6, mac: peerMAC, src: peerIP6, dst: ourIP6.solicitedNode, hopLimit: 254),
            // DAD probe (from ::) with a source link-layer address, or to a unicast address.
            Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourIP6, mac: peerMAC, src: .v6Any, dst: ourIP6.solicitedNode),
            Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourIP6, mac: nil, src: .v6Any, dst: ourIP6),
            // A multicast target.
            Build6.nd(type: ICMPv6Type.neighborSolicitation, target: .allNodes, mac: peerMAC, src: peerIP6, dst: ourIP6.solicitedNode),
        ]
        for b in bad { s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: ourIP6.solicitedNode), b)) }
        // An option of length 0.
        var zero = Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourIP6, mac: peerMAC, src: peerIP6, dst: ourIP6)
        zero[40 + 25] = 0
        Build6.fixICMPChecksum(&zero)
        s.receive(Build6.frame(zero))
        #expect(rec.take().isEmpty && s.neighbor6(peerIP6) == nil)
    }

    @Test func resolvesQueuesAndFlushes() throws {
        let (s, rec) = makeStack6()
        let h = try s.udpOpen(local: IPEndpoint(ourIP6, 4000))
        try [UInt8]([1]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP6, 9), $0, now: t0) }
        try [UInt8]([2]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP6, 9), $0, now: t0) }
        let out = rec.take6()
        #expect(out.count == 1)
        guard let ns = out.first, let m = nd(ns) else { return }
        #expect(ns.dst == peerIP6.solicitedNode && ns.ethDst == MACAddress(ipv6Multicast: peerIP6.solicitedNode))
        #expect(ns.src == ourIP6 && ns.hopLimit == 255 && m.type == ICMPv6Type.neighborSolicitation && m.target == peerIP6)
        #expect(m.lla == [NDPOption.sourceLinkLayerAddress, 1, 2, 0, 0, 0, 0, 1])
        #expect(s.counters.ndQueued == 2)
        // The solicited advertisement flushes both datagrams, in order, to the MAC it gives.
        s.receive(Build6.frame(Build6.nd(type: ICMPv6Type.neighborAdvertisement, flags: NDPFlag.solicited | NDPFlag.override,
                                         target: peerIP6, mac: peerMAC, src: peerIP6, dst: ourIP6)))
        let flushed = rec.take6()
        #expect(flushed.count == 2 && flushed.allSatisfy { $0.ethDst == peerMAC && $0.next == IPProtocol.udp })
        #expect(flushed.map { $0.payload[8] } == [1, 2] && s.neighbor6(peerIP6) == peerMAC)
    }

    @Test func advertisementRules() throws {
        let (s, rec) = makeStack6()
        let other = MACAddress(2, 0, 0, 0, 0, 0x33)
        // An unsolicited advertisement creates nothing.
        s.receive(Build6.frame(Build6.nd(type: ICMPv6Type.neighborAdvertisement, flags: NDPFlag.override, target: peerIP6,
                                         mac: peerMAC, src: peerIP6, dst: .allNodes)))
        #expect(s.neighbor6(peerIP6) == nil)
        // Resolve it, then: without O a different address is not taken (reachable -> stale)...
        let h = try s.udpOpen(local: IPEndpoint(ourIP6, 4000))
        try [UInt8]([1]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP6, 9), $0, now: t0) }
        s.receive(Build6.frame(Build6.nd(type: ICMPv6Type.neighborAdvertisement, flags: NDPFlag.solicited, target: peerIP6,
                                         mac: peerMAC, src: peerIP6, dst: ourIP6)))
        s.receive(Build6.frame(Build6.nd(type: ICMPv6Type.neighborAdvertisement, flags: 0, target: peerIP6,
                                         mac: other, src: peerIP6, dst: .allNodes)))
        #expect(s.neighbor6(peerIP6) == peerMAC)
        // ...with O it is.
        s.receive(Build6.frame(Build6.nd(type: ICMPv6Type.neighborAdvertisement, flags: NDPFlag.override, target: peerIP6,
                                         mac: other, src: peerIP6, dst: .allNodes)))
        #expect(s.neighbor6(peerIP6) == other)
        // "Solicited" to a multicast address is invalid.
        s.receive(Build6.frame(Build6.nd(type: ICMPv6Type.neighborAdvertisement, flags: NDPFlag.solicited | NDPFlag.override,
                                         target: peerIP6, mac: peerMAC, src: peerIP6, dst: .allNodes)))
        #expect(s.neighbor6(peerIP6) == other)
        _ = rec.take()
    }

    @Test func failedResolutionFailsAConnectWithHostUnreachable() throws {
        let (s, rec) = makeStack6()
        let h = try s.tcpConnect(local: IPEndpoint(.v6Any, 0), remote: IPEndpoint(peerIP6, 80), now: t0)
        var failed: SocketError?
        var now = t0
        for _ in 0..<10 {
            now = now + .seconds(1)
            _ = s.poll(now: now)
            s.drainEvents { if case let .failed(x, e) = $0, x == h { failed = e } }
        }
        let ns = rec.take6().filter { $0.icmpType == ICMPv6Type.neighborSolicitation }
        #expect(ns.count == 3 && s.counters.ndFailures == 1 && failed == .hostUnreachable)
    }

    @Test func staleEntriesAreProbedAfterTheDelay() throws {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        let h = try s.udpOpen(local: IPEndpoint(ourIP6, 4000))
        _ = rec.take()
        try [UInt8]([1]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP6, 9), $0, now: t0) }
        #expect(rec.take6().map(\.next) == [IPProtocol.udp])       // used at once, no probe yet
        _ = s.poll(now: t0 + .seconds(6))
        let probe = rec.take6()
        #expect(probe.count == 1 && probe.first?.icmpType == ICMPv6Type.neighborSolicitation)
        #expect(probe.first?.dst == peerIP6 && probe.first?.ethDst == peerMAC)   // unicast probe
    }

    // MARK: - DAD

    @Test func duplicateAddressDetection() {
        let (s, rec) = makeStack6(dad: 1)
        #expect(s.addresses6.map(\.state) == [.tentative, .tentative])
        s.up(now: t0)
        _ = s.poll(now: t0)
        let out = rec.take6()
        let probes = out.filter { $0.icmpType == ICMPv6Type.neighborSolicitation }
        #expect(probes.count == 2 && probes.allSatisfy { $0.src == .v6Any && $0.hopLimit == 255 && $0.payload.count == 24 })
        #expect(Set(probes.map { nd($0)!.target }) == [ourLL, ourIP6])
        #expect(Set(probes.map(\.dst)) == [ourLL.solicitedNode, ourIP6.solicitedNode])
        // The MLD report of the solicited-node group (one: fe80::ff:fe00:1 and fd00:1::1 share
        // their last 24 bits): Hop-by-Hop with Router Alert, hop limit 1, from ::.
        let mld = out.filter { $0.next == IPProtocol.hopByHop }
        #expect(mld.count == 1 && mld.first?.dst == MLDv2.allRouters && mld.first?.hopLimit == 1)
        if let m = mld.first {
            #expect(Array(m.payload[0..<6]) == [IPProtocol.icmpv6, 0, 5, 2, 0, 0] && m.payload[8] == ICMPv6Type.mldv2Report)
            #expect(m.payload.u16(8 + 6) == 1 && m.src == .v6Any)
            #expect(IPAddress(bytes: m.payload[8 + 8 + 4..<8 + 8 + 20]) == ourIP6.solicitedNode)
        }
        // Tentative: not usable, echo not answered.
        s.receive(Build6.frame(Build6.echoRequest([1])), now: t0 + .milliseconds(500))
        #expect(rec.take6().filter { $0.icmpType == ICMPv6Type.echoReply }.isEmpty)
        _ = s.poll(now: t0 + .seconds(1))
        #expect(s.addresses6.map(\.state) == [.preferred, .preferred])
        s.learnPeer6(now: t0 + .seconds(1))
        s.receive(Build6.frame(Build6.echoRequest([1])), now: t0 + .seconds(1))
        #expect(rec.take6().contains { $0.icmpType == ICMPv6Type.echoReply })
    }

    @Test func conflictsMakeAnAddressDuplicate() {
        let (s, rec) = makeStack6(dad: 1)
        s.up(now: t0)
        _ = s.poll(now: t0)
        // Someone answers for our tentative global address...
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: .allNodes),
                               Build6.nd(type: ICMPv6Type.neighborAdvertisement, flags: NDPFlag.override, target: ourIP6,
                                         mac: peerMAC, src: ourIP6, dst: .allNodes)), now: t0 + .milliseconds(10))
        // ...and someone else probes our link-local one at the same time.
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: ourLL.solicitedNode),
                               Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourLL, mac: nil, src: .v6Any,
                                         dst: ourLL.solicitedNode)), now: t0 + .milliseconds(20))
        _ = s.poll(now: t0 + .seconds(2))
        #expect(s.addresses6.map(\.state) == [.duplicate, .duplicate] && s.counters.dadConflicts >= 2)
        // A duplicate address is never a source.
        #expect(throws: SocketError.networkUnreachable) {
            _ = try s.tcpConnect(local: IPEndpoint(.v6Any, 0), remote: IPEndpoint(peerIP6, 80), now: t0 + .seconds(2))
        }
        _ = rec.take()
    }

    @Test func answersDADProbesForItsPreferredAddresses() {
        let (s, rec) = makeStack6()
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: ourIP6.solicitedNode),
                               Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourIP6, mac: nil, src: .v6Any,
                                         dst: ourIP6.solicitedNode)))
        let out = rec.take6()
        #expect(out.count == 1 && out.first?.dst == .allNodes && out.first.flatMap(nd)?.flags == NDPFlag.override)
    }

    @Test func answersMLDQueries() {
        let (s, rec) = makeStack6()
        s.up(now: t0)
        _ = s.poll(now: t0)
        _ = s.poll(now: t0 + .seconds(1))
        _ = rec.take()
        // A general MLDv2 query (28 bytes), maximum response delay 1000 ms.
        var q = [UInt8](repeating: 0, count: 20)
        q[16] = 2; q[17] = 125
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: .allNodes),
                               Build6.ipv6(src: IPAddress("fe80::9")!, dst: .allNodes, next: IPProtocol.icmpv6, hopLimit: 1,
                                           Build6.icmp(type: ICMPv6Type.mldQuery, rest: 1000 << 16, q,
                                                       src: IPAddress("fe80::9")!, dst: .allNodes))), now: t0 + .seconds(5))
        let next = s.poll(now: t0 + .seconds(5))
        #expect(next != nil && next! <= t0 + .seconds(6))
        _ = s.poll(now: t0 + .seconds(6))
        let r = rec.take6().filter { $0.next == IPProtocol.hopByHop }
        #expect(r.count == 1 && r.first?.src == ourLL && r.first?.payload[8 + 8] == MLDv2.modeIsExclude)
    }
}

extension Build6 {
    /// Recomputes the ICMPv6 checksum of a packet built by `ipv6` (after editing its body).
    static func fixICMPChecksum(_ packet: inout [UInt8]) {
        let src = IPAddress(bytes: packet[8..<24]), dst = IPAddress(bytes: packet[24..<40])
        var body = Array(packet[40...])
        checksum(&body, at: 2, src: src, dst: dst, proto: IPProtocol.icmpv6)
        packet.replaceSubrange(40..., with: body)
    }
}
