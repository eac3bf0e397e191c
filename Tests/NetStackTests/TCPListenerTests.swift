import Testing
@testable import NetStack

/// Listeners (SYN queue, cookies, backlog) and the limits around them: challenge ACKs, window
/// scaling from the configuration, the bounded out-of-order queue, SYN-ACK retransmission.
@Suite struct TCPListenerTests {
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
