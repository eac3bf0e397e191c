import Testing
@testable import NetStack

/// Bulk transfers in both directions over a lossy, duplicating, reordering link.
let debugLink = false
@Suite struct TCPLossyLinkTests {
    struct Outcome {
        var aToB: Bool; var bToA: Bool; var statesOK: Bool; var simulatedMs: UInt64
        /// Simulated time until both sides had received everything (TIME-WAIT excluded).
        var deliveredMs: UInt64 = 0
    }

    static func transfer(size: Int, loss: Double, seed: UInt64, cc: CongestionControl = .cubic,
                         mtu: Int = 1500, bufferSize: Int = 256 << 10, delay: Duration = .milliseconds(5),
                         jitter: Duration = .milliseconds(3), tweak: (inout TCPConfig) -> Void = { _ in }) -> Outcome {
        var cfg = TCPConfig()
        cfg.receiveBufferSize = bufferSize
        cfg.sendBufferSize = bufferSize
        cfg.timeWait = .seconds(2)
        cfg.congestionControl = cc
        cfg.maxRetransmissions = 30
        cfg.synRetries = 20
        cfg.maxRTO = .seconds(4)
        tweak(&cfg)
        let link = SimLink(config: cfg, seed: seed)
        if debugLink { link.trace = [] }
        link.mtu = mtu
        link.delay = delay
        link.jitter = jitter
        link.loss = loss
        link.duplicate = loss / 2
        link.reorder = loss
        let addrA = IPv4Address(10, 1, 0, 1), addrB = IPv4Address(10, 1, 0, 2)
        let l = try! link.b.listen(local: IPEndpoint(addrB, 7000), backlog: 4, now: link.now)
        let ca = try! link.a.connect(local: IPEndpoint(addrA, 0), remote: IPEndpoint(addrB, 7000), now: link.now)
        var cb: SocketHandle?
        let dataAB = bytes(size, seed: 3)
        let dataBA = bytes(size, seed: 77)
        var sentAB = 0, sentBA = 0
        var gotAB: [UInt8] = [], gotBA: [UInt8] = []
        gotAB.reserveCapacity(size); gotBA.reserveCapacity(size)
        var closedA = false, closedB = false
        var steps = 0
        var deliveredAt: Instant?
        var buf = [UInt8](repeating: 0, count: 64 << 10)

        func pump(_ layer: TCPLayer, _ h: SocketHandle, _ data: [UInt8], _ sent: inout Int, _ got: inout [UInt8],
                  _ closed: inout Bool) {
            if sent < data.count {
                let n = data[sent...].withUnsafeBytes { (try? layer.send(h, $0, now: link.now)) ?? 0 }
                sent += n
                if sent == data.count { try? layer.shutdownWrite(h, now: link.now) }
            }
            while true {
                let n = buf.withUnsafeMutableBytes { (try? layer.receive(h, into: $0, now: link.now)) ?? 0 }
                if n == 0 { break }
                got.append(contentsOf: buf[0..<n])
            }
            if !closed && layer.isPeerClosed(h) && sent == data.count {
                closed = true
                layer.close(h, now: link.now)
            }
        }

        while steps < 2_000_000 {
            steps += 1
            let more = link.step {
                if cb == nil { cb = try? link.b.accept(l, now: link.now) }
                pump(link.a, ca, dataAB, &sentAB, &gotBA, &closedA)
                if let cb { pump(link.b, cb, dataBA, &sentBA, &gotAB, &closedB) }
            }
            if deliveredAt == nil && gotAB.count == size && gotBA.count == size { deliveredAt = link.now }
            if !more { break }
            if link.eventsA.contains(where: { if case .failed = $0 { return true } else { return false } }) { break }
        }
        if debugLink {
            print((link.trace ?? []).suffix(60).joined(separator: "\n"))
            print("DEBUG loss=\(loss) steps=\(steps) sentAB=\(sentAB) gotAB=\(gotAB.count) sentBA=\(sentBA) gotBA=\(gotBA.count) infoA=\(String(describing: link.a.info(ca))) segs=\(link.sentSegments) drop=\(link.droppedSegments) now=\(link.now)")
        }
        let sa = link.a.info(ca)?.state
        let sb = cb.flatMap { link.b.info($0)?.state }
        let done: Set<TCPState?> = [.closed, .timeWait, nil]
        return Outcome(aToB: gotAB == dataAB, bToA: gotBA == dataBA,
                       statesOK: done.contains(sa) && done.contains(sb) && link.a.connectionCount == 0
                           && link.b.connectionCount == 0 && link.oversize == 0,
                       simulatedMs: (link.now.nanoseconds - 1_000_000_000) / 1_000_000,
                       deliveredMs: ((deliveredAt ?? link.now).nanoseconds - 1_000_000_000) / 1_000_000)
    }

    @Test(arguments: [(0.0, 4 << 20), (0.01, 3 << 20), (0.05, 2 << 20), (0.10, 1 << 20), (0.30, 128 << 10)])
    func bidirectionalTransferSurvivesLoss(loss: Double, size: Int) {
        let o = Self.transfer(size: size, loss: loss, seed: 0xC0FFEE &+ UInt64(loss * 1000))
        #expect(o.aToB, "A->B data differs at loss \(loss)")
        #expect(o.bToA, "B->A data differs at loss \(loss)")
        #expect(o.statesOK, "connections not finished at loss \(loss)")
    }

    @Test func newRenoTransferSurvivesLoss() {
        let o = Self.transfer(size: 1 << 20, loss: 0.05, seed: 99, cc: .newReno)
        #expect(o.aToB && o.bToA && o.statesOK)
    }
}

/// End-to-end behaviours between two real layers.
@Suite struct TCPEndToEndTests {
    let addrA = IPv4Address(10, 1, 0, 1), addrB = IPv4Address(10, 1, 0, 2)

    @Test func connectionRefusedEndToEnd() throws {
        let link = SimLink(config: TCPConfig(), seed: 5)
        let c = try link.a.connect(local: IPEndpoint(addrA, 0), remote: IPEndpoint(addrB, 9), now: link.now)
        for _ in 0..<20 where link.step() {}
        #expect(link.eventsA == [.failed(c, .connectionRefused)])
        #expect(link.a.connectionCount == 0 && link.b.connectionCount == 0)
    }

    @Test func simultaneousOpenEndToEnd() throws {
        var cfg = TCPConfig()
        cfg.timeWait = .seconds(1)
        let link = SimLink(config: cfg, seed: 6)
        let ea = IPEndpoint(addrA, 5000), eb = IPEndpoint(addrB, 6000)
        let ca = try link.a.connect(local: ea, remote: eb, now: link.now)
        let cb = try link.b.connect(local: eb, remote: ea, now: link.now)
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        var sent = false
        for _ in 0..<200 {
            let more = link.step {
                if !sent, link.a.info(ca)?.state == .established {
                    sent = true
                    _ = bytes(1000).withUnsafeBytes { try? link.a.send(ca, $0, now: link.now) }
                    try? link.a.shutdownWrite(ca, now: link.now)
                }
                let n = buf.withUnsafeMutableBytes { (try? link.b.receive(cb, into: $0, now: link.now)) ?? 0 }
                got += buf[0..<n]
                if link.b.isPeerClosed(cb) { link.b.close(cb, now: link.now) }
            }
            if !more { break }
        }
        #expect(link.eventsA.first == .connected(ca))
        #expect(link.eventsB.first == .connected(cb))
        #expect(got == bytes(1000))
        #expect(link.a.connectionCount == 0 && link.b.connectionCount == 0)
    }
}
