import Testing
@testable import NetStack

/// Counts what `RingMemory` asks of the kernel, with heap memory behind it.
final class CountingPages: PageSource {
    var maps = 0, unmaps = 0, discards = 0, discardedBytes = 0
    var live: [UnsafeMutableRawPointer: Int] = [:]
    func map(_ bytes: Int) -> UnsafeMutableRawPointer? {
        maps += 1
        let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        live[p] = bytes
        return p
    }
    func unmap(_ p: UnsafeMutableRawPointer, _ bytes: Int) {
        unmaps += 1
        precondition(live.removeValue(forKey: p) == bytes)
        p.deallocate()
    }
    func discard(_ p: UnsafeMutableRawPointer, _ bytes: Int) {
        discards += 1
        discardedBytes += bytes
    }
}

/// Ring memory: chunks from slabs and mappings, the warm reserve, what goes back to the kernel.
@Suite struct RingMemoryTests {
    @Test func chunkSizes() {
        #expect(RingMemory.chunkSize(for: 1) == 4096)
        #expect(RingMemory.chunkSize(for: 4097) == 8192)
        #expect(RingMemory.chunkSize(for: 65536) == 65536)
        #expect(RingMemory.chunkSize(for: 65537) == 69632)   // page-rounded past the slab classes
        #expect(RingMemory.chunkSize(for: 4 << 20) == 4 << 20)
    }

    @Test func smallChunksShareOneSlabAndStayWarmUpToTheLimit() {
        let pages = CountingPages()
        let m = RingMemory(pages: pages, warmLimit: 128 << 10)
        var chunks: [UnsafeMutableRawPointer] = []
        for _ in 0..<16 { chunks.append(m.allocate(capacity: 64 << 10).0) }   // 16 x 64 KiB = one 1 MiB slab
        #expect(pages.maps == 1)
        #expect(Set(chunks).count == 16)
        #expect(m.inUse == 1 << 20)
        _ = m.allocate(capacity: 64 << 10)
        #expect(pages.maps == 2)
        // Freed: two stay warm (128 KiB), the rest lose their pages.
        for p in chunks { m.free(p, size: 64 << 10) }
        #expect(m.warmBytes == 128 << 10)
        #expect(pages.discards == 14 && pages.discardedBytes == 14 * (64 << 10))
        // Taken again: warm ones first, then cold ones, no new mapping.
        for _ in 0..<16 { _ = m.allocate(capacity: 60 << 10) }
        #expect(pages.maps == 2 && m.warmBytes == 0)
        m.trim()
        #expect(m.warmBytes == 0)
    }

    @Test func largeChunksAreMappingsOfTheirOwn() {
        let pages = CountingPages()
        let m = RingMemory(pages: pages)
        let (p, n) = m.allocate(capacity: 1 << 20)
        #expect(n == 1 << 20 && pages.maps == 1 && m.mapped == 1 << 20)
        m.free(p, size: n)
        #expect(pages.unmaps == 1 && m.mapped == 0 && m.inUse == 0)
    }
}

/// A ring with lazy memory: nothing held until written, resizing keeps what is stored.
@Suite struct LazyRingTests {
    @Test func storageOnlyWhileHoldingBytes() {
        let m = RingMemory(pages: CountingPages())
        let r = RingBuffer(capacity: 10_000, memory: m)
        #expect(r.storageBytes == 0 && r.free == 10_000)
        let b = bytes(3000)
        b.withUnsafeBytes { _ = r.enqueue($0.baseAddress!, count: 3000) }
        #expect(r.storageBytes == 16384 && m.inUse == 16384)
        r.discard(3000)
        r.releaseStorage()
        #expect(r.storageBytes == 0 && m.inUse == 0 && r.isEmpty)
        // The free regions of an empty ring without memory get memory.
        let (a, _) = r.freeRegions()
        #expect(a.count == 10_000 && r.storageBytes > 0)
    }

