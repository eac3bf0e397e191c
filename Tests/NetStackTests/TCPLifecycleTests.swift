import Testing
@testable import NetStack

/// Handles, release, orphaned connections, TIME-WAIT reuse, ISNs and ports.
@Suite struct TCPLifecycleTests {
    @Test func testEstablishedReleaseFinishesWithoutHandle() throws {
        let h = Harness { $0.timeWait = .seconds(1) }
        let c = h.passiveEstablished()
        h.layer.release(c, now: h.now)
        #expect(h.layer.info(c) == nil)
        #expect(throws: SocketError.invalidHandle) { _ = try h.layer.send(c, UnsafeRawBufferPointer(start: nil, count: 0), now: h.now) }
        h.poll()
        let fin = h.sent()
        #expect(fin.count == 1 && fin[0].flags == [.fin, .ack])
        var seen: [(SocketHandle?, TCPState)] = []
        h.layer.forEachConnection { handle, info in if info.state != .listen { seen.append((handle, info.state)) } }
        #expect(seen.count == 1 && seen[0].0 == nil && seen[0].1 == .finWait1)
        h.inject(ack: fin[0].seq &+ 1, flags: [.fin, .ack])
        #expect(h.sent().last?.ack == h.peerSeq &+ 1)
        #expect(h.layer.connectionCount == 1)   // TIME-WAIT, handle-less
        #expect(h.takeEvents().isEmpty)         // no events for a released handle
        h.run(untilMs: 1001)
        #expect(h.layer.connectionCount == 0)
    }

