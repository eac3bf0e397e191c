import Testing
@testable import NetStack

/// State machine tests, named after smoltcp's test_<state>_<event>: one layer under test, the
/// peer played by hand-built segments, time moved explicitly.
@Suite struct TCPStateTests {
    // MARK: Handshakes

    @Test func testListenSyn() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 4, now: h.now)
        h.inject(seq: 1000, ack: 0, flags: .syn, options: Harness.peerOptions())
        let out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].flags == [.syn, .ack])
        #expect(out[0].ack == 1001)
        #expect(out[0].options.maxSegmentSize == 1460)
        #expect(out[0].checksumOK)
        #expect(h.layer.connectionCount == 1)
        #expect(try h.layer.accept(l, now: h.now) == nil)
        h.inject(seq: 1001, ack: out[0].seq &+ 1, flags: .ack)
        #expect(h.takeEvents() == [.acceptable(l)])
        let c = try #require(try h.layer.accept(l, now: h.now))
        #expect(h.state(c) == .established)
        #expect(h.layer.remoteEndpoint(c) == h.remote)
        #expect(h.layer.localEndpoint(c) == h.local)
        #expect(try h.layer.accept(l, now: h.now) == nil)
    }

    @Test func testSynSentSynAck() throws {
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        #expect(h.state(c) == .synSent)
        #expect(h.sent().isEmpty)   // SYN goes out on poll
        h.poll()
        let syn = h.sent()
        #expect(syn.count == 1)
        #expect(syn[0].flags == .syn)
        #expect(PortTable.defaultEphemeral.contains(syn[0].src.port))
        #expect(syn[0].options.maxSegmentSize == 1460)
        #expect(syn[0].options.windowScale == 1)       // 64 KiB buffer needs shift 1
        #expect(syn[0].options.sackPermitted)
        #expect(syn[0].options.timestamp?.echoReply == 0)
        h.injectTo(syn[0].src, seq: 5000, ack: syn[0].seq &+ 1, flags: [.syn, .ack],
                   options: Harness.peerOptions(mss: 1200))
        let ack = h.sent()
        #expect(ack.count == 1)
        #expect(ack[0].flags == .ack)
        #expect(ack[0].seq == syn[0].seq &+ 1)
        #expect(ack[0].ack == 5001)
        #expect(h.takeEvents() == [.connected(c)])
        #expect(h.state(c) == .established)
        #expect(h.layer.info(c)?.mss == 1200)
        #expect(h.layer.info(c)?.windowScaling == false)
    }

    @Test func testSynSentSyn() throws {
        // Simultaneous open (RFC 9293 figure 7).
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        h.poll()
        let syn = h.sent()[0]
        h.injectTo(syn.src, seq: 5000, ack: 0, flags: .syn, options: Harness.peerOptions())
        let synack = h.sent()
        #expect(synack.count == 1)
        #expect(synack[0].flags == [.syn, .ack])
        #expect(synack[0].seq == syn.seq)
        #expect(synack[0].ack == 5001)
        #expect(h.state(c) == .synReceived)
        h.injectTo(syn.src, seq: 5000, ack: syn.seq &+ 1, flags: [.syn, .ack], options: Harness.peerOptions())
        #expect(h.state(c) == .established)
        #expect(h.takeEvents() == [.connected(c)])
        let ack = h.sent()
        #expect(ack.last?.flags == .ack)
        #expect(ack.last?.ack == 5001)
    }

    @Test func testSynSentRst() throws {
        // Connection refused: RST with an acceptable ACK.
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        h.poll()
        let syn = h.sent()[0]
        h.injectTo(syn.src, seq: 0, ack: syn.seq &+ 7, flags: [.rst, .ack])   // unacceptable ACK: ignored
        #expect(h.state(c) == .synSent)
        h.injectTo(syn.src, seq: 0, ack: 0, flags: .rst)                       // no ACK: ignored
        #expect(h.state(c) == .synSent)
        h.injectTo(syn.src, seq: 0, ack: syn.seq &+ 1, flags: [.rst, .ack])
        #expect(h.takeEvents() == [.failed(c, .connectionRefused)])
        #expect(h.state(c) == .closed)
        #expect(h.layer.connectionCount == 0)
        h.layer.release(c, now: h.now)
        #expect(h.layer.info(c) == nil)
    }

    @Test func testSynSentBadAck() throws {
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        h.poll()
        let syn = h.sent()[0]
        h.injectTo(syn.src, seq: 5000, ack: syn.seq &+ 100, flags: [.syn, .ack])
        let out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].flags == .rst)
        #expect(out[0].seq == syn.seq &+ 100)
        #expect(h.state(c) == .synSent)
    }

    @Test func testSynSentTimeout() throws {
        let h = Harness { $0.synRetries = 2 }
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        let t0 = h.now
        var synTimes: [UInt64] = []
        while h.layer.connectionCount > 0 && h.now < t0 + .seconds(30) {
            let d = h.poll()
            for s in h.sent() where s.flags == .syn { synTimes.append((h.now - t0).milliseconds) }
            guard let d else { break }
            h.now = max(d, h.now)
        }
        // Initial RTO 1 s, doubling: SYN at 0, 1 s, 3 s; give up at 7 s.
        #expect(synTimes == [0, 1000, 3000])
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
        #expect((h.now - t0).milliseconds == 7000)
    }

    @Test func testClosedSyn() {
        let h = Harness()
        h.inject(seq: 1000, ack: 0, flags: .syn)
        var out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].flags == [.rst, .ack])
        #expect(out[0].seq == 0)
        #expect(out[0].ack == 1001)
        h.inject(seq: 1000, ack: 777, flags: .ack, payload: [1, 2, 3])
        out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].flags == .rst)
        #expect(out[0].seq == 777)
        h.inject(seq: 1000, ack: 777, flags: .rst)
        #expect(h.sent().isEmpty)
    }

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

    // MARK: RST and SYN in synchronized states

    @Test func testEstablishedRst() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(flags: .rst)
        #expect(h.takeEvents() == [.failed(c, .connectionReset)])
        #expect(h.layer.connectionCount == 0)
    }

    @Test func testEstablishedRstInWindowChallenge() throws {
        // RFC 5961 §3.2: in window but not exact: challenge ACK, connection survives.
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(seq: h.peerSeq &+ 100, flags: .rst)
        let out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].flags == .ack)
        #expect(out[0].ack == h.peerSeq)
        #expect(h.state(c) == .established)
    }

    @Test func testEstablishedRstOutOfWindow() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(seq: h.peerSeq &+ 1_000_000, flags: .rst)
        #expect(h.sent().isEmpty)
        #expect(h.state(c) == .established)
    }

    @Test func testEstablishedSyn() throws {
        // RFC 5961 §4: SYN in a synchronized state draws a challenge ACK.
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(seq: h.peerSeq &+ 5, ack: 0, flags: .syn)
        let out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].flags == .ack)
        #expect(out[0].ack == h.peerSeq)
        #expect(h.state(c) == .established)
    }

    @Test func testSynReceivedRst() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 4, now: h.now)
        h.inject(seq: 1000, ack: 0, flags: .syn)
        _ = h.sent()
        h.inject(seq: 1001, ack: 0, flags: .rst)
        #expect(h.layer.connectionCount == 0)
        #expect(h.takeEvents().isEmpty)
        #expect(try h.layer.accept(l, now: h.now) == nil)
        // The listener still works.
        h.inject(seq: 3000, ack: 0, flags: .syn)
        #expect(h.sent().first?.flags == [.syn, .ack])
    }

    /// Drives a passive connection into `state` (from ESTABLISHED).
    static func reach(_ state: TCPState, _ h: Harness, _ c: SocketHandle) throws {
        switch state {
        case .established: break
        case .finWait1:
            try h.layer.shutdownWrite(c, now: h.now); h.poll(); _ = h.sent()
        case .finWait2:
            try h.layer.shutdownWrite(c, now: h.now); h.poll(); _ = h.sent()
            h.inject(ack: h.peerAck &+ 1, flags: .ack)
        case .closeWait:
            h.inject(flags: [.fin, .ack]); h.peerSeq &+= 1
        case .closing:
            try h.layer.shutdownWrite(c, now: h.now); h.poll(); _ = h.sent()
            h.inject(flags: [.fin, .ack]); h.peerSeq &+= 1
        case .lastAck:
            h.inject(flags: [.fin, .ack]); h.peerSeq &+= 1
            try h.layer.shutdownWrite(c, now: h.now); h.poll()
        case .timeWait:
            try h.layer.shutdownWrite(c, now: h.now); h.poll(); _ = h.sent()
            h.inject(ack: h.peerAck &+ 1, flags: [.fin, .ack]); h.peerSeq &+= 1
        default:
            Issue.record("cannot reach \(state)")
        }
        _ = h.sent()
        _ = h.takeEvents()
        #expect(h.state(c) == state)
    }

    @Test(arguments: [TCPState.finWait1, .finWait2, .closeWait, .closing, .lastAck, .timeWait])
    func testRstInState(_ state: TCPState) throws {
        let h = Harness()
        let c = h.passiveEstablished()
        try Self.reach(state, h, c)
        h.inject(ack: h.peerAck, flags: .rst)
        #expect(h.layer.connectionCount == 0, "RST in \(state)")
        let ev = h.takeEvents()
        switch state {
        case .finWait1, .finWait2, .closeWait: #expect(ev == [.failed(c, .connectionReset)])
        default: #expect(!ev.contains(.failed(c, .connectionReset)))
        }
    }

    @Test(arguments: [TCPState.finWait1, .finWait2, .closeWait, .closing, .lastAck])
    func testSynInState(_ state: TCPState) throws {
        let h = Harness()
        let c = h.passiveEstablished()
        try Self.reach(state, h, c)
        h.inject(ack: 0, flags: .syn)
        let out = h.sent()
        #expect(out.first?.flags.contains(.ack) == true)
        #expect(!(out.first?.flags.contains(.rst) ?? true))
        #expect(h.state(c) == state)
    }

    // MARK: Closing

    @Test func testEstablishedFin() throws {
        // Passive close: FIN -> CLOSE-WAIT -> close -> LAST-ACK -> CLOSED.
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(flags: [.fin, .ack], payload: bytes(5))
        h.peerSeq &+= 6
        #expect(h.state(c) == .closeWait)
        #expect(h.takeEvents() == [.readable(c)])
        #expect(h.sent().last?.ack == h.peerSeq)
        #expect(!h.layer.isPeerClosed(c))
        #expect(h.read(c) == bytes(5))
        #expect(h.layer.isPeerClosed(c))
        h.layer.close(c, now: h.now)
        #expect(h.state(c) == .lastAck)
        h.poll()
        let fin = h.sent()
        #expect(fin.count == 1 && fin[0].flags == [.fin, .ack])
        h.inject(ack: fin[0].seq &+ 1, flags: .ack)
        #expect(h.takeEvents() == [.closed(c)])
        #expect(h.state(c) == .closed)
        #expect(h.layer.connectionCount == 0)
        h.layer.release(c, now: h.now)
        #expect(h.layer.info(c) == nil)
    }

    @Test func testFinWait2FinAndTimeWaitExpiry() throws {
        let h = Harness { $0.timeWait = .seconds(1) }
        let c = h.passiveEstablished()
        h.layer.close(c, now: h.now)
        h.poll()
        let fin = h.sent()
        #expect(fin.count == 1 && fin[0].flags == [.fin, .ack])
        #expect(h.state(c) == .finWait1)
        h.inject(ack: fin[0].seq &+ 1, flags: .ack)
        #expect(h.state(c) == .finWait2)
        h.inject(ack: fin[0].seq &+ 1, flags: [.fin, .ack])
        h.peerSeq &+= 1
        #expect(h.state(c) == .timeWait)
        #expect(h.takeEvents() == [.readable(c), .closed(c)])   // EOF is readable, then closed
        #expect(h.sent().last?.ack == h.peerSeq)
        // A retransmitted FIN in TIME-WAIT is ACKed again.
        h.inject(seq: h.peerSeq &- 1, ack: fin[0].seq &+ 1, flags: [.fin, .ack])
        #expect(h.sent().last?.ack == h.peerSeq)
        h.run(untilMs: 999)
        #expect(h.layer.connectionCount == 1)
        h.run(untilMs: 2)
        #expect(h.layer.connectionCount == 0)
        #expect(h.state(c) == .closed)
    }

    @Test func testSimultaneousClose() throws {
        let h = Harness { $0.timeWait = .seconds(1) }
        let c = h.passiveEstablished()
        h.layer.close(c, now: h.now)
        h.poll()
        let fin = h.sent()[0]
        h.inject(flags: [.fin, .ack])   // peer's FIN crosses ours (does not ACK it)
        h.peerSeq &+= 1
        #expect(h.state(c) == .closing)
        #expect(h.sent().last?.ack == h.peerSeq)
        h.inject(ack: fin.seq &+ 1, flags: .ack)
        #expect(h.state(c) == .timeWait)
        h.run(untilMs: 1001)
        #expect(h.layer.connectionCount == 0)
    }

    @Test func testHalfClose() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        try h.layer.shutdownWrite(c, now: h.now)
        h.poll()
        let fin = h.sent()[0]
        #expect(fin.flags == [.fin, .ack])
        #expect(throws: SocketError.invalidState) { _ = try h.layer.send(c, UnsafeRawBufferPointer(start: nil, count: 0), now: h.now) }
        h.inject(ack: fin.seq &+ 1, flags: .ack)
        #expect(h.state(c) == .finWait2)
        h.inject(ack: fin.seq &+ 1, flags: .ack, payload: bytes(50))
        h.peerSeq &+= 50
        #expect(h.read(c) == bytes(50))   // reading continues after our FIN
        h.inject(ack: fin.seq &+ 1, flags: [.fin, .ack])
        #expect(h.state(c) == .timeWait)
        #expect(h.layer.isPeerClosed(c))
    }

    @Test func testCloseWithUnreadDataSendsRst() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(flags: .ack, payload: bytes(100))
        _ = h.sent()
        h.layer.close(c, now: h.now)
        h.poll()
        let out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].flags.contains(.rst))
        #expect(out[0].seq == h.peerAck)
        #expect(h.layer.connectionCount == 0)
    }

    @Test func testAbortSendsRst() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        h.layer.abort(c, now: h.now)
        h.poll()
        let out = h.sent()
        #expect(out.count == 1 && out[0].flags == .rst)
        #expect(h.layer.connectionCount == 0)
        #expect(h.layer.info(c) == nil)
    }

    @Test func testKeepAlive() throws {
        let h = Harness {
            $0.keepAliveIdle = .seconds(10); $0.keepAliveInterval = .seconds(1); $0.keepAliveCount = 3
        }
        let c = h.passiveEstablished()
        try h.layer.setOption(c, .keepAlive(true), now: h.now)
        let t0 = h.now
        // A live peer answers the first probe: the idle clock restarts.
        h.run(untilMs: 10_000)
        var out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].seq == h.peerAck &- 1 && out[0].payload.isEmpty)
        h.inject(flags: .ack)
        h.run(untilMs: 9_000)
        #expect(h.sent().isEmpty)
        // Then the peer goes silent: 3 probes a second apart, then failure.
        h.run(untilMs: 1_000)
        h.run(untilMs: 2_000)
        out = h.sent()
        #expect(out.count == 3)
        h.run(untilMs: 1_000)
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
        #expect((h.now - t0).milliseconds == 23_000)
    }

    // MARK: Listener

    @Test func testListenSynQueueFullUsesCookies() throws {
        let h = Harness { $0.maxSynQueue = 2 }
        let l = try h.layer.listen(local: h.local, backlog: 8, now: h.now)
        var synacks: [Seg] = []
        for p in 0..<3 {
            h.remote = IPEndpoint(h.remote.address, UInt16(41000 + p))
            h.inject(seq: 1000, ack: 0, flags: .syn, options: Harness.peerOptions(ws: 7, sack: true, ts: (9, 0)))
            synacks += h.sent()
        }
        #expect(synacks.count == 3)
        #expect(h.layer.connectionCount == 2)           // the third is stateless
        #expect(synacks[0].options.windowScale != nil)
        #expect(synacks[2].options.windowScale == nil)  // cookies cannot carry options
        #expect(synacks[2].options.maxSegmentSize == 1460)
        #expect(h.layer.synCookiesSent == 1)
        // Completing the cookie handshake creates the connection.
        h.inject(seq: 1001, ack: synacks[2].seq &+ 1, flags: .ack)
        #expect(h.takeEvents() == [.acceptable(l)])
        let c = try #require(try h.layer.accept(l, now: h.now))
        #expect(h.state(c) == .established)
        #expect(h.layer.remoteEndpoint(c)?.port == 41002)
        // A forged ACK (wrong cookie) gets an RST.
        h.remote = IPEndpoint(h.remote.address, 41009)
        h.inject(seq: 1001, ack: synacks[2].seq &+ 1, flags: .ack)
        let out = h.sent()
        #expect(out.count == 1 && out[0].flags == .rst)
    }

    @Test func testListenBacklogFullIgnoresAck() throws {
        // Linux (sk_acceptq_is_full): backlog + 1 connections may wait to be accepted.
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 1, now: h.now)
        var synacks: [Seg] = []
        for p in 0..<3 {
            h.remote = IPEndpoint(h.remote.address, UInt16(42000 + p))
            h.inject(seq: 1000, ack: 0, flags: .syn)
            synacks += h.sent()
        }
        #expect(synacks.count == 3)   // the queue was empty when each SYN came
        for p in 0..<3 {
            h.remote = IPEndpoint(h.remote.address, UInt16(42000 + p))
            h.inject(seq: 1001, ack: synacks[p].seq &+ 1, flags: .ack)
        }
        for _ in 0..<2 {
            let c = try #require(try h.layer.accept(l, now: h.now))
            #expect(h.state(c) == .established)
        }
        #expect(try h.layer.accept(l, now: h.now) == nil)   // the third stayed in SYN-RECEIVED
        #expect(h.layer.connectionCount == 3)
    }

    @Test func testListenBacklogFullDropsSyn() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 0, now: h.now)
        h.remote = IPEndpoint(h.remote.address, 42000)
        h.inject(seq: 1000, ack: 0, flags: .syn)
        let sa = try #require(h.sent().first)
        h.inject(seq: 1001, ack: sa.seq &+ 1, flags: .ack)
        // backlog 0: one connection waits; a further SYN is dropped (Linux tcp_conn_request).
        h.remote = IPEndpoint(h.remote.address, 42001)
        h.inject(seq: 5000, ack: 0, flags: .syn)
        #expect(h.sent().isEmpty)
        _ = try #require(try h.layer.accept(l, now: h.now))
        h.inject(seq: 5000, ack: 0, flags: .syn)   // the retransmission finds room
        #expect(h.sent().first?.flags == [.syn, .ack])
    }

    @Test func testListenBacklogCountsConnectionsHeldByDriver() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 2, now: h.now)
        var held = 3
        h.layer.setHeldByDriver(l) { _ in held }
        h.inject(seq: 1000, ack: 0, flags: .syn)
        #expect(h.sent().isEmpty)   // 3 the app has not accepted: backlog 2 is full
        held = 2
        h.inject(seq: 1000, ack: 0, flags: .syn)
        let sa = try #require(h.sent().first)
        held = 3   // the driver delivered another meanwhile: the last ACK is ignored
        h.inject(seq: 1001, ack: sa.seq &+ 1, flags: .ack)
        #expect(try h.layer.accept(l, now: h.now) == nil)
        held = 0
        h.layer.setBacklog(l, 0)
        h.inject(seq: 1001, ack: sa.seq &+ 1, flags: .ack)
        #expect(try h.layer.accept(l, now: h.now) != nil)
    }
}

