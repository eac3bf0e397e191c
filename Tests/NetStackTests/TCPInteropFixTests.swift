import Testing
@testable import NetStack

/// Regressions found against the Linux kernel through the TAP (see Tests/integration/test_tcp_fixes.py).
@Suite struct TCPInteropFixTests {
    /// A small write on an idle connection goes out at once, whatever half of the sequence space
    /// the ISS falls in. Nagle's "small segment outstanding" marker used to start at 0, which
    /// compares as later than any ISS >= 2^31, so such connections held the data forever.
    @Test func smallWriteIsSentAtOnceForAnyISS() {
        let h = Harness()
        let l = try! h.layer.listen(local: h.local, backlog: 64, now: h.now)
        var upperHalf = 0, lowerHalf = 0
        for port in UInt16(40000)..<40032 {
            h.remote = IPEndpoint(IPv4Address(10, 0, 0, 2), port)
            h.peerSeq = 1000
            h.inject(seq: h.peerSeq, ack: 0, flags: .syn, options: Harness.peerOptions())
            let synack = h.sent()
            #expect(synack.count == 1)
            guard let sa = synack.first else { return }
            if sa.seq >= 1 << 31 { upperHalf += 1 } else { lowerHalf += 1 }
            h.peerSeq &+= 1
            h.peerAck = sa.seq &+ 1
            h.inject(flags: .ack)
            guard let c = try! h.layer.accept(l, now: h.now) else { Issue.record("no connection to accept"); return }
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
            conns.forEach { $0.step(now: sim.now) }
            return conns.allSatisfy { client.tcp.info($0.h)?.state == .established }
        }
        #expect(connected)
        let msg = Array("0123456789".utf8)
        for c in conns { c.toSend = msg }
        let ok = sim.run(for: .seconds(5)) {
            conns.forEach { $0.step(now: sim.now) }
            return conns.allSatisfy { $0.received.count >= msg.count }
        }
        #expect(ok)
        #expect(conns.filter { $0.received == msg }.count == 10)
    }
}

/// Loss recovery against a short-RTT path (the TAP): RACK-TLP instead of 200 ms timeouts.
@Suite struct TCPLossRecoveryTests {
    /// A harness connection with SACK whose SRTT is 5 ms (one 40 ms exchange after the
    /// handshake's zero sample), so loss-probe timing is predictable.
    static func sackConnection(_ h: Harness) -> SocketHandle {
        let c = h.passiveEstablished(options: Harness.peerOptions(sack: true))
        _ = h.write(c, bytes(100))
        h.poll()
        _ = h.sent()
        h.advance(ms: 40)
        h.peerAck &+= 100
        h.inject(flags: .ack)
        return c
    }

    /// The last segment of a flight is lost: a tail loss probe resends it after about two
    /// RTTs, not after the 200 ms minimum RTO.
    @Test func tailLossIsProbedBeforeTheRTO() {
        let h = Harness()
        let c = Self.sackConnection(h)
        _ = h.write(c, bytes(10 * 1460))
        h.poll()
        let out = h.sent()
        #expect(out.count == 10)
        h.advance(ms: 2)
        h.peerAck &+= 9 * 1460   // segment 9 is lost
        h.inject(flags: .ack)
        #expect(h.sent().isEmpty)
        let t0 = h.now
        var resent: [(UInt64, UInt32)] = []
        while h.now < t0 + .milliseconds(300) && resent.isEmpty {
            guard let d = h.poll() else { break }
            h.now = max(d, h.now)
            h.poll()
            resent += h.sent().filter { !$0.payload.isEmpty }.map { ((h.now - t0).milliseconds, $0.seq) }
        }
        #expect(resent.count == 1)
        #expect(resent.first?.1 == out[9].seq)
        #expect((resent.first?.0 ?? 999) < 30, "probe at \(resent) ms")
    }

    /// A retransmission that is itself lost is found by RACK as soon as a segment sent after it
    /// is SACKed, and sent again without waiting for the RTO. Leaving recovery keeps cwnd at
    /// ssthresh rather than collapsing it to the (small) flight size.
    @Test func lostRetransmissionIsDetectedWithoutRTO() {
        let h = Harness()
        let c = Self.sackConnection(h)
        let mss: UInt32 = 1460
        _ = h.write(c, bytes(10 * 1460))
        h.poll()
        #expect(h.sent().count == 10)
        let una = h.peerAck
        func sackAck(_ blocks: [(UInt32, UInt32)], ack: UInt32? = nil) {
            var o = TCPSegmentOptions()
            for b in blocks { o.sackBlocks.append(start: SeqNumber(una &+ b.0 * mss), end: SeqNumber(una &+ b.1 * mss)) }
            h.inject(ack: ack ?? una, flags: .ack, options: o)
        }
        h.advance(ms: 2)
        sackAck([(1, 10)])   // segment 0 lost: nine SACKed above it, resent at once
        #expect(h.sent().filter { !$0.payload.isEmpty }.map { ($0.seq &- una) / mss } == [0])
        h.advance(ms: 1)
        _ = h.write(c, bytes(1460))   // segment 10, sent after the retransmission
        h.poll()
        #expect(h.sent().map { ($0.seq &- una) / mss } == [10])
        h.advance(ms: 2)
        sackAck([(1, 11)])   // segment 10 arrived, the resent segment 0 did not: lost again
        #expect(h.sent().filter { !$0.payload.isEmpty }.map { ($0.seq &- una) / mss } == [0])
        #expect(h.layer.info(c)?.retransmissions == 2)
        h.advance(ms: 2)
        sackAck([], ack: una &+ 11 * mss)
        let info = h.layer.info(c)!
        #expect(info.sendQueue == 0)
        #expect(info.cwnd == info.ssthresh && info.cwnd >= 2 * 1460)
    }