    @Test func resizeKeepsWrappedAndParkedBytes() {
        let m = RingMemory(pages: CountingPages())
        let r = RingBuffer(capacity: 8, memory: m)
        let b = bytes(8)
        b.withUnsafeBytes { _ = r.enqueue($0.baseAddress!, count: 6) }
        r.discard(5)                                          // head at 5, one byte readable
        b.withUnsafeBytes { _ = r.enqueue($0.baseAddress! + 6, count: 2) }   // wraps
        // Two bytes parked past the tail (out of order), then grow keeping 5 bytes from the head.
        [UInt8(90), 91].withUnsafeBytes { _ = r.write(at: 3, from: $0.baseAddress!, count: 2) }
        r.resize(to: 64, keeping: 5)
        #expect(r.capacity == 64 && r.count == 3)
        r.commit(2)
        var out = [UInt8](repeating: 0, count: 5)
        out.withUnsafeMutableBytes { _ = r.dequeue(into: $0.baseAddress!, count: 5) }
        #expect(out == [b[5], b[6], b[7], 90, 91])
    }
}

/// TCP's rings follow the load (TCPBufferTuning.swift), with a virtual clock.
@Suite struct TCPBufferTuningTests {
    /// A connection with a 4 MiB maximum, window scaling and timestamps.
    func bigHarness(_ configure: (inout TCPConfig) -> Void = { _ in }) -> (Harness, SocketHandle) {
        let h = Harness { c in
            c.receiveBufferSize = 4 << 20
            c.sendBufferSize = 4 << 20
            configure(&c)
        }
        let s = h.passiveEstablished(options: Harness.peerOptions(ws: 7, ts: (1, 0)))
        return (h, s)
    }

    func conn(_ h: Harness, _ s: SocketHandle) -> TCPConnection { h.layer.connection(s)! }

    /// The app reads everything there is.
    func readAll(_ h: Harness, _ s: SocketHandle) { while !h.read(s).isEmpty {} }

    /// The peer sends `n` bytes in MSS segments (with timestamps, as negotiated).
    func peerSends(_ h: Harness, _ n: Int) {
        var left = n
        while left > 0 {
            let k = min(left, 32 << 10)   // big segments keep the test fast; TCP takes them
            var o = TCPSegmentOptions()
            o.timestamp = (2, 0)
            h.inject(flags: [.ack], options: o, payload: bytes(k))
            h.peerSeq &+= UInt32(k)
            left -= k
        }
    }

    @Test func ringsStartSmallAndHoldNoMemoryUntilUsed() {
        let (h, s) = bigHarness()
        let c = conn(h, s)
        #expect(c.rx!.capacity == 64 << 10 && c.tx!.capacity == 64 << 10)
        #expect(c.rx!.storageBytes == 0 && c.tx!.storageBytes == 0)
        #expect(c.rcvShift == 7)   // chosen for the 4 MiB maximum at the SYN
        // The window advertised is the initial ring's.
        h.poll()
        peerSends(h, 100)
        h.poll()
        let ack = h.sent().last!
        #expect(Int(ack.window) << 7 <= 64 << 10 && Int(ack.window) << 7 > 60 << 10)
        // Read: the small ring's memory goes back at once.
        #expect(h.read(s).count == 100)
        #expect(c.rx!.storageBytes == 0 && h.layer.ringMemory.inUse == 0)
    }