@Suite struct TCPChallengeAckTests {
    @Test func testEstablishedChallengeAckRateLimit() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        for i in 0..<1100 { h.inject(seq: h.peerSeq &+ 100 &+ UInt32(i), flags: .rst) }
        #expect(h.sent().count == TCPLayer.challengeAckLimit)
        #expect(h.state(c) == .established)
        h.advance(ms: 1000)
        h.inject(seq: h.peerSeq &+ 100, flags: .rst)
        #expect(h.sent().count == 1)   // a new second, a new budget
    }

    @Test func testListenSynFinIgnored() throws {
        let h = Harness()
        _ = try h.layer.listen(local: h.local, backlog: 4, now: h.now)
        h.inject(seq: 1000, ack: 0, flags: [.syn, .fin])
        #expect(h.sent().isEmpty)
        #expect(h.layer.connectionCount == 0)
    }
}

@Suite struct TCPWindowScaleTests {
    @Test func testEstablishedScaledWindowAdvertisement() throws {
        let h = Harness { $0.receiveBufferSize = 4 << 20 }
        let c = h.passiveEstablished(options: Harness.peerOptions(ws: 2))
        let info = try #require(h.layer.info(c))
        #expect(info.windowScaling)
        h.inject(flags: .ack, window: 1000, payload: bytes(1000))
        let out = h.sent()
        // Our shift is for the 4 MiB maximum, 7 (4 MiB >> 7 = 32768 fits 16 bits); the ring
        // starts at 64 KiB (TCPBufferTuning.swift); the peer's shift is 2.
        #expect(out.last?.window == UInt16(((64 << 10) - 1000) >> 7))
        #expect(h.layer.info(c)?.peerWindow == 4000)
    }

