import Testing
@testable import NetStack

/// Per-socket options with behaviour (Linux's semantics), on the virtual clock.
@Suite struct TCPSocketOptionTests {
    // MARK: Keepalive per socket

    @Test func keepAliveTimingIsPerSocket() throws {
        let h = Harness()   // layer defaults: 7200 s idle
        let c = h.passiveEstablished()
        try h.layer.setOption(c, .keepAlive(true), now: h.now)
        try h.layer.setOption(c, .keepAliveIdle(.seconds(10)), now: h.now)
        try h.layer.setOption(c, .keepAliveInterval(.seconds(2)), now: h.now)
        try h.layer.setOption(c, .keepAliveCount(2), now: h.now)
        let start = h.now
        h.run(untilMs: 9_999)
        #expect(h.sent().isEmpty)
        h.run(untilMs: 1)
        let probe = h.sent()
        #expect(probe.count == 1 && probe[0].seq == h.peerAck &- 1 && probe[0].payload.isEmpty)
        // Unanswered: a second probe 2 s later, then failure 2 s after that (count 2).
        h.run(untilMs: 2_000)
        #expect(h.sent().count == 1)
        h.run(untilMs: 2_000)
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
        #expect((h.now - start).milliseconds == 14_000)
    }

    @Test func keepIdleChangedWhileIdleReArmsFromTheLastSegment() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        try h.layer.setOption(c, .keepAlive(true), now: h.now)
        h.run(untilMs: 5_000)
        #expect(h.sent().isEmpty)
        // 5 s idle already: an idle time of 8 s leaves 3 s.
        try h.layer.setOption(c, .keepAliveIdle(.seconds(8)), now: h.now)
        h.run(untilMs: 2_999)
        #expect(h.sent().isEmpty)
        h.run(untilMs: 1)
        #expect(h.sent().count == 1)
    }

    // MARK: TCP_CORK

    @Test func corkHoldsPartialSegmentsAtMost200ms() throws {
        let h = Harness()
        let c = h.activeEstablished()
        try h.layer.setOption(c, .cork(true), now: h.now)
        #expect(h.write(c, bytes(100)) == 100)
        h.poll()
        #expect(h.sent().isEmpty)
        h.run(untilMs: 150)
        // More data: the full segment goes at once, the rest keeps waiting.
        #expect(h.write(c, bytes(1500, seed: 100)) == 1500)
        h.poll()
        let full = h.sent()
        #expect(full.count == 1 && full[0].payload.count == 1460)
        h.run(untilMs: 49)
        #expect(h.sent().isEmpty)
        // 200 ms after the data was first held: the partial segment goes.
        h.run(untilMs: 1)
        let rest = h.sent()
        #expect(rest.count == 1 && rest[0].payload.count == 140)
    }

    @Test func uncorkSendsAtOnce() throws {
        let h = Harness()
        let c = h.activeEstablished()
        try h.layer.setOption(c, .cork(true), now: h.now)
        _ = h.write(c, bytes(100))
        h.run(untilMs: 50)
        #expect(h.sent().isEmpty)
        try h.layer.setOption(c, .cork(false), now: h.now)
        h.poll()
        let out = h.sent()
        #expect(out.count == 1 && out[0].payload.count == 100)
    }

    @Test func bytesCommittedBeforeTheCorkAreNotHeld() throws {
        // The daemon reads what the app wrote before its setsockopt(TCP_CORK, 1) and only then
        // applies it: those bytes were written uncorked and leave at the next output.
        let h = Harness()
        let c = h.activeEstablished()
        #expect(h.write(c, bytes(100)) == 100)
        try h.layer.setOption(c, .cork(true), now: h.now)
        h.poll()
        let out = h.sent()
        #expect(out.count == 1 && out[0].payload.count == 100)
        // Bytes after it are corked.
        _ = h.write(c, bytes(50, seed: 7))
        h.poll()
        #expect(h.sent().isEmpty)
    }

    @Test func corkThenShutdownSendsWithTheFin() throws {
        let h = Harness()
        let c = h.activeEstablished()
        try h.layer.setOption(c, .cork(true), now: h.now)
        _ = h.write(c, bytes(10))
        try h.layer.shutdownWrite(c, now: h.now)
        h.poll()
        let out = h.sent()
        #expect(out.count == 1 && out[0].payload.count == 10 && out[0].flags.contains(.fin))
    }

    // MARK: TCP_USER_TIMEOUT

    @Test func userTimeoutFailsUnacknowledgedDataOnTime() throws {
        let h = Harness()
        let c = h.activeEstablished()
        try h.layer.setOption(c, .userTimeout(.milliseconds(2_500)), now: h.now)
        let sentAt = h.now
        _ = h.write(c, bytes(100))
        h.poll()
        #expect(h.sent().count == 1)
        // RTOs at 1 s and 3 s would come; the second is clamped to the user timeout.
        h.run(untilMs: 2_499)
        #expect(h.takeEvents().isEmpty)
        h.run(untilMs: 1)
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
        #expect((h.now - sentAt).milliseconds == 2_500)
    }

    @Test func userTimeoutCountsFromTheLastProgress() throws {
        let h = Harness()
        let c = h.activeEstablished()
        try h.layer.setOption(c, .userTimeout(.seconds(5)), now: h.now)
        _ = h.write(c, bytes(100))
        h.poll()
        let first = h.sent()
        h.run(untilMs: 500)
        // The peer acknowledges; more data is then lost for good.
        h.injectTo(h.activeLocal!, seq: h.peerSeq, ack: first[0].seq &+ 100, flags: .ack)
        let progress = h.now
        _ = h.write(c, bytes(100))
        h.poll()
        _ = h.sent()
        h.run(untilMs: 4_999)
        #expect(h.takeEvents().isEmpty)
        h.run(untilMs: 1)
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
        #expect((h.now - progress).milliseconds == 5_000)
    }

    @Test func userTimeoutReplacesTheRetransmissionCount() throws {
        // Without it, two retransmission timeouts end the connection within seconds...
        let plain = Harness { $0.maxRetransmissions = 2 }
        let a = plain.activeEstablished()
        _ = plain.write(a, bytes(100))
        plain.run(untilMs: 10_000)
        #expect(plain.takeEvents() == [.failed(a, .timedOut)])
        // ...with it, only the time counts: still alive at 10 s, failed at 20 s.
        let h = Harness { $0.maxRetransmissions = 2 }
        let c = h.activeEstablished()
        try h.layer.setOption(c, .userTimeout(.seconds(20)), now: h.now)
        _ = h.write(c, bytes(100))
        h.run(untilMs: 10_000)
        #expect(h.takeEvents().isEmpty)
        h.run(untilMs: 10_000)
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
    }

    @Test func userTimeoutEndsAConnectAfterOneResentSYN() throws {
        // Linux: the first SYN timeout (1 s) resends it, the next timer is clamped to the user
        // timeout, already past: ETIMEDOUT at 1 s, not after the SYN retries (127 s).
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        try h.layer.setOption(c, .userTimeout(.milliseconds(500)), now: h.now)
        let start = h.now
        h.poll()
        #expect(h.sent().count == 1)
        h.run(untilMs: 999)
        #expect(h.takeEvents().isEmpty)
        h.run(untilMs: 1)
        #expect(h.sent().count == 1)   // the resent SYN
        h.run(untilMs: 1)
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
        #expect((h.now - start).milliseconds <= 1_001)
    }

    // MARK: TCP_NOTSENT_LOWAT

    @Test func notSentLowWaterLimitsSendAndWakesAtHalf() throws {
        let h = Harness()
        let c = h.activeEstablished()
        let local = h.activeLocal!
        // The peer's window is closed: nothing can leave, everything written stays unsent.
        h.injectTo(local, seq: h.peerSeq, ack: h.peerAck, flags: .ack, window: 0)
        try h.layer.setOption(c, .notSentLowWater(1000), now: h.now)
        #expect(h.layer.sendSpace(c) == 1000)
        #expect(h.write(c, bytes(5000)) == 1000)
        #expect(h.layer.sendSpace(c) == 0)
        h.poll()
        #expect(h.takeEvents().isEmpty)
        // The window opens: the 1000 bytes leave, nothing is unsent, a writer is woken.
        h.injectTo(local, seq: h.peerSeq, ack: h.peerAck, flags: .ack, window: 65535)
        h.poll()
        #expect(h.sent().reduce(0) { $0 + $1.payload.count } == 1000)
        #expect(h.takeEvents().contains(.writable(c)))
        #expect(h.layer.sendSpace(c) == 1000)
        #expect(h.layer.info(c)?.notSentBytes == 0)
    }

    @Test func notSentLowWaterOffMeansTheRingDecides() throws {
        let h = Harness()
        let c = h.activeEstablished()
        h.injectTo(h.activeLocal!, seq: h.peerSeq, ack: h.peerAck, flags: .ack, window: 0)
        #expect(h.layer.sendSpace(c) == 64 << 10)
        #expect(h.write(c, bytes(5000)) == 5000)
        #expect(h.layer.info(c)?.notSentBytes == 5000)
    }

    // MARK: TCP_DEFER_ACCEPT

    @Test func deferAcceptWaitsForData() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 8, now: h.now)
        try h.layer.setOption(l, .deferAccept(retransmissions: 3), now: h.now)
        h.inject(seq: h.peerSeq, ack: 0, flags: .syn, options: Harness.peerOptions())
        let synack = h.sent()
        h.peerSeq &+= 1
        h.peerAck = synack[0].seq &+ 1
        h.inject(flags: .ack)
        #expect(h.takeEvents().isEmpty)
        #expect(try h.layer.accept(l, now: h.now) == nil)
        h.run(untilMs: 500)
        h.inject(flags: [.ack, .psh], payload: bytes(20))
        #expect(h.takeEvents() == [.acceptable(l)])
        let c = try #require(try h.layer.accept(l, now: h.now))
        #expect(h.read(c) == bytes(20))
    }

    @Test func deferAcceptGivesUpWaitingAtTheEndOfTheDeferral() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 8, now: h.now)
        try h.layer.setOption(l, .deferAccept(retransmissions: 3), now: h.now)
        h.inject(seq: h.peerSeq, ack: 0, flags: .syn, options: Harness.peerOptions())
        let synack = h.sent()
        h.peerSeq &+= 1
        h.peerAck = synack[0].seq &+ 1
        h.inject(flags: .ack)
        // Timeouts at 1 s and 3 s resend nothing (the peer has ACKed); the one at 7 s resends
        // the SYN-ACK, and the peer's answer then completes the handshake without data.
        h.run(untilMs: 6_999)
        #expect(h.sent().isEmpty)
        h.run(untilMs: 1)
        let again = h.sent()
        #expect(again.count == 1 && again[0].flags == [.syn, .ack])
        h.inject(flags: .ack)
        #expect(h.takeEvents() == [.acceptable(l)])
        #expect(try h.layer.accept(l, now: h.now) != nil)
    }

    // MARK: TCP_QUICKACK

    @Test func quickAckOffDelaysAndOnFlushes() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        try h.layer.setOption(c, .quickAck(false), now: h.now)
        // Pingpong mode: no quick ACK for the first segment (the delayed-ACK timer runs).
        h.inject(flags: [.ack, .psh], payload: bytes(100))
        h.poll()
        #expect(h.sent().isEmpty)
        h.run(untilMs: 10)
        #expect(h.sent().isEmpty)
        // TCP_QUICKACK 1 sends the pending ACK now.
        try h.layer.setOption(c, .quickAck(true), now: h.now)
        h.poll()
        let ack = h.sent()
        #expect(ack.count == 1 && ack[0].ack == h.peerSeq &+ 100)
    }

    @Test func quickAckModeAcknowledgesAtOnceByDefault() throws {
        let h = Harness()
        _ = h.passiveEstablished()
        h.inject(flags: [.ack, .psh], payload: bytes(100))
        h.poll()
        #expect(h.sent().count == 1)
    }

    // MARK: TCP_WINDOW_CLAMP, TCP_MAXSEG

    @Test func windowClampLimitsTheAdvertisedWindow() throws {
        let h = Harness { $0.receiveBufferSize = 1 << 20 }
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        try h.layer.setOption(c, .windowClamp(8000), now: h.now)
        h.poll()
        let syn = h.sent()
        #expect(syn[0].window == 8000)
        #expect(syn[0].options.windowScale == 0)   // the shift follows the clamp
        let local = syn[0].src
        h.injectTo(local, seq: h.peerSeq, ack: syn[0].seq &+ 1, flags: [.syn, .ack], options: Harness.peerOptions(ws: 7))
        h.peerSeq &+= 1
        h.poll()
        h.injectTo(local, seq: h.peerSeq, ack: syn[0].seq &+ 1, flags: [.ack, .psh], payload: bytes(100))
        h.poll()
        for s in h.sent() { #expect(Int(s.window) <= 8000) }
    }

    @Test func windowClampOnAListenerGoesToItsConnections() throws {
        let h = Harness { $0.receiveBufferSize = 1 << 20 }
        let l = try h.layer.listen(local: h.local, backlog: 8, now: h.now)
        try h.layer.setOption(l, .windowClamp(5000), now: h.now)
        h.inject(seq: h.peerSeq, ack: 0, flags: .syn, options: Harness.peerOptions(ws: 2))
        let synack = h.sent()
        #expect(synack[0].window == 5000 && synack[0].options.windowScale == 0)
    }

    @Test func maxSegmentLowersTheMSSAdvertisedAndUsed() throws {
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        try h.layer.setOption(c, .maxSegment(1000), now: h.now)
        h.poll()
        let syn = h.sent()
        #expect(syn[0].options.maxSegmentSize == 1000)
        h.injectTo(syn[0].src, seq: h.peerSeq, ack: syn[0].seq &+ 1, flags: [.syn, .ack], options: Harness.peerOptions(mss: 1460))
        _ = h.sent()
        #expect(h.write(c, bytes(3000)) == 3000)
        h.poll()
        let data = h.sent().filter { !$0.payload.isEmpty }
        #expect(data.map(\.payload.count) == [1000, 1000, 1000])
        #expect(h.layer.info(c)?.mss == 1000)
    }

    @Test func maxSegmentOnAListener() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 8, now: h.now)
        try h.layer.setOption(l, .maxSegment(700), now: h.now)
        h.inject(seq: h.peerSeq, ack: 0, flags: .syn, options: Harness.peerOptions(mss: 1460))
        #expect(h.sent()[0].options.maxSegmentSize == 700)
    }

    // MARK: SYNCNT, LINGER2, congestion control

    @Test func synRetriesPerSocket() throws {
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        try h.layer.setOption(c, .synRetries(2), now: h.now)
        h.poll()
        #expect(h.sent().count == 1)
        h.run(untilMs: 6_999)
        #expect(h.sent().count == 2)   // at 1 s and 3 s
        h.run(untilMs: 1)
        #expect(h.takeEvents() == [.failed(c, .timedOut)])
    }

    @Test func negativeLinger2ResetsAnOrphanInFinWait2() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        try h.layer.setOption(c, .finWait2Timeout(nil), now: h.now)
        h.layer.release(c, now: h.now)
        h.poll()
        let fin = h.sent()
        #expect(fin.count == 1 && fin[0].flags.contains(.fin))
        h.inject(ack: fin[0].seq &+ 1, flags: .ack)
        h.poll()
        let rst = h.sent()
        #expect(rst.count == 1 && rst[0].flags.contains(.rst))
        #expect(h.layer.connectionCount == 0)
    }

    @Test func congestionControlChangesOnAnEstablishedConnection() throws {
        let h = Harness()
        let c = h.activeEstablished()
        let before = try #require(h.layer.info(c))
        #expect(before.congestionControl == .cubic)
        try h.layer.setOption(c, .congestionControl(.newReno), now: h.now)
        let after = try #require(h.layer.info(c))
        #expect(after.congestionControl == .newReno && after.cwnd == before.cwnd)
    }

    // MARK: SO_REUSEPORT groups

    @Test func reusePortGroupSpreadsConnectionsByFourTuple() throws {
        let h = Harness()
        let opts = PortTable.Options(reusePort: true, uid: 33)
        let b1 = try h.layer.ports.bind(.tcp, h.local, options: opts)
        let b2 = try h.layer.ports.bind(.tcp, h.local, options: opts)
        let l1 = try h.layer.listen(binding: b1, backlog: 512, now: h.now)
        let l2 = try h.layer.listen(binding: b2, backlog: 512, now: h.now)
        var count = [l1: 0, l2: 0]
        var chosen: [UInt16: SocketHandle] = [:]
        for p in 0..<200 {
            h.remote = IPEndpoint(h.remote.address, UInt16(20_000 + p))
            h.inject(seq: 5000, ack: 0, flags: .syn, options: Harness.peerOptions())
            let synack = h.sent()
            #expect(synack.count == 1)
            h.inject(seq: 5001, ack: synack[0].seq &+ 1, flags: .ack)
            _ = h.takeEvents()
            for l in [l1, l2] {
                while let c = try h.layer.accept(l, now: h.now) {
                    count[l, default: 0] += 1
                    chosen[h.layer.remoteEndpoint(c)!.port] = l
                }
            }
        }
        #expect(count[l1]! + count[l2]! == 200)
        #expect(count[l1]! >= 70 && count[l2]! >= 70, "\(count)")
        // The same 4-tuple always lands on the same member (a reconnect after TIME-WAIT is gone).
        #expect(h.layer.listener(for: TCPConnKey(local: h.local, remote: IPEndpoint(h.remote.address, 20_000)),
                                 in: h.layer.listeners[h.local])?.handle == chosen[20_000])
        // One member closes: the other takes every new connection.
        h.layer.close(l1, now: h.now)
        for p in 0..<20 {
            h.remote = IPEndpoint(h.remote.address, UInt16(30_000 + p))
            h.inject(seq: 7000, ack: 0, flags: .syn, options: Harness.peerOptions())
            let synack = h.sent()
            h.inject(seq: 7001, ack: synack[0].seq &+ 1, flags: .ack)
        }
        var n = 0
        while try h.layer.accept(l2, now: h.now) != nil { n += 1 }
        #expect(n == 20)
    }

    @Test func secondListenerWithoutReusePortIsRefused() throws {
        let h = Harness()
        let b1 = try h.layer.ports.bind(.tcp, h.local, options: PortTable.Options(reuseAddress: true))
        _ = try h.layer.listen(binding: b1, backlog: 8, now: h.now)
        #expect(throws: SocketError.addressInUse) {
            let b2 = try h.layer.ports.bind(.tcp, h.local, options: PortTable.Options(reuseAddress: true))
            _ = try h.layer.listen(binding: b2, backlog: 8, now: h.now)
        }
    }

    // MARK: Introspection

    @Test func infoReportsFlightRTTVarianceAndCounters() throws {
        let h = Harness()
        let c = h.activeEstablished(options: Harness.peerOptions(sack: true))
        _ = h.write(c, bytes(3000))
        h.poll()
        let out = h.sent()
        let i = try #require(h.layer.info(c))
        #expect(i.bytesInFlight == 3000 && i.unackedSegments == out.count)
        #expect(i.segmentsOut >= UInt64(out.count) + 2 && i.dataSegmentsOut == UInt64(out.count))
        #expect(i.rttVariance != nil && i.sack)
        h.advance(ms: 30)
        h.injectTo(h.activeLocal!, seq: h.peerSeq, ack: out.last!.seq &+ UInt32(out.last!.payload.count), flags: .ack)
        let j = try #require(h.layer.info(c))
        #expect(j.bytesInFlight == 0 && j.bytesAcked == 3001)
        #expect(j.sinceAckReceived == .zero && j.sinceDataSent == .milliseconds(30))
        #expect(j.minRTT == .milliseconds(30))
    }
}

