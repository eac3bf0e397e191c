import Testing
@testable import NetStack

/// Regressions found against the Linux kernel through the TAP (see Tests/integration/test_tcp_fixes.py).
@Suite struct TCPInteropFixTests {
    /// A small write on an idle connection goes out at once, whatever half of the sequence space
    /// the ISS falls in. Nagle's "small segment outstanding" marker used to start at 0, which
    /// compares as later than any ISS >= 2^31, so such connections held the data forever.
    @Test func smallWriteIsSentAtOnceForAnyISS() {
        let h = Harness()
        let l = try! h.layer.listen(local: h.local, backlog: 64)
        var upperHalf = 0, lowerHalf = 0
        for port in UInt16(40000)..<40032 {
            h.remote = IPv4Endpoint(IPv4Address(10, 0, 0, 2), port)
            h.peerSeq = 1000
            h.inject(seq: h.peerSeq, ack: 0, flags: .syn, options: Harness.peerOptions())
            let synack = h.sent()
            #expect(synack.count == 1)
            guard let sa = synack.first else { return }
            if sa.seq >= 1 << 31 { upperHalf += 1 } else { lowerHalf += 1 }
            h.peerSeq &+= 1
            h.peerAck = sa.seq &+ 1
            h.inject(flags: .ack)
            guard let c = try! h.layer.accept(l) else { Issue.record("no connection to accept"); return }
            #expect(h.write(c, Array("0123456789".utf8)) == 10)
            h.poll()
            let out = h.sent()
            #expect(out.count == 1 && out.first?.payload == Array("0123456789".utf8),
                    "iss=\(sa.seq): \(out)")
        }
        // The seed and clock are fixed: make sure both halves were really exercised.
        #expect(upperHalf > 0 && lowerHalf > 0)
    }

    /// Nagle still holds a second small write while the first is unacknowledged, and releases
    /// it on the ACK.
    @Test func nagleHoldsSecondSmallSegmentUntilAck() {
        let h = Harness()
        let c = h.passiveEstablished()
        _ = h.write(c, [1, 2, 3])
        h.poll()
        #expect(h.sent().map(\.payload) == [[1, 2, 3]])
        _ = h.write(c, [4, 5])
        h.poll()
        #expect(h.sent().isEmpty)
        h.inject(ack: h.peerAck &+ 3, flags: .ack)
        h.poll()
        #expect(h.sent().map(\.payload) == [[4, 5]])
    }

    /// Ten connections to the echo service, all opened first, then ten bytes on each without
    /// closing: every one gets its echo (the kernel-side symptom was 4-6 of 10).
    @Test func echoAnswersEveryConcurrentConnection() throws {
        let (sim, _, client) = makePair(seed: 21, faults: .perfect)
        var conns: [ClientConn] = []
        for _ in 0..<10 {
            conns.append(try ClientConn(stack: client, port: 7, now: sim.now, send: [], shutAfterSend: false))
        }
        let connected = sim.run(for: .seconds(5)) {
            conns.forEach { $0.step() }
            return conns.allSatisfy { client.tcp.info($0.h)?.state == .established }
        }
        #expect(connected)
        let msg = Array("0123456789".utf8)
        for c in conns { c.toSend = msg }
        let ok = sim.run(for: .seconds(5)) {
            conns.forEach { $0.step() }
            return conns.allSatisfy { $0.received.count >= msg.count }
        }
        #expect(ok)
        #expect(conns.filter { $0.received == msg }.count == 10)
    }
}