    @Test func receiveRingGrowsWithWhatTheAppTakesPerRoundTrip() {
        let (h, s) = bigHarness()
        let c = conn(h, s)
        var lastEdge = c.rcvAdvEdge
        for _ in 0..<12 {
            // A round trip later, a window's worth arrives and the app reads it at once.
            h.advance(ms: 5)
            peerSends(h, c.rx!.free)
            readAll(h, s)
            h.poll()
            #expect(!(c.rcvAdvEdge < lastEdge))   // the right edge never moves back
            lastEdge = c.rcvAdvEdge
        }
        #expect(c.rx!.capacity == 4 << 20)
        #expect(c.rx!.storageBytes > 0)   // big now: kept while busy
        // Idle: the memory goes back after ringIdleRelease, and the target drops, but the ring
        // keeps the size the advertised window needs.
        h.run(untilMs: 1500)
        #expect(c.rx!.storageBytes == 0 && h.layer.ringMemory.inUse == 0)
        #expect(c.rxTarget == 64 << 10)
        #expect(c.rx!.capacity == 4 << 20)
        // The next ACKs advertise no more than the target beyond what is left of the window;
        // once the advertised window fits the target and the ring is empty, the ring shrinks.
        var rounds = 0
        while c.rx!.capacity > 64 << 10 && rounds < 200 {
            let room = min(c.rcvAdvEdge - c.rcvNxt, 64 << 10)
            peerSends(h, room)
            readAll(h, s)
            h.poll()
            #expect(!(c.rcvAdvEdge < lastEdge))
            lastEdge = c.rcvAdvEdge
            rounds += 1
        }
        #expect(c.rx!.capacity == 64 << 10)
        #expect(!(c.rcvNxt + (64 << 10) < c.rcvAdvEdge))
    }

    @Test func aSlowReaderDoesNotGrowTheRing() {
        let (h, s) = bigHarness()
        let c = conn(h, s)
        for _ in 0..<6 {
            h.advance(ms: 5)
            peerSends(h, 8 << 10)
            _ = h.read(s, max: 8 << 10)
            h.poll()
        }
        #expect(c.rx!.capacity == 64 << 10)
    }

    @Test func lockedReceiveSizeIsNotTuned() throws {
        let (h, s) = bigHarness()
        try h.layer.setOption(s, .receiveBufferSize(128 << 10), now: h.now)
        let c = conn(h, s)
        #expect(c.rx!.capacity == 128 << 10 && c.rxLocked)
        for _ in 0..<6 {
            h.advance(ms: 5)
            peerSends(h, c.rx!.free)
            _ = h.read(s)
            h.poll()
        }
        #expect(c.rx!.capacity == 128 << 10)
    }

    @Test func sendRingGrowsWithTheCongestionWindowAndGivesMemoryBack() {
        let (h, s) = bigHarness()
        let c = conn(h, s)
        let chunk = bytes(256 << 10)
        var grew = false
        for _ in 0..<12 {
            _ = h.write(s, chunk)
            h.poll()
            // The peer acknowledges everything sent, with a big window.
            let sent = h.sent().filter { !$0.payload.isEmpty }
            if let last = sent.last {
                var o = TCPSegmentOptions()
                o.timestamp = (3, last.options.timestamp?.value ?? 0)
                h.advance(ms: 1)
                h.inject(ack: last.seq &+ UInt32(last.payload.count), flags: .ack, window: 0xFFFF, options: o)
            }
            if c.tx!.capacity > 64 << 10 { grew = true }
        }
        #expect(grew)
        #expect(c.tx!.capacity <= 2 * max(c.cc.cwnd, 64 << 10))
        // Drain everything that is left, then let the idle timer run.
        for _ in 0..<200 where !c.tx!.isEmpty {
            h.poll()
            let sent = h.sent().filter { !$0.payload.isEmpty }
            guard let last = sent.last else { break }
            h.advance(ms: 1)
            var o = TCPSegmentOptions()
            o.timestamp = (3, last.options.timestamp?.value ?? 0)
            h.inject(ack: last.seq &+ UInt32(last.payload.count), flags: .ack, window: 0xFFFF, options: o)
        }
        #expect(c.tx!.isEmpty)
        h.run(untilMs: 1500)
        #expect(c.tx!.storageBytes == 0)
        #expect(c.tx!.capacity == 64 << 10)
        #expect(h.layer.ringMemory.inUse == 0)
    }

