import Testing
@testable import NetStack

/// Garbage and mutated frames must never trap (the fuzz target does the same at scale).
@Suite struct RobustnessTests {
    func seeds() -> [[UInt8]] {
        var s: [[UInt8]] = []
        s.append(Build.ethernet(dst: .broadcast, type: EtherType.arp, Build.arp(op: 1, sha: peerMAC, spa: peerIP, tha: .zero, tpa: ourIP)))
        s.append(Build.pingFrame([1, 2, 3, 4]))
        s.append(Build.udpFrame(from: IPEndpoint(peerIP, 1), to: IPEndpoint(ourIP, 5000), pattern(64)))
        s.append(Build.udpFrame(from: IPEndpoint(peerIP, 1), to: IPEndpoint(ourIP, 7), pattern(64)))
        s.append(Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.udp, pattern(64), id: 3, mf: true, offset: 0)))
        s.append(Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.udp, pattern(64), id: 3, mf: false, offset: 64)))
        // A TCP SYN to the echo service.
        var syn = [UInt8](repeating: 0, count: 24)
        syn[0] = 0x30; syn[1] = 0x39; syn[3] = 7; syn[12] = 0x60; syn[13] = 0x02; syn[14] = 0xFF; syn[15] = 0xFF
        syn[20] = 2; syn[21] = 4; syn[22] = 0x05; syn[23] = 0xB4
        s.append(Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.tcp, syn, df: true)))
        return s
    }

    @Test func randomBytesNeverTrap() {
        let (s, _) = makeStack(services: [.echo, .discard, .chargen])
        _ = try? s.udpOpen(local: IPEndpoint(.any, 5000))
        var rng = XorShiftRandom(seed: 99)
        var now = t0
        for i in 0..<20_000 {
            let n = Int(rng.next() % 200)
            var f = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if i % 2 == 0 && f.count >= 14 {   // make it look like ours half the time
                f.replaceSubrange(0..<6, with: [0x02, 0, 0, 0, 0, 0x01])
                f[12] = 0x08; f[13] = UInt8(i % 4 == 0 ? 0x06 : 0x00)
            }
            s.receive(f, now: now)
            if i % 100 == 0 { now = now + .milliseconds(50); _ = s.poll(now: now) }
        }
        #expect(s.counters.framesIn == 20_000)
        #expect(s.counters.dropped > 0)
    }

    @Test func mutatedValidFramesNeverTrap() {
        let (s, _) = makeStack(services: [.echo, .discard, .chargen])
        _ = try? s.udpOpen(local: IPEndpoint(.any, 5000))
        var rng = XorShiftRandom(seed: 5)
        var now = t0
        let seeds = seeds()
        for i in 0..<30_000 {
            var f = seeds[i % seeds.count]
            let flips = 1 + Int(rng.next() % 4)
            for _ in 0..<flips {
                let at = Int(rng.next() % UInt64(f.count))
                switch rng.next() % 4 {
                case 0: f[at] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
                case 1: f[at] = 0xFF
                case 2: f[at] = 0
                default: f.removeLast(Int(rng.next() % UInt64(f.count / 2 + 1)))
                }
                if f.isEmpty { break }
            }
            s.receive(f, now: now)
            if i % 50 == 0 { now = now + .milliseconds(200); _ = s.poll(now: now) }
        }
        #expect(s.counters.framesIn == 30_000)
        #expect(s.counters.framesOut > 0)   // some frames stayed valid and were answered
    }
}