    /// A peer that filled our receive window exactly sends its pure ACKs with SEG.SEQ at the
    /// right window edge. Linux accepts those; rejecting them (RFC 9293's strict test) lost every
    /// ACK and SACK for our data until our window opened again.
    @Test func ackAtTheRightWindowEdgeIsProcessed() {
        let h = Harness { $0.receiveBufferSize = 4000; $0.quickAckSegments = 100 }
        let c = h.passiveEstablished()
        _ = h.write(c, bytes(100))
        h.poll()
        #expect(h.sent().count == 1)
        // The peer sent 4000 bytes (our whole window) that are still on their way; its ACK of
        // our 100 bytes carries SEG.SEQ = RCV.NXT + RCV.WND.
        h.inject(seq: h.peerSeq &+ 4000, ack: h.peerAck &+ 100, flags: .ack)
        #expect(h.layer.info(c)?.sendQueue == 0)
        #expect(h.sent().isEmpty)   // acceptable: no duplicate ACK in answer
        // One byte further is outside the window: answered with an ACK, not processed.
        _ = h.write(c, bytes(50))
        h.poll()
        _ = h.sent()
        h.inject(seq: h.peerSeq &+ 4001, ack: h.peerAck &+ 150, flags: .ack)
        #expect(h.layer.info(c)?.sendQueue == 50)
        #expect(h.sent().count == 1)
    }

    /// Both windows closed (each side's app stopped reading while writing): our zero-window
    /// probe's byte is not taken, so SND.MAX lies one past the peer's window. The window update
    /// we send when our app reads must carry a SEG.SEQ inside the peer's window (SND.UNA, as
    /// Linux's tcp_acceptable_seq): at SND.MAX the peer drops it as out of window, keeps probing
    /// us, and each side waits for the other for good (an echo server under `ztctl run` stalled
    /// this way with both queues full).
    @Test func windowUpdateAfterAnUntakenProbeStaysInThePeersWindow() {
        let h = Harness { $0.receiveBufferSize = 2000; $0.quickAckSegments = 100 }
        let c = h.passiveEstablished()
        h.inject(flags: .ack, payload: bytes(2000))
        h.peerSeq &+= 2000
        #expect(h.sent().last?.window == 0)
        h.inject(flags: .ack, window: 0)
        _ = h.write(c, bytes(100))
        h.poll()
        #expect(h.sent().isEmpty)
        // The persist timer's probe: one byte, not taken (the peer's answer still says 0).
        while h.sent().isEmpty, let d = h.poll() { h.now = max(d, h.now) }
        h.inject(flags: .ack, window: 0)
        _ = h.sent()
        #expect(h.layer.info(c)?.bytesInFlight == 1)
        // Our app reads: the window update goes out at the peer's RCV.NXT.
        #expect(h.read(c).count == 2000)
        h.poll()
        let out = h.sent()
        let upd = out.filter { $0.payload.isEmpty }
        #expect(upd.count == 1)
        #expect(upd.first?.window == 2000)
        #expect(upd.first?.seq == h.peerAck, "SND.UNA, not the untaken probe's SND.MAX")
        // (The probe byte may go again with it: at SND.UNA, where the peer takes it when it can.)
        #expect(out.allSatisfy { $0.seq == h.peerAck })
        // And an abort's reset goes there too (RFC 5961: only RCV.NXT resets at once).
        h.layer.abort(c, now: h.now)
        h.poll()
        let rst = h.sent().first { $0.flags.contains(.rst) }
        #expect(rst?.seq == h.peerAck)
    }

    /// Bulk transfer both ways at 5% loss on a 0.2 ms RTT path finishes within 300 ms
    /// of simulated time (RTO-driven recovery took about a second: each timeout costs 200 ms).
    @Test func bulkTransferAtFivePercentLossOnShortPath() {
        let o = TCPLossyLinkTests.transfer(size: 2 << 20, loss: 0.05, seed: 77, delay: .microseconds(100),
                                           jitter: .microseconds(20))
        #expect(o.aToB && o.bToA && o.statesOK)
        #expect(o.deliveredMs < 300, "took \(o.deliveredMs) ms")
    }
}

/// Bulk receive: one ACK per input batch instead of one per two segments.
@Suite struct TCPStretchAckTests {
    @Test func burstIsAcknowledgedOnceAtPoll() {
        // A ring that starts big: at the initial 64 KiB, 1/8 of it draws an ACK at once.
        let h = Harness { $0.quickAckSegments = 0; $0.receiveBufferSize = 1 << 20; $0.initialReceiveBuffer = 1 << 20 }
        let c = h.passiveEstablished()
        for _ in 0..<10 {
            h.inject(flags: .ack, payload: bytes(1460))
            h.peerSeq &+= 1460
        }
        #expect(h.sent().isEmpty)
        h.poll()
        let out = h.sent()
        #expect(out.count == 1)
        #expect(out.first?.ack == h.peerSeq)
        #expect(h.read(c).count == 14600)
    }

    /// Past 64 KiB (or 1/8 of the buffer) unacknowledged, the ACK goes at once, batch or not.
    @Test func stretchIsBounded() {
        let h = Harness { $0.quickAckSegments = 0; $0.receiveBufferSize = 1 << 20 }
        _ = h.passiveEstablished()
        var acks: [UInt32] = []
        var last = h.peerSeq
        for _ in 0..<100 {
            h.inject(flags: .ack, payload: bytes(1460))
            h.peerSeq &+= 1460
            acks += h.sent().map(\.ack)
        }
        #expect(acks.count >= 2)
        for a in acks {
            #expect(a &- last <= 65536 + 1460)
            last = a
        }
    }
}
