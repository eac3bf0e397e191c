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
}