    @Test func anAppThatClosedHasItsLastBytesTakenUpToTheMaximum() throws {
        let (h, s) = bigHarness { c in c.sendBufferSize = 256 << 10 }
        let c = conn(h, s)
        #expect(h.write(s, bytes(128 << 10)) == 64 << 10)   // the peer's window holds the rest back
        #expect(h.layer.growSendBufferForClose(s, pending: 64 << 10, now: h.now))
        #expect(c.tx!.capacity == 128 << 10 && c.tx!.count == 64 << 10)
        #expect(h.layer.growSendBufferForClose(s, pending: 1 << 20, now: h.now))
        #expect(c.tx!.capacity == 256 << 10)   // the maximum
        #expect(!h.layer.growSendBufferForClose(s, pending: 1 << 20, now: h.now))
        // A size the app fixed stays.
        let (h2, s2) = bigHarness()
        try h2.layer.setOption(s2, .sendBufferSize(32 << 10), now: h2.now)
        _ = h2.write(s2, bytes(32 << 10))
        #expect(!h2.layer.growSendBufferForClose(s2, pending: 1 << 20, now: h2.now))
    }

    @Test func lockedSendSizeIsNotTuned() throws {
        let (h, s) = bigHarness()
        try h.layer.setOption(s, .sendBufferSize(32 << 10), now: h.now)
        #expect(h.write(s, bytes(100 << 10)) == 32 << 10)
        #expect(conn(h, s).tx!.capacity == 32 << 10)
    }
}

/// Ephemeral ports like Linux: the wide range, per-destination order, TIME-WAIT reuse.
@Suite struct EphemeralPortTests {
    @Test func linuxRangeByDefaultAndParsedFromProc() {
        #expect(PortTable.defaultEphemeral == 32768...60999)
        #expect(PortTable.parseRange("32768\t60999\n") == 32768...60999)
        #expect(PortTable.parseRange("1024 65535") == 1024...65535)
        #expect(PortTable.parseRange("60999 32768") == nil)
        #expect(PortTable.parseRange("0 100") == nil)
        #expect(PortTable.parseRange("junk") == nil)
    }

    @Test func connectsToOneDestinationWalkTheRange() throws {
        let t = PortTable(ephemeral: 40000...40999, seed: 5)
        let a = IPAddress(IPv4Address(10, 0, 0, 1)), dst = IPEndpoint(IPv4Address(10, 0, 0, 2), 80)
        var ports: [UInt16] = []
        var candidates = 0
        for _ in 0..<5 {
            // All earlier connections still hold their 4-tuples: one candidate each all the same.
            ports.append(try t.claimForConnect(address: a, remote: dst) { p in
                candidates += 1
                return !ports.contains(p)
            })
        }
        #expect(candidates == 5)
        for i in 1..<5 {
            #expect(ports[i] == (ports[i - 1] == 40999 ? 40000 : ports[i - 1] + 1))
        }
        // A taken candidate is skipped, and the next connect starts after it.
        let next = ports[4] == 40999 ? UInt16(40000) : ports[4] + 1
        let p = try t.claimForConnect(address: a, remote: dst) { $0 != next }
        #expect(p != next)
    }

    /// An active open that closed first sits in TIME-WAIT on port P; with a one-port range the
    /// next connect to the same destination needs P.
    func timeWaitOnTheOnlyPort(timestamps: Bool) -> (Harness, SocketHandle, TCPConnection) {
        let h = Harness { c in c.timestamps = timestamps }
        let ports = PortTable(ephemeral: 50000...50000, seed: 1)
        let layer = TCPLayer(config: h.layer.config, random: XorShiftRandom(seed: 9), ports: ports)
        let hh = Harness(layer: layer)
        let s = hh.activeEstablished(options: Harness.peerOptions(ts: timestamps ? (7, 0) : nil))
        let c = hh.layer.connection(s)!
        hh.layer.close(s, now: hh.now)
        hh.poll()
        let fin = hh.sent().last!
        #expect(fin.flags.contains(.fin))
        var o = TCPSegmentOptions()
        if timestamps { o.timestamp = (8, fin.options.timestamp!.value) }
        hh.injectTo(hh.activeLocal!, seq: hh.peerSeq, ack: fin.seq &+ 1, flags: [.fin, .ack], options: o)
        hh.poll()
        #expect(c.state == .timeWait)
        hh.layer.release(s, now: hh.now)
        return (hh, s, c)
    }

