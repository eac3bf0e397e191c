import Testing
@testable import NetStack

/// IPv6 input and output at the frame level: header checks, extension headers (RFC 8200 §4,
/// RFC 5095), fragments (RFC 8200 §4.5, RFC 5722, RFC 6946), ICMPv6 echo and errors (RFC 4443).
struct IPv6Tests {
    // MARK: - Echo

    @Test func answersEcho() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        s.receive(Build6.frame(Build6.echoRequest([1, 2, 3, 4, 5])))
        let out = rec.take6()
        #expect(out.count == 1)
        guard let r = out.first else { return }
        #expect(r.src == ourIP6 && r.dst == peerIP6 && r.ethDst == peerMAC && r.icmpType == ICMPv6Type.echoReply)
        #expect(r.payload.u32(4) == 9 << 16 | 1 && Array(r.payload[8...]) == [1, 2, 3, 4, 5])
        // The reply's checksum verifies.
        #expect(r.payload.withUnsafeBytes { try! ICMPv6View($0).checksumValid(source: r.src, destination: r.dst) })
        #expect(s.counters.icmpEchoReplies == 1)
    }

    @Test func answersEchoToAllNodesFromItsAddressAndIgnoresBadChecksums() {
        let (s, rec) = makeStack6()
        s.learnPeer6(peerLL)
        _ = rec.take()
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: .allNodes), Build6.echoRequest([7], src: peerLL, dst: .allNodes)))
        let out = rec.take6()
        #expect(out.count == 1 && out.first?.src == ourLL && out.first?.dst == peerLL)
        var bad = Build6.echoRequest([7])
        bad[bad.count - 1] ^= 0xFF
        s.receive(Build6.frame(bad))
        #expect(rec.take().isEmpty && s.counters.droppedChecksum == 1)
    }

    @Test func dropsMartiansAndPacketsNotForUs() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        let before = s.counters
        for src in [IPAddress("ff02::1")!, IPAddress("::ffff:10.0.0.9")!, IPAddress("::1")!, ourIP6] {
            s.receive(Build6.frame(Build6.echoRequest([1], src: src)))
        }
        #expect(s.counters.droppedMartian == before.droppedMartian + 4)
        s.receive(Build6.frame(Build6.echoRequest([1], dst: IPAddress("fd00:1::99")!)))
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: IPAddress("ff02::1:ff00:99")!),
                               Build6.echoRequest([1], dst: IPAddress("ff02::1:ff00:99")!)))
        #expect(s.counters.droppedNotForUs == before.droppedNotForUs + 2)
        // Version 4 in an IPv6 frame, a payload length past the frame.
        var v = Build6.echoRequest([1]); v[0] = 0x40
        var l = Build6.echoRequest([1]); l[5] = 200
        s.receive(Build6.frame(v)); s.receive(Build6.frame(l))
        #expect(s.counters.droppedMalformed == before.droppedMalformed + 2)
        #expect(rec.take().isEmpty)
    }

    // MARK: - Extension headers

    /// A Destination Options (or Hop-by-Hop) header carrying one option of `type` (padded to 8).
    func optionsHeader(next: UInt8, type: UInt8) -> [UInt8] { [next, 0, type, 4, 0, 0, 0, 0] }

    func paramProblem(_ sent: [Sent6]) -> (code: UInt8, pointer: UInt32)? {
        guard sent.count == 1, let r = sent.first, r.icmpType == ICMPv6Type.parameterProblem else { return nil }
        return (r.payload[1], r.payload.u32(4))
    }

    @Test func unknownOptionActions() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        let echo = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 1, [1, 2])
        // 00xxxxxx: skipped, the packet is processed.
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.destinationOptions,
                                           optionsHeader(next: IPProtocol.icmpv6, type: 0x1E) + echo)))
        #expect(rec.take6().first?.icmpType == ICMPv6Type.echoReply)
        // 01xxxxxx: dropped silently.
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.destinationOptions,
                                           optionsHeader(next: IPProtocol.icmpv6, type: 0x5E) + echo)))
        #expect(rec.take().isEmpty)
        // 10xxxxxx: parameter problem code 2 pointing at the option (40 + 2), even to multicast.
        let mecho = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 1, [1, 2], dst: .allNodes)
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.destinationOptions,
                                           optionsHeader(next: IPProtocol.icmpv6, type: 0x9E) + echo)))
        #expect(paramProblem(rec.take6()).map { $0.code == 2 && $0.pointer == 42 } == true)
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: .allNodes),
                               Build6.ipv6(dst: .allNodes, next: IPProtocol.destinationOptions,
                                           optionsHeader(next: IPProtocol.icmpv6, type: 0x9E) + mecho)))
        #expect(paramProblem(rec.take6()).map { $0.code == 2 && $0.pointer == 42 } == true)
        // 11xxxxxx: reported to unicast, not to multicast.
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.hopByHop, optionsHeader(next: IPProtocol.icmpv6, type: 0xDE) + echo)))
        #expect(paramProblem(rec.take6()).map { $0.code == 2 && $0.pointer == 42 } == true)
        s.receive(Build6.frame(dst: MACAddress(ipv6Multicast: .allNodes),
                               Build6.ipv6(dst: .allNodes, next: IPProtocol.destinationOptions,
                                           optionsHeader(next: IPProtocol.icmpv6, type: 0xDE) + mecho)))
        #expect(rec.take().isEmpty)
        // Pad1, PadN and Router Alert are known.
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.hopByHop, [IPProtocol.icmpv6, 0, 0, 1, 0, 5, 0, 0] + echo)))
        #expect(rec.take6().first?.icmpType == ICMPv6Type.echoReply)
        // An option running past its header is malformed.
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.destinationOptions, [IPProtocol.icmpv6, 0, 1, 9, 0, 0, 0, 0] + echo)))
        #expect(rec.take().isEmpty)
    }

    @Test func hopByHopOnlyFirstAndUnknownNextHeaders() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        let echo = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 1, [1])
        // Hop-by-Hop after a Destination Options header: parameter problem code 1 at the field
        // that named it (the first byte of the Destination Options header, offset 40).
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.destinationOptions,
                                           [IPProtocol.hopByHop, 0, 1, 4, 0, 0, 0, 0] + [IPProtocol.icmpv6, 0, 1, 4, 0, 0, 0, 0] + echo)))
        #expect(paramProblem(rec.take6()).map { $0.code == 1 && $0.pointer == 40 } == true)
        // An unknown upper layer right after the fixed header: pointer 6.
        s.receive(Build6.frame(Build6.ipv6(next: 253, [0, 0, 0, 0, 0, 0, 0, 0])))
        #expect(paramProblem(rec.take6()).map { $0.code == 1 && $0.pointer == 6 } == true)
        // No next header: nothing.
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.noNextHeader, [])))
        #expect(rec.take().isEmpty)
    }

    @Test func routingHeaders() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        let echo = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 1, [1])
        // Type 0 with segments left (RFC 5095): parameter problem code 0 at the type field.
        let rh0 = [IPProtocol.icmpv6, 2, 0, 1, 0, 0, 0, 0] + IPAddress("fd00:1::77")!.bytes
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.routing, rh0 + echo)))
        #expect(paramProblem(rec.take6()).map { $0.code == 0 && $0.pointer == 42 } == true)
        // Segments left 0 (any type): ignored, the packet is processed.
        let done = [IPProtocol.icmpv6, 2, 0, 0, 0, 0, 0, 0] + IPAddress("fd00:1::77")!.bytes
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.routing, done + echo)))
        #expect(rec.take6().first?.icmpType == ICMPv6Type.echoReply)
        // Other types with segments left: refused too (we forward nothing).
        let srh = [IPProtocol.icmpv6, 2, 4, 1, 0, 0, 0, 0] + IPAddress("fd00:1::77")!.bytes
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.routing, srh + echo)))
        #expect(paramProblem(rec.take6()).map { $0.code == 0 && $0.pointer == 42 } == true)
    }

    // MARK: - Fragments

    @Test func reassemblesAndFragmentsA4000BytePing() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        let data = (0..<4000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let upper = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 5 << 16 | 2, data)
        let frags = Build6.fragments(next: IPProtocol.icmpv6, upper, size: 1448)
        #expect(frags.count == 3)
        for f in frags.reversed() { s.receive(Build6.frame(f)) }
        #expect(s.counters.reassembled == 1)
        let out = rec.take6()
        #expect(out.count == 3 && out.allSatisfy { $0.next == IPProtocol.fragment && $0.payload.count + 40 <= 1500 })
        // Put the reply back together: offsets, one identification, M on all but the last.
        var whole = [UInt8](repeating: 0, count: 8 + 4000)
        var ids = Set<UInt32>()
        for (i, f) in out.enumerated() {
            let off = Int(f.payload.u16(2) & 0xFFF8), more = f.payload.u16(2) & 1 == 1
            #expect(f.payload[0] == IPProtocol.icmpv6 && more == (i < 2))
            ids.insert(f.payload.u32(4))
            whole.replaceSubrange(off..<off + f.payload.count - 8, with: f.payload[8...])
        }
        #expect(ids.count == 1 && whole[0] == ICMPv6Type.echoReply && Array(whole[8...]) == data)
        #expect(whole.withUnsafeBytes { try! ICMPv6View($0).checksumValid(source: ourIP6, destination: peerIP6) })
    }

    @Test func overlappingFragmentsDropTheDatagram() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        let upper = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 1, [UInt8](repeating: 9, count: 2000))
        let a = Build6.fragment(next: IPProtocol.icmpv6, Array(upper[0..<1024]), offset: 0, more: true)
        let b = Build6.fragment(next: IPProtocol.icmpv6, Array(upper[1016..<2008]), offset: 1016, more: false)
        s.receive(Build6.frame(a)); s.receive(Build6.frame(b))
        #expect(s.counters.reassemblyOverlaps == 1 && s.counters.reassembled == 0 && rec.take().isEmpty)
        // An exact duplicate is harmless.
        let c = Build6.fragment(next: IPProtocol.icmpv6, Array(upper[1024...]), offset: 1024, more: false, id: 7)
        let a2 = Build6.fragment(next: IPProtocol.icmpv6, Array(upper[0..<1024]), offset: 0, more: true, id: 7)
        s.receive(Build6.frame(a2)); s.receive(Build6.frame(a2)); s.receive(Build6.frame(c))
        let reply = rec.take6()   // 2008 bytes of reply: two fragments, the first starting with the header
        #expect(s.counters.reassembled == 1 && reply.count == 2 && reply.first?.payload[8] == ICMPv6Type.echoReply)
    }

    @Test func fragmentRules() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        let echo = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 1, [1, 2, 3])
        // Atomic fragment (offset 0, M clear, RFC 6946): processed on its own.
        s.receive(Build6.frame(Build6.fragment(next: IPProtocol.icmpv6, echo, offset: 0, more: false)))
        #expect(rec.take6().first?.icmpType == ICMPv6Type.echoReply)
        // M set and a length not a multiple of 8: parameter problem code 0 at the payload length.
        s.receive(Build6.frame(Build6.fragment(next: IPProtocol.icmpv6, [UInt8](repeating: 0, count: 13), offset: 0, more: true)))
        #expect(paramProblem(rec.take6()).map { $0.code == 0 && $0.pointer == 4 } == true)
        // Past 65535: parameter problem code 0 at the fragment offset field (40 + 2).
        s.receive(Build6.frame(Build6.fragment(next: IPProtocol.icmpv6, [UInt8](repeating: 0, count: 16), offset: 65528, more: true)))
        #expect(paramProblem(rec.take6()).map { $0.code == 0 && $0.pointer == 42 } == true)
    }

    @Test func reassemblyTimesOutWithTimeExceeded() {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        _ = rec.take()
        let upper = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 1, [UInt8](repeating: 1, count: 2000))
        s.receive(Build6.frame(Build6.fragment(next: IPProtocol.icmpv6, Array(upper[0..<1024]), offset: 0, more: true)))
        #expect(s.poll(now: t0 + .seconds(59)) != nil && rec.take().isEmpty)
        _ = s.poll(now: t0 + .seconds(61))
        let out = rec.take6()
        #expect(out.count == 1 && out.first?.icmpType == ICMPv6Type.timeExceeded && out.first?.payload[1] == 1)
        #expect(s.counters.reassemblyTimeouts == 1)
    }

    // MARK: - UDP and errors

    @Test func udpPortUnreachableAndMandatoryChecksum() throws {
        let (s, rec) = makeStack6(services: [.echo])
        s.learnPeer6()
        _ = rec.take()
        let from = IPEndpoint(peerIP6, 5555)
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.udp, Build6.udp(src: from, dst: IPEndpoint(ourIP6, 9999), [1, 2]))))
        let out = rec.take6()
        #expect(out.count == 1 && out.first?.icmpType == ICMPv6Type.destinationUnreachable && out.first?.payload[1] == 4)
        // A zero checksum is not allowed over IPv6 (RFC 8200 §8.1).
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.udp,
                                           Build6.udp(src: from, dst: IPEndpoint(ourIP6, 7), [1, 2], zeroChecksum: true))))
        #expect(rec.take().isEmpty && s.counters.droppedChecksum == 1)
        // The echo service answers over IPv6.
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.udp, Build6.udp(src: from, dst: IPEndpoint(ourIP6, 7), [4, 5, 6]))))
        let e = rec.take6()
        #expect(e.count == 1 && e.first?.next == IPProtocol.udp && Array(e.first!.payload[8...]) == [4, 5, 6])
        #expect(e.first!.payload.withUnsafeBytes { try! UDPHeaderView($0).checksumValid(source: ourIP6, destination: peerIP6) })
    }

    @Test func udpSocketsBothFamiliesOnADualStackWildcard() throws {
        let (s, rec) = makeStack6()
        s.learnPeer6(); s.learnPeer()
        _ = rec.take()
        let h = try s.udpOpen(local: IPEndpoint(.v6Any, 4000))
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.udp, Build6.udp(src: IPEndpoint(peerIP6, 1), dst: IPEndpoint(ourIP6, 4000), [1]))))
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 2), to: IPEndpoint(ourIP, 4000), [2]))
        var buf = [UInt8](repeating: 0, count: 16)
        let a = try buf.withUnsafeMutableBytes { try s.udpReceive(h, into: $0) }
        let b = try buf.withUnsafeMutableBytes { try s.udpReceive(h, into: $0) }
        #expect(a?.from == IPEndpoint(peerIP6, 1) && b?.from == IPEndpoint(peerIP, 2))
        // Replies go out over each one's family.
        try [UInt8]([9]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP6, 1), $0, now: t0) }
        try [UInt8]([9]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 2), $0, now: t0) }
        let out = rec.take()
        #expect(out.count == 2 && parseIP6(out[0])?.src == ourIP6 && parseIP(out[1])?.src == ourIP)
        // A v6-only wildcard takes no IPv4; a 0.0.0.0 socket cannot send to IPv6.
        let only = try s.udpOpen(local: IPEndpoint(.v6Any, 4001), options: .init(v6Only: true))
        s.receive(Build.udpFrame(from: IPEndpoint(peerIP, 2), to: IPEndpoint(ourIP, 4001), [2]))
        #expect(try buf.withUnsafeMutableBytes { try s.udpReceive(only, into: $0) } == nil)
        let v4 = try s.udpOpen(local: IPEndpoint(IPAddress.v4Any, 4002))
        #expect(throws: SocketError.addressNotAvailable) {
            try [UInt8]([9]).withUnsafeBytes { try s.udpSend(v4, to: IPEndpoint(peerIP6, 1), $0, now: t0) }
        }
        // A large datagram is fragmented to the MTU.
        let big = [UInt8](repeating: 3, count: 5000)
        try big.withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP6, 1), $0, now: t0) }
        let frags = rec.take6()
        #expect(frags.count == 4 && frags.allSatisfy { $0.next == IPProtocol.fragment && $0.payload.count + 40 <= 1500 })
    }

    @Test func connectedUDPLearnsPortUnreachable() throws {
        let (s, rec) = makeStack6()
        s.learnPeer6()
        let h = try s.udpOpen(local: IPEndpoint(ourIP6, 4000))
        try s.udpConnect(h, remote: IPEndpoint(peerIP6, 53))
        try [UInt8]([1, 2, 3, 4]).withUnsafeBytes { try s.udpSend(h, to: nil, $0, now: t0) }
        guard let sent = rec.take6().last else { Issue.record("nothing sent"); return }
        let quote = Build6.ipv6(src: ourIP6, dst: peerIP6, next: IPProtocol.udp, sent.payload)
        s.receive(Build6.frame(Build6.ipv6(next: IPProtocol.icmpv6,
                                           Build6.icmp(type: ICMPv6Type.destinationUnreachable, code: 4, quote))))
        #expect(s.udpTakeError(h) == .connectionRefused)
    }

    @Test func icmpErrorsAreRateLimitedAndNeverAboutMulticastOrErrors() {
        let (s, rec) = makeStack6(configure: { $0.icmpErrorBurst = 3; $0.icmpErrorsPerSecond = 1 })
        s.learnPeer6()
        _ = rec.take()
        for _ in 0..<10 { s.receive(Build6.frame(Build6.ipv6(next: 253, [0, 0, 0, 0, 0, 0, 0, 0]))) }
        #expect(rec.take6().count == 3 && s.counters.icmpErrorsRateLimited == 7)
        let (t, r2) = makeStack6()
        t.learnPeer6()
        _ = r2.take()
        // To a multicast group: no port unreachable.
        t.receive(Build6.frame(dst: MACAddress(ipv6Multicast: .allNodes),
                               Build6.ipv6(dst: .allNodes, next: IPProtocol.udp,
                                           Build6.udp(src: IPEndpoint(peerIP6, 1), dst: IPEndpoint(.allNodes, 9), [1]))))
        // About an ICMPv6 error: nothing (an unknown next header after an error would be one).
        t.receive(Build6.frame(Build6.ipv6(next: IPProtocol.icmpv6,
                                           Build6.icmp(type: ICMPv6Type.destinationUnreachable, [0, 0, 0, 0]))))
        #expect(r2.take().isEmpty)
    }
}

