import Testing
@testable import NetStack

/// Established-state data, retransmission and windows, as in TCPStateTests: the peer played by
/// hand-built segments, time moved explicitly.
@Suite struct TCPDataTests {
    // MARK: Data

    @Test func testEstablishedRecv() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(flags: [.ack, .psh], payload: bytes(100))
        #expect(h.takeEvents() == [.readable(c)])
        #expect(h.read(c) == bytes(100))
        let out = h.sent()
        #expect(out.count == 1)   // quick-ack at start
        #expect(out[0].ack == h.peerSeq &+ 100)
    }

    @Test func testEstablishedOutOfOrder() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        let data = bytes(3000)
        let base = h.peerSeq
        h.inject(seq: base &+ 2000, flags: .ack, payload: Array(data[2000..<3000]))
        h.inject(seq: base, flags: .ack, payload: Array(data[0..<1000]))
        #expect(h.read(c) == Array(data[0..<1000]))
        h.inject(seq: base &+ 1000, flags: .ack, payload: Array(data[1000..<2000]))
        #expect(h.read(c) == Array(data[1000..<3000]))
        #expect(h.sent().last?.ack == base &+ 3000)
    }

    @Test func testEstablishedSackBlocks() throws {
        let h = Harness()
        let c = h.passiveEstablished(options: Harness.peerOptions(sack: true))
        #expect(h.layer.info(c)?.sack == true)
        let base = h.peerSeq
        h.inject(seq: base &+ 1000, flags: .ack, payload: bytes(100))
        var out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].ack == base)
        #expect(out[0].options.sackBlocks.count == 1)
        #expect(out[0].options.sackBlocks[0].start == SeqNumber(base &+ 1000))
        #expect(out[0].options.sackBlocks[0].end == SeqNumber(base &+ 1100))
        h.inject(seq: base &+ 2000, flags: .ack, payload: bytes(100))
        out = h.sent()
        #expect(out[0].options.sackBlocks.count == 2)
        #expect(out[0].options.sackBlocks[0].start == SeqNumber(base &+ 2000))   // most recent first
        #expect(out[0].options.sackBlocks[1].start == SeqNumber(base &+ 1000))
        h.inject(seq: base, flags: .ack, payload: bytes(1000))
        out = h.sent()
        #expect(out[0].ack == base &+ 1100)
        #expect(out[0].options.sackBlocks.count == 1)
        #expect(out[0].options.sackBlocks[0].start == SeqNumber(base &+ 2000))
        #expect(h.read(c).count == 1100)
    }

    @Test func testEstablishedDelayedAck() throws {
        let h = Harness { $0.quickAckSegments = 0 }
        let c = h.passiveEstablished()
        h.inject(flags: .ack, payload: bytes(100))
        h.peerSeq &+= 100
        #expect(h.sent().isEmpty)
        h.advance(ms: 39)
        h.poll()
        #expect(h.sent().isEmpty)
        h.advance(ms: 1)
        h.poll()
        var out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].ack == h.peerSeq)
        // Every second full-sized segment is acknowledged by the next poll (the end of the
        // driver's input batch), without waiting for the delayed-ACK timer.
        h.inject(flags: .ack, payload: bytes(1460))
        h.peerSeq &+= 1460
        #expect(h.sent().isEmpty)
        h.inject(flags: .ack, payload: bytes(1460))
        h.peerSeq &+= 1460
        #expect(h.sent().isEmpty)
        h.poll()
        out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].ack == h.peerSeq)
        #expect(h.read(c).count == 3020)
    }

    @Test func testEstablishedNagle() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        #expect(h.write(c, bytes(10)) == 10)
        h.poll()
        var out = h.sent()
        #expect(out.count == 1 && out[0].payload.count == 10)
        #expect(h.write(c, bytes(10)) == 10)
        h.poll()
        #expect(h.sent().isEmpty)   // Nagle holds the second small segment
        h.inject(ack: h.peerAck &+ 10, flags: .ack)
        out = h.sent()
        #expect(out.count == 1 && out[0].payload.count == 10)
        #expect(out[0].seq == h.peerAck &+ 10)
    }

    @Test func testEstablishedNoDelay() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        try h.layer.setOption(c, .noDelay(true), now: h.now)
        _ = h.write(c, bytes(10))
        h.poll()
        _ = h.write(c, bytes(10))
        h.poll()
        let out = h.sent()
        #expect(out.count == 2)
        #expect(out.map(\.payload.count) == [10, 10])
    }

    @Test func testEstablishedSendSegmentsByMss() throws {
        let h = Harness()
        let c = h.passiveEstablished(options: Harness.peerOptions(mss: 1000))
        #expect(h.write(c, bytes(3500)) == 3500)
        h.poll()
        let out = h.sent()
        #expect(out.map(\.payload.count) == [1000, 1000, 1000, 500])
        #expect(out.last?.flags.contains(.psh) == true)
        #expect(Array(out.flatMap(\.payload)) == bytes(3500))
    }

    @Test func testEstablishedWritable() throws {
        let h = Harness { $0.sendBufferSize = 3000 }
        let c = h.passiveEstablished()
        #expect(h.write(c, bytes(4000)) == 3000)
        #expect(h.write(c, bytes(10)) == 0)
        h.poll()
        let out = h.sent()
        #expect(out.count == 3)
        h.inject(ack: h.peerAck &+ 3000, flags: .ack)
        #expect(h.takeEvents().contains(.writable(c)))
        #expect(h.write(c, bytes(10)) == 10)
    }

    // MARK: Retransmission

    @Test func testEstablishedRetransmitBackoff() throws {
        let h = Harness { $0.maxRetransmissions = 3 }
        let c = h.passiveEstablished()
        _ = h.write(c, bytes(100))
        let t0 = h.now
        var times: [UInt64] = []
        while h.now < t0 + .seconds(20) {
            let d = h.poll()
            for s in h.sent() where !s.payload.isEmpty {
                #expect(s.seq == h.peerAck)
                times.append((h.now - t0).milliseconds)
            }
            if h.events.contains(.failed(c, .timedOut)) { break }
            guard let d else { break }
            h.now = max(d, h.now)
        }
        // RTO 200 ms (min RTO, RTT ~0 here), doubling each time; fail after 3 retransmissions.
        #expect(times == [0, 200, 600, 1400])
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
        #expect((h.now - t0).milliseconds == 3000)
        #expect(h.layer.info(c)?.retransmissions == 3)
    }

    @Test func testEstablishedFastRetransmitNoSack() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        _ = h.write(c, bytes(5 * 1460))
        h.poll()
        #expect(h.sent().count == 5)
        for _ in 0..<3 { h.inject(flags: .ack) }   // three duplicate ACKs
        let out = h.sent()
        #expect(out.count >= 1)
        #expect(out[0].seq == h.peerAck)
        #expect(out[0].payload.count == 1460)
        #expect(h.layer.info(c)?.retransmissions == 1)
    }

    @Test func testEstablishedSackRetransmit() throws {
        let h = Harness()
        let c = h.passiveEstablished(options: Harness.peerOptions(sack: true))
        let mss: UInt32 = 1460
        // One exchange with a 40 ms RTT (SRTT becomes 5 ms after the handshake's zero sample):
        // the loss probe timer is then 2 * SRTT, well after what follows.
        _ = h.write(c, bytes(100))
        h.poll()
        _ = h.sent()
        h.advance(ms: 40)
        h.peerAck &+= 100
        h.inject(flags: .ack)
        _ = h.write(c, bytes(10 * 1460))
        h.poll()
        #expect(h.sent().count == 10)
        let una = h.peerAck
        // Segments 0 and 2 are lost; the peer SACKs 1, then 3...
        func sackAck(_ blocks: [(UInt32, UInt32)]) {
            var o = TCPSegmentOptions()
            for b in blocks { o.sackBlocks.append(start: SeqNumber(una &+ b.0 * mss), end: SeqNumber(una &+ b.1 * mss)) }
            h.inject(ack: una, flags: .ack, options: o)
        }
        h.advance(ms: 2)
        sackAck([(1, 2)])
        #expect(h.sent().isEmpty)
        // RACK (RFC 8985): segment 0 left no later than the SACKed segment 1; it is lost once an
        // RTT (2 ms) plus the reordering window (min RTT / 4 = 0.5 ms) has passed since it left.
        h.now = h.now + .microseconds(400)
        h.poll()
        #expect(h.sent().isEmpty)
        h.now = h.now + .microseconds(100)
        h.poll()
        var seqs = h.sent().filter { !$0.payload.isEmpty }.map { ($0.seq &- una) / mss }
        #expect(seqs == [0])
        // Three segments SACKed: no more reordering window, segment 2 is lost at once.
        sackAck([(3, 5), (1, 2)])
        seqs = h.sent().filter { !$0.payload.isEmpty }.map { ($0.seq &- una) / mss }
        #expect(seqs == [2])
        // More SACKs: SACKed segments and the ones just resent are not sent again.
        sackAck([(3, 7), (1, 2)])
        seqs = h.sent().filter { !$0.payload.isEmpty }.map { ($0.seq &- una) / mss }
        #expect(seqs.isEmpty)
        #expect(h.layer.info(c)!.retransmissions == 2)
    }

    // MARK: Window

    @Test func testEstablishedZeroWindowProbe() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(flags: .ack, window: 0)
        #expect(h.layer.info(c)?.peerWindow == 0)
        _ = h.write(c, bytes(100))
        h.poll()
        #expect(h.sent().isEmpty)
        let t0 = h.now
        var probes: [UInt64] = []
        while h.now < t0 + .milliseconds(1500) {
            guard let d = h.poll(), d < t0 + .milliseconds(1500) else { break }
            h.now = max(d, h.now)
            h.poll()
            for s in h.sent() {
                #expect(s.payload.count == 1)
                #expect(s.seq == h.peerAck)
                probes.append((h.now - t0).milliseconds)
                h.inject(flags: .ack, window: 0)   // still closed
            }
        }
        #expect(probes == [200, 600, 1400])   // persist back-off doubles
        #expect(h.state(c) == .established)
        h.inject(flags: .ack, window: 1000)
        let out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].seq == h.peerAck)
        #expect(out[0].payload == bytes(100))
    }

    @Test func testEstablishedReceiveWindowCloses() throws {
        let h = Harness { $0.receiveBufferSize = 2000; $0.quickAckSegments = 100 }
        let c = h.passiveEstablished()
        h.inject(flags: .ack, payload: bytes(1500))
        h.peerSeq &+= 1500
        #expect(h.sent().last?.window == 500)
        h.inject(flags: .ack, payload: bytes(1000))   // only 500 fit
        h.peerSeq &+= 500
        let out = h.sent()
        #expect(out.last?.ack == h.peerSeq)
        #expect(out.last?.window == 0)
        #expect(h.read(c).count == 2000)
        h.poll()
        let upd = h.sent()
        #expect(upd.count == 1)          // window update after the app read
        #expect(upd[0].window == 2000)
    }

    @Test func testOptionsNegotiatedWhenBothOffer() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 1, now: h.now)
        h.inject(seq: 1000, ack: 0, flags: .syn, window: 100,
                 options: Harness.peerOptions(ws: 7, sack: true, ts: (555, 0)))
        let sa = h.sent()[0]
        #expect(sa.options.windowScale == 1)
        #expect(sa.options.sackPermitted)
        #expect(sa.options.timestamp?.echoReply == 555)
        var ts = TCPSegmentOptions()
        ts.timestamp = (556, sa.options.timestamp!.value)
        h.inject(seq: 1001, ack: sa.seq &+ 1, flags: .ack, window: 100, options: ts)
        let c = try #require(try h.layer.accept(l, now: h.now))
        let info = try #require(h.layer.info(c))
        #expect(info.windowScaling && info.timestamps && info.sack)
        #expect(info.peerWindow == 100 << 7)
    }

    @Test func testOptionsOffWhenPeerDoesNotOffer() throws {
        let h = Harness()
        let c = h.passiveEstablished(options: TCPSegmentOptions())
        let info = try #require(h.layer.info(c))
        #expect(!info.windowScaling && !info.timestamps && !info.sack)
        #expect(info.mss == 536)   // RFC 9293 default when no MSS option
    }

    @Test func testOptionsOffByConfig() throws {
        let h = Harness { $0.windowScaling = false; $0.timestamps = false; $0.sack = false }
        _ = try h.layer.listen(local: h.local, backlog: 1, now: h.now)
        h.inject(seq: 1000, ack: 0, flags: .syn, options: Harness.peerOptions(ws: 7, sack: true, ts: (555, 0)))
        let sa = h.sent()[0]
        #expect(sa.options.windowScale == nil)
        #expect(!sa.options.sackPermitted)
        #expect(sa.options.timestamp == nil)
        #expect(sa.options.maxSegmentSize == 1460)
    }

    @Test func testEstablishedTimestampsEchoAndPaws() throws {
        let h = Harness()
        let c = h.passiveEstablished(options: Harness.peerOptions(ts: (1000, 0)))
        var o = TCPSegmentOptions()
        o.timestamp = (2000, 0)
        h.inject(flags: .ack, options: o, payload: bytes(10))
        h.peerSeq &+= 10
        let out = h.sent()
        #expect(out.last?.options.timestamp?.echoReply == 2000)
        // An older timestamp is a wrapped-around duplicate (PAWS): dropped, re-ACKed.
        o.timestamp = (1500, 0)
        h.inject(flags: .ack, options: o, payload: bytes(10))
        #expect(h.read(c).count == 10)
        #expect(h.sent().last?.ack == h.peerSeq)
    }
}