    @Test func timeWaitWithTimestampsIsTakenOverAfterASecond() throws {
        let (h, _, old) = timeWaitOnTheOnlyPort(timestamps: true)
        #expect(throws: SocketError.addressNotAvailable) {
            try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        }
        h.advance(ms: 1000)
        let n = try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        #expect(h.layer.localEndpoint(n)?.port == 50000)
        #expect(old.state == .closed && h.layer.timeWaitReused == 1)
        let fresh = h.layer.connection(n)!
        #expect(old.sndMax < fresh.iss)
        h.poll()
        let syn = h.sent().last!
        #expect(syn.flags == .syn && syn.src.port == 50000)
    }

    @Test func timeWaitWithoutTimestampsIsNotTakenOver() throws {
        let (h, _, _) = timeWaitOnTheOnlyPort(timestamps: false)
        h.advance(ms: 5000)
        #expect(throws: SocketError.addressNotAvailable) {
            try h.layer.connect(local: IPEndpoint(h.local.address, 0), remote: h.remote, now: h.now)
        }
    }
}

/// Pays for rings like the intercept's per-user budget, with a fixed allowance.
final class FakeRingBudget: RingBudget {
    var allowance: Int
    var granted = 0, refused = 0, given = 0
    init(allowance: Int) { self.allowance = allowance }
    func ringsMayGrow(_ handle: SocketHandle, by bytes: Int) -> Bool {
        guard granted - given + bytes <= allowance else { refused += 1; return false }
        granted += bytes
        return true
    }
    func ringsShrank(_ handle: SocketHandle, by bytes: Int) { given += bytes }
}

/// Growth asks the owner's budget; what goes back is told; rings of closed connections go.
@Suite struct TCPRingBudgetTests {
    func grow(_ h: Harness, _ s: SocketHandle, rounds: Int) {
        let c = h.layer.connection(s)!
        for _ in 0..<rounds {
            h.advance(ms: 5)
            var left = c.rx!.free
            while left > 0 {
                let k = min(left, 32 << 10)
                var o = TCPSegmentOptions()
                o.timestamp = (2, 0)
                h.inject(flags: [.ack], options: o, payload: bytes(k))
                h.peerSeq &+= UInt32(k)
                left -= k
            }
            while !h.read(s).isEmpty {}
            h.poll()
        }
    }

    func harness() -> (Harness, SocketHandle) {
        let h = Harness { c in c.receiveBufferSize = 4 << 20; c.sendBufferSize = 4 << 20 }
        let s = h.passiveEstablished(options: Harness.peerOptions(ws: 7, ts: (1, 0)))
        return (h, s)
    }

    @Test func growthStopsAtTheBudgetAndShrinkingGivesItBack() {
        let (h, s) = harness()
        let budget = FakeRingBudget(allowance: 448 << 10)   // 64 KiB -> 512 KiB at most
        h.layer.ringBudget = budget
        let c = h.layer.connection(s)!
        grow(h, s, rounds: 12)
        #expect(c.rx!.capacity <= 512 << 10 && c.rx!.capacity > 64 << 10)
        #expect(budget.granted == c.rx!.capacity - (64 << 10) && budget.refused > 0)
        // Idle: the target drops and, once the window allows, the ring shrinks and says so.
        h.run(untilMs: 1500)
        var rounds = 0
        while c.rx!.capacity > 64 << 10 && rounds < 200 {
            let room = min(c.rcvAdvEdge - c.rcvNxt, 64 << 10)
            var o = TCPSegmentOptions()
            o.timestamp = (3, 0)
            h.inject(flags: [.ack], options: o, payload: bytes(room))
            h.peerSeq &+= UInt32(room)
            while !h.read(s).isEmpty {}
            h.poll()
            rounds += 1
        }
        #expect(c.rx!.capacity == 64 << 10)
        #expect(budget.given == budget.granted)
    }