/// IP_TTL / IP_TOS in the headers the interface emits.
@Suite struct IPHeaderOptionTests {
    func ipHeader(_ frame: [UInt8]) -> (ttl: UInt8, tos: UInt8, proto: UInt8) { (frame[14 + 8], frame[14 + 1], frame[14 + 9]) }

    @Test func tcpSegmentsCarryTheSocketsTTLAndTOS() throws {
        let (stack, rec) = makeStack()
        stack.learnPeer()
        _ = rec.take()
        let c = try stack.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(peerIP, 80), now: t0)
        try stack.tcp.setOption(c, .timeToLive(7), now: t0)
        try stack.tcp.setOption(c, .typeOfService(0xb8), now: t0)
        _ = stack.poll(now: t0)
        let f = rec.take()
        #expect(f.count == 1)
        #expect(ipHeader(f[0]) == (7, 0xb8, IPProtocol.tcp))
    }

    @Test func defaultsAre64AndZero() throws {
        let (stack, rec) = makeStack()
        stack.learnPeer()
        _ = rec.take()
        _ = try stack.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(peerIP, 80), now: t0)
        _ = stack.poll(now: t0)
        #expect(ipHeader(rec.take()[0]) == (64, 0, IPProtocol.tcp))
    }

    @Test func udpDatagramsCarryTheSocketsTTLAndTOS() throws {
        let (stack, rec) = makeStack()
        stack.learnPeer()
        _ = rec.take()
        let u = try stack.udpOpen(local: IPEndpoint(.any, 0))
        try stack.udpSetIPOptions(u, IPSendOptions(timeToLive: 3, typeOfService: 0x10))
        try [UInt8]([1, 2, 3]).withUnsafeBytes { try stack.udpSend(u, to: IPEndpoint(peerIP, 9), UnsafeRawBufferPointer($0), now: t0) }
        let f = rec.take()
        #expect(f.count == 1)
        #expect(ipHeader(f[0]) == (3, 0x10, IPProtocol.udp))
    }
}