/// IPv6 garbage and mutated IPv6 frames never trap (the twin of RobustnessTests; the fuzz
/// corpus has IPv6 seeds too).
@Suite struct IPv6RobustnessTests {
    func seeds() -> [[UInt8]] {
        let echo = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 1, pattern(64))
        var syn = [UInt8](repeating: 0, count: 24)
        syn[0] = 0x30; syn[1] = 0x39; syn[3] = 7; syn[12] = 0x60; syn[13] = 0x02; syn[14] = 0xFF; syn[15] = 0xFF
        syn[20] = 2; syn[21] = 4; syn[22] = 0x05; syn[23] = 0xA0
        Build6.checksum(&syn, at: 16, src: peerIP6, dst: ourIP6, proto: IPProtocol.tcp)
        let upper = Build6.icmp(type: ICMPv6Type.echoRequest, rest: 2, pattern(300))
        return [
            Build6.frame(Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourIP6, mac: peerMAC, src: peerIP6,
                                   dst: ourIP6.solicitedNode)),
            Build6.frame(Build6.nd(type: ICMPv6Type.neighborAdvertisement, flags: NDPFlag.override | NDPFlag.solicited,
                                   target: peerIP6, mac: peerMAC, src: peerIP6, dst: ourIP6)),
            Build6.frame(Build6.echoRequest(pattern(40))),
            Build6.frame(Build6.ipv6(next: IPProtocol.udp, Build6.udp(src: IPEndpoint(peerIP6, 1), dst: IPEndpoint(ourIP6, 7), pattern(50)))),
            Build6.frame(Build6.ipv6(next: IPProtocol.tcp, syn)),
            Build6.frame(Build6.ipv6(next: IPProtocol.hopByHop, [IPProtocol.destinationOptions, 0, 5, 2, 0, 0, 1, 0]
                                     + [IPProtocol.icmpv6, 0, 0xC2, 4, 0, 0, 0, 0] + echo)),
            Build6.frame(Build6.ipv6(next: IPProtocol.routing, [IPProtocol.icmpv6, 2, 0, 1, 0, 0, 0, 0] + peerIP6.bytes + echo)),
        ] + Build6.fragments(next: IPProtocol.icmpv6, upper, size: 160).map { Build6.frame($0) }
    }

    @Test func randomIPv6BytesNeverTrap() {
        let (s, _) = makeStack6(services: [.echo, .discard, .chargen])
        _ = try? s.udpOpen(local: IPEndpoint(.v6Any, 5000))
        var rng = XorShiftRandom(seed: 77)
        var now = t0
        for i in 0..<20_000 {
            var f = (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if f.count >= 60 {
                f.replaceSubrange(0..<6, with: i % 3 == 0 ? [0x33, 0x33, 0, 0, 0, 1] : [0x02, 0, 0, 0, 0, 0x01])
                f[12] = 0x86; f[13] = 0xDD; f[14] = 0x60 | f[14] & 0x0F
                if i % 2 == 0 { f.replaceSubrange(38..<54, with: ourIP6.bytes) }   // to us
                let plen = f.count - 54
                f[18] = UInt8(plen >> 8); f[19] = UInt8(plen & 0xFF)
            }
            s.receive(f, now: now)
            if i % 100 == 0 { now = now + .milliseconds(50); _ = s.poll(now: now) }
        }
        #expect(s.counters.framesIn == 20_000 && s.counters.ipv6PacketsIn > 5_000)
    }

    @Test func mutatedIPv6FramesNeverTrap() {
        let (s, _) = makeStack6(services: [.echo, .discard, .chargen])
        _ = try? s.udpOpen(local: IPEndpoint(.v6Any, 5000))
        var rng = XorShiftRandom(seed: 6)
        var now = t0
        let seeds = seeds()
        for i in 0..<30_000 {
            var f = seeds[i % seeds.count]
            for _ in 0..<1 + Int(rng.next() % 4) {
                let at = 14 + Int(rng.next() % UInt64(f.count - 14))
                switch rng.next() % 4 {
                case 0: f[at] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
                case 1: f[at] = 0xFF
                case 2: f[at] = 0
                default: f.removeLast(Int(rng.next() % UInt64((f.count - 14) / 2 + 1)))
                }
                if f.count <= 14 { break }
            }
            s.receive(f, now: now)
            if i % 50 == 0 { now = now + .milliseconds(200); _ = s.poll(now: now) }
        }
        #expect(s.counters.framesIn == 30_000 && s.counters.ipv6PacketsIn > 10_000)
    }
}