    @Test func fixingTheSizeGivesTheGrowthBack() throws {
        let (h, s) = harness()
        let budget = FakeRingBudget(allowance: 64 << 20)
        h.layer.ringBudget = budget
        grow(h, s, rounds: 4)
        #expect(budget.granted > 0)
        try h.layer.setOption(s, .receiveBufferSize(256 << 10), now: h.now)
        #expect(budget.given == budget.granted)
        #expect(h.layer.connection(s)!.rx!.capacity == 256 << 10)
    }

    /// Regression: a closed connection's grown ring, read by the app after the end, armed the
    /// idle timer on a closed connection, and poll() ran its due heap entry for ever.
    @Test func readingAClosedConnectionsGrownRingArmsNoTimer() {
        let (h, s) = harness()
        let c = h.layer.connection(s)!
        grow(h, s, rounds: 6)
        #expect(c.rx!.capacity > RingMemory.smallLimit)
        h.inject(flags: [.ack], payload: bytes(100 << 10))
        h.peerSeq &+= 100 << 10
        h.inject(flags: [.rst, .ack])
        #expect(c.state == .closed)
        #expect(c.tx == nil)   // nothing more to send: its memory went at once
        #expect(h.read(s).count == 100 << 10)
        #expect(c.timers.next == nil)
        #expect(c.rx == nil || c.rx!.storageBytes == 0)
        h.advance(ms: 5000)
        #expect(h.poll() == nil)
        h.layer.release(s, now: h.now)
        #expect(h.layer.ringMemory.inUse == 0)
    }

    /// Memory follows the connections: none held by idle ones, all back when they end.
    @Test func idleConnectionsHoldNoRingMemoryAndEndedOnesGiveItAllBack() throws {
        let h = Harness { c in c.receiveBufferSize = 4 << 20; c.sendBufferSize = 4 << 20 }
        let l = try h.layer.listen(local: h.local, backlog: 128, now: h.now)
        var socks: [SocketHandle] = []
        for i in 0..<100 {
            let peer = IPEndpoint(h.remote.address, UInt16(20000 + i))
            h.inject(seq: 5000, ack: 0, flags: .syn, options: Harness.peerOptions(), from: peer)
            let synack = h.sent().last!
            h.inject(seq: 5001, ack: synack.seq &+ 1, flags: .ack, from: peer)
            socks.append(try #require(try h.layer.accept(l, now: h.now)))
            // Some traffic each way, all read and acknowledged.
            h.inject(seq: 5001, ack: synack.seq &+ 1, flags: [.ack, .psh], payload: bytes(3000), from: peer)
            #expect(h.read(socks[i]).count == 3000)
            #expect(h.write(socks[i], bytes(2000)) == 2000)
            h.poll()
            let out = h.sent().filter { !$0.payload.isEmpty }
            h.inject(seq: 8001, ack: out.last!.seq &+ UInt32(out.last!.payload.count), flags: .ack, from: peer)
        }
        #expect(h.layer.ringMemory.inUse == 0)
        for s in socks { h.layer.close(s, now: h.now); h.layer.release(s, now: h.now) }
        h.poll()
        #expect(h.layer.ringMemory.inUse == 0)
        #expect(h.layer.ringMemory.warmBytes <= h.layer.ringMemory.warmLimit)
    }
}