    @Test func testKeepAliveDefaultFromConfig() throws {
        let h = Harness { $0.keepAlive = true; $0.keepAliveIdle = .seconds(5); $0.keepAliveInterval = .seconds(1) }
        _ = h.passiveEstablished()
        h.run(untilMs: 5000)
        let out = h.sent()
        #expect(out.count == 1 && out[0].seq == h.peerAck &- 1)
    }
}

@Suite struct TCPReceiveQueueTests {
    @Test func testEstablishedOutOfOrderQueueIsBounded() throws {
        let h = Harness { $0.maxOutOfOrderRanges = 2 }
        let c = h.passiveEstablished(options: Harness.peerOptions(sack: true))
        let base = h.peerSeq
        let data = bytes(4000)
        for k in [1, 2, 3] {   // three disjoint holes' worth of ranges; only two fit
            h.inject(seq: base &+ UInt32(k * 1000), flags: .ack, payload: Array(data[(k * 1000)..<(k * 1000 + 500)]))
        }
        let last = try #require(h.sent().last)
        #expect(last.options.sackBlocks.count == 2)
        h.inject(seq: base, flags: .ack, payload: Array(data[0..<1000]))
        #expect(h.read(c) == Array(data[0..<1500]))
        // The dropped range is simply asked for again; once it arrives everything lines up.
        h.inject(seq: base &+ 1500, flags: .ack, payload: Array(data[1500..<4000]))
        #expect(h.read(c) == Array(data[1500..<4000]))
        #expect(h.sent().last?.ack == base &+ 4000)
    }

    @Test func testSynReceivedRetransmitsSynAckThenGivesUp() throws {
        let h = Harness { $0.synRetries = 1 }
        let l = try h.layer.listen(local: h.local, backlog: 4, now: h.now)
        h.inject(seq: 1000, ack: 0, flags: .syn)
        let first = h.sent()
        #expect(first.count == 1)
        // A retransmitted SYN gets the SYN-ACK again at once.
        h.inject(seq: 1000, ack: 0, flags: .syn)
        let again = h.sent()
        #expect(again.count == 1 && again[0].flags == [.syn, .ack] && again[0].seq == first[0].seq)
        h.run(untilMs: 1000)
        #expect(h.sent().count == 1)    // RTO retransmission
        h.run(untilMs: 2000)
        #expect(h.layer.connectionCount == 0)
        #expect(h.takeEvents().isEmpty)
        #expect(h.layer.listeners[h.local]?.first?.synQueue == 0)
        #expect(try h.layer.accept(l, now: h.now) == nil)
    }
}