@Suite struct HandshakeRTTTests {
    @Test func handshakesAreTimedAtFullResolution() throws {
        for ts in [false, true] {
            let h = Harness()
            let l = try h.layer.listen(local: h.local, backlog: 8, now: h.now)
            h.inject(seq: h.peerSeq, ack: 0, flags: .syn, options: Harness.peerOptions(ts: ts ? (100, 0) : nil))
            let synack = h.sent()
            h.peerSeq &+= 1
            h.peerAck = synack[0].seq &+ 1
            h.now = h.now + .microseconds(300)
            var o = TCPSegmentOptions()
            if ts { o.timestamp = (101, synack[0].options.timestamp!.0) }
            h.inject(flags: .ack, options: o)
            let c = try #require(try h.layer.accept(l, now: h.now))
            #expect(h.layer.info(c)?.srtt == .microseconds(300), "timestamps \(ts)")
            // The active side too.
            let a = Harness()
            let ac = try a.layer.connect(local: IPEndpoint(a.local.address, 0), remote: a.remote, now: a.now)
            a.poll()
            let syn = a.sent()
            a.now = a.now + .microseconds(250)
            a.injectTo(syn[0].src, seq: a.peerSeq, ack: syn[0].seq &+ 1, flags: [.syn, .ack],
                       options: Harness.peerOptions(ts: ts ? (7, syn[0].options.timestamp!.0) : nil))
            #expect(a.layer.info(ac)?.srtt == .microseconds(250), "timestamps \(ts)")
        }
    }
}