    /// TIME-WAIT must not make new connections fail: at MaxConnections the oldest one goes.
    @Test func testTimeWaitYieldsToNewConnectionsAtTheLimit() throws {
        let h = Harness { $0.maxConnections = 3 }
        var closed: [SocketHandle] = []
        for _ in 0..<3 {
            let c = h.activeEstablished()
            try h.layer.shutdownWrite(c, now: h.now)
            h.poll()
            let fin = h.sent()[0]
            h.injectTo(h.activeLocal!, seq: h.peerSeq, ack: fin.seq &+ 1, flags: [.fin, .ack])
            h.peerSeq &+= 1
            #expect(h.state(c) == .timeWait)
            _ = h.sent()
            closed.append(c)
        }
        for c in closed { h.layer.release(c, now: h.now) }
        #expect(h.layer.connectionCount == 3)
        // Live connections fill the table: the fourth connect would need a TIME-WAIT slot...
        let live = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        #expect(h.layer.connectionCount == 3)
        #expect(h.state(live) == .synSent)
        _ = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        _ = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        // ...and once only live ones are left, the limit holds.
        #expect(throws: SocketError.noBufferSpace) {
            _ = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        }
        var states: [TCPState] = []
        h.layer.forEachConnection { _, info in states.append(info.state) }
        #expect(states.count == 3 && states.allSatisfy { $0 == .synSent })
    }

    /// A connection that leaves TIME-WAIT is freed: the TIME-WAIT queue held every one it was
    /// given until the table filled up, so below MaxConnections each closed connection's object
    /// stayed allocated for good (ztapd's RSS grew by ~13 MiB per 10k connections).
    @Test func testTimeWaitConnectionsAreFreedWhenTheyExpire() throws {
        let h = Harness { $0.timeWait = .seconds(1); $0.maxConnections = 1000 }
        final class Weak { weak var c: TCPConnection?; init(_ c: TCPConnection?) { self.c = c } }
        func closeActive() throws -> Weak {
            let c = h.activeEstablished()
            let w = Weak(h.layer.connection(c))
            try h.layer.shutdownWrite(c, now: h.now)
            h.poll()
            let fin = h.sent()[0]
            h.injectTo(h.activeLocal!, seq: h.peerSeq, ack: fin.seq &+ 1, flags: [.fin, .ack])
            h.peerSeq &+= 1
            #expect(h.state(c) == .timeWait)
            _ = h.sent()
            h.layer.release(c, now: h.now)
            return w
        }
        var first: [Weak] = []
        for _ in 0..<5 { first.append(try closeActive()) }
        #expect(first.allSatisfy { $0.c != nil })   // alive while in TIME-WAIT
        #expect(h.layer.connectionCount == 5)
        h.run(untilMs: 1001)
        #expect(h.layer.connectionCount == 0)
        #expect(first.allSatisfy { $0.c == nil })
        #expect(h.layer.timeWaitQueue.count == h.layer.twHead)
        // The queue goes on in order: a later batch expires and is freed the same way.
        var second: [Weak] = []
        for _ in 0..<3 { second.append(try closeActive()) }
        #expect(h.layer.timeWaitQueue.count - h.layer.twHead == 3)
        h.run(untilMs: 1001)
        #expect(second.allSatisfy { $0.c == nil })
        #expect(h.layer.timeWaitQueue.isEmpty)
    }

    @Test func testOrphanFinWait2Timeout() throws {
        let h = Harness { $0.finTimeout = .seconds(5) }
        let c = h.passiveEstablished()
        h.layer.close(c, now: h.now)
        h.layer.release(c, now: h.now)
        h.poll()
        let fin = h.sent()[0]
        h.inject(ack: fin.seq &+ 1, flags: .ack)
        #expect(h.layer.connectionCount == 1)
        h.run(untilMs: 4999)
        #expect(h.layer.connectionCount == 1)
        h.run(untilMs: 2)
        #expect(h.layer.connectionCount == 0)
    }

    @Test func testTimeWaitSynReopens() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        try h.layer.shutdownWrite(c, now: h.now)
        h.poll()
        let fin = h.sent()[0]
        h.inject(ack: fin.seq &+ 1, flags: [.fin, .ack])
        #expect(h.state(c) == .timeWait)
        _ = h.sent()
        h.inject(seq: h.peerSeq &+ 100_000, ack: 0, flags: .syn)
        let out = h.sent()
        #expect(out.count == 1)
        #expect(out[0].flags == [.syn, .ack])
        #expect(out[0].ack == h.peerSeq &+ 100_001)
        #expect(h.layer.connectionCount == 1)
        // An old SYN (not above RCV.NXT) is answered with an ACK instead.
    }

    /// RFC 6191: with timestamps, a SYN whose TSval is newer than the TIME-WAIT's last one opens
    /// a new connection even when its sequence number is not above RCV.NXT (a client whose ISN
    /// clock lagged); an older TSval is refused (PAWS) even with a higher sequence number.
    @Test func testTimeWaitSynWithNewerTimestampReopens() throws {
        for (tsval, seqDelta, reopens) in [(UInt32(5000), UInt32(0), true), (UInt32(500), UInt32(100_000), false)] {
            let h = Harness()
            let c = h.passiveEstablished(options: Harness.peerOptions(ts: (1000, 0)))
            try h.layer.shutdownWrite(c, now: h.now)
            h.poll()
            let fin = h.sent()[0]
            var o = TCPSegmentOptions()
            o.timestamp = (1001, 0)
            h.inject(ack: fin.seq &+ 1, flags: [.fin, .ack], options: o)
            #expect(h.state(c) == .timeWait)
            _ = h.sent()
            var syn = Harness.peerOptions(ts: (tsval, 0))
            syn.sackPermitted = false
            h.inject(seq: h.peerSeq &+ seqDelta, ack: 0, flags: .syn, options: syn)
            let out = h.sent()
            #expect(out.contains { $0.flags == [.syn, .ack] } == reopens, "tsval \(tsval): \(out)")
            if !reopens { #expect(h.state(c) == .timeWait) }
        }
    }

    @Test func testStaleHandleAfterReleaseIsRejected() throws {
        let h = Harness()
        let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        h.layer.abort(c, now: h.now)
        #expect(h.layer.info(c) == nil)
        #expect(throws: SocketError.invalidHandle) { try h.layer.shutdownWrite(c, now: h.now) }
        let c2 = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        #expect(c2.index == c.index && c2.generation != c.generation)   // slot reused, generation bumped
        #expect(h.layer.info(c2)?.state == .synSent)
    }

    @Test func testConnectEphemeralPortsAreDistinct() throws {
        let h = Harness()
        var ports = Set<UInt16>()
        for _ in 0..<200 {
            let c = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
            let p = try #require(h.layer.localEndpoint(c)?.port)
            #expect(PortTable.defaultEphemeral.contains(p))
            ports.insert(p)
        }
        #expect(ports.count == 200)
        #expect(h.layer.connectionCount == 200)
        // The same explicit 4-tuple twice is refused.
        let fixed = IPEndpoint(h.local.address, 50000)
        if !ports.contains(50000) {
            _ = try h.layer.connect(local: fixed, remote: h.remote, now: h.now)
            #expect(throws: SocketError.addressInUse) { _ = try h.layer.connect(local: fixed, remote: h.remote, now: h.now) }
        }
    }

    @Test func testIsnDependsOnTupleAndClock() {
        let layer = TCPLayer(config: TCPConfig(), random: XorShiftRandom(seed: 7))
        let k1 = TCPConnKey(localAddress: IPAddress(hi: 0, lo: 1), remoteAddress: IPAddress(hi: 0, lo: 2), localPort: 3, remotePort: 4)
        let k2 = TCPConnKey(localAddress: IPAddress(hi: 0, lo: 1), remoteAddress: IPAddress(hi: 0, lo: 2), localPort: 3, remotePort: 5)
        let t = Instant.milliseconds(5000)
        #expect(layer.makeISN(k1, now: t) != layer.makeISN(k2, now: t))
        // The clock part advances one per 4 µs (RFC 6528).
        #expect(layer.makeISN(k1, now: t + .milliseconds(1)) - layer.makeISN(k1, now: t) == 250)
        // Another secret, another ISN.
        let other = TCPLayer(config: TCPConfig(), random: XorShiftRandom(seed: 8))
        #expect(other.makeISN(k1, now: t) != layer.makeISN(k1, now: t))
    }

    @Test func testPollIsIdleWhenNothingIsDue() throws {
        let h = Harness()
        let c = h.passiveEstablished()
        #expect(h.poll() == nil)
        _ = h.write(c, bytes(10))
        let d = try #require(h.poll())
        #expect(d == h.now + .milliseconds(200))   // the RTO
        h.inject(ack: h.peerAck &+ 10, flags: .ack)
        // The stale heap entry may still wake us once; after that, nothing.
        h.run(untilMs: 300)
        #expect(h.poll() == nil)
    }

    @Test func testListenerCloseResetsPendingConnections() throws {
        let h = Harness()
        let l = try h.layer.listen(local: h.local, backlog: 4, now: h.now)
        h.inject(seq: 1000, ack: 0, flags: .syn)
        let sa = h.sent()[0]
        h.inject(seq: 1001, ack: sa.seq &+ 1, flags: .ack)
        #expect(h.layer.connectionCount == 1)
        h.layer.close(l, now: h.now)
        h.poll()
        let out = h.sent()
        #expect(out.count == 1 && out[0].flags == .rst)
        #expect(h.layer.connectionCount == 0)
        h.inject(seq: 5000, ack: 0, flags: .syn)
        #expect(h.sent().first?.flags == [.rst, .ack])   // port closed now
        #expect(throws: SocketError.invalidHandle) { _ = try h.layer.accept(SocketHandle(index: 999, generation: 1), now: h.now) }
    }
}

@Suite struct TCPSourceAddressTests {
    @Test func testConnectWithUnspecifiedLocalAddressUsesResolver() throws {
        let h = Harness()
        #expect(throws: SocketError.networkUnreachable) {
            _ = try h.layer.connect(local: IPEndpoint(.any, 0), remote: h.remote, now: h.now)
        }
        h.layer.sourceAddressResolver = { dst in dst == IPv4Address(10, 0, 0, 2) ? IPAddress(IPv4Address(10, 0, 0, 1)) : nil }
        let c = try h.layer.connect(local: IPEndpoint(.any, 0), remote: h.remote, now: h.now)
        #expect(h.layer.localEndpoint(c)?.address == IPv4Address(10, 0, 0, 1))
        h.poll()
        let syn = h.sent()
        #expect(syn.count == 1 && syn[0].checksumOK && syn[0].src.address == IPv4Address(10, 0, 0, 1))
    }
}
