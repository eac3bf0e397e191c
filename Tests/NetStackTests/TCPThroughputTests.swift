import Testing
import Foundation
@testable import NetStack

/// A perfect link for throughput checks: segments are copied into a preallocated arena and
/// delivered in order, with no allocation per segment on either side.
final class ArenaQueue: IPTransmitter {
    let slotSize: Int
    let slots: Int
    let storage: UnsafeMutableRawPointer
    var lengths: [Int]
    var srcs: [IPAddress]
    var dsts: [IPAddress]
    var head = 0
    var count = 0
    var dropped = 0
    let mtuPayload: Int

    init(mtu: Int, slots: Int) {
        mtuPayload = mtu - 20
        slotSize = mtuPayload
        self.slots = slots
        storage = .allocate(byteCount: slotSize * slots, alignment: 16)
        lengths = Array(repeating: 0, count: slots)
        srcs = Array(repeating: .v4Any, count: slots)
        dsts = Array(repeating: .v4Any, count: slots)
    }
    deinit { storage.deallocate() }

    func maxPayload(to dst: IPAddress) -> Int { mtuPayload }
    func transmit(src: IPAddress, dst: IPAddress, proto: UInt8, capacity: Int,
                  _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard count < slots, capacity <= slotSize else { dropped += 1; return false }
        let i = (head + count) % slots
        let n = fill(UnsafeMutableRawBufferPointer(start: storage + i * slotSize, count: capacity))
        guard n > 0 else { return true }
        lengths[i] = n
        srcs[i] = src
        dsts[i] = dst
        count += 1
        return true
    }

    /// Delivers everything queued so far (not what gets queued while delivering).
    func deliver(to layer: TCPLayer, now: Instant, reply: ArenaQueue) -> Int {
        var n = count
        var delivered = 0
        while n > 0 {
            let i = head
            layer.receive(src: srcs[i], dst: dsts[i],
                          segment: UnsafeRawBufferPointer(start: storage + i * slotSize, count: lengths[i]),
                          now: now, tx: reply)
            head = (head + 1) % slots
            count -= 1
            n -= 1
            delivered += 1
        }
        return delivered
    }
}

@Suite struct TCPThroughputTests {
    /// Moves `total` bytes A→B over a perfect link (MTU 2800, 4 MiB buffers) and checks every
    /// byte; both stacks run on this one thread. For a meaningful MB/s figure run
    /// `swift test -c release -Xswiftc -enable-testing --filter TCPThroughput` (the test target
    /// uses `@testable import`, which needs -enable-testing in release builds).
    @Test func bulkTransferOverPerfectLink() throws {
        #if DEBUG
        let total = 16 << 20
        #else
        let total = 200 << 20
        #endif
        var cfg = TCPConfig()
        cfg.timeWait = .seconds(1)
        let a = TCPLayer(config: cfg, random: XorShiftRandom(seed: 1))
        let b = TCPLayer(config: cfg, random: XorShiftRandom(seed: 2))
        let ab = ArenaQueue(mtu: 2800, slots: 4096)
        let ba = ArenaQueue(mtu: 2800, slots: 4096)
        let addrA = IPv4Address(10, 2, 0, 1), addrB = IPv4Address(10, 2, 0, 2)
        var now = Instant.milliseconds(1)
        let l = try b.listen(local: IPEndpoint(addrB, 5201), backlog: 1, now: now)
        let ca = try a.connect(local: IPEndpoint(addrA, 0), remote: IPEndpoint(addrB, 5201), now: now)
        var cb: SocketHandle?
        var sent = 0, received = 0
        var mismatch = -1
        var finished = false
        // Pattern byte at stream offset v is v % 251; a table lets fill/check run at memcpy speed.
        let chunk = 1 << 20
        let pattern = (0..<(chunk + 251)).map { UInt8($0 % 251) }
        let start = ContinuousClock.now
        var rounds = 0
        while !finished && rounds < 50_000_000 {
            rounds += 1
            now = now + .microseconds(20)
            _ = a.poll(now: now, tx: ab)
            _ = b.poll(now: now, tx: ba)
            _ = ab.deliver(to: b, now: now, reply: ba)
            _ = ba.deliver(to: a, now: now, reply: ab)
            if cb == nil { cb = try b.accept(l, now: now) }
            // Sender: fill the send ring in place with the pattern, zero-copy style.
            if sent < total, let tx = a.sendBuffer(ca) {
                let (r1, r2) = tx.freeRegions()
                var n = 0
                for r in [r1, r2] where r.count > 0 && sent + n < total {
                    var k = min(r.count, total - sent - n)
                    var dst = r.baseAddress!
                    while k > 0 {
                        let m = min(k, chunk)
                        pattern.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress! + (sent + n) % 251, byteCount: m) }
                        dst += m; n += m; k -= m
                    }
                }
                if n > 0 {
                    a.commitSend(ca, n, now: now)
                    sent += n
                    if sent == total { try a.shutdownWrite(ca, now: now) }
                }
            }
            // Receiver: check the pattern straight from the receive ring, then consume.
            if let cb, let rx = b.receiveBuffer(cb), !rx.isEmpty {
                let (r1, r2) = rx.readableRegions()
                var n = 0
                for r in [r1, r2] where r.count > 0 {
                    var k = r.count
                    var src = r.baseAddress!
                    while k > 0 {
                        let m = min(k, chunk)
                        let same = pattern.withUnsafeBytes { memcmp(src, $0.baseAddress! + (received + n) % 251, m) == 0 }
                        if !same && mismatch < 0 { mismatch = received + n }
                        src += m; n += m; k -= m
                    }
                }
                received += n
                b.consume(cb, n, now: now)
                if b.isPeerClosed(cb) { b.close(cb, now: now) }
            }
            if received == total, let cb, b.isPeerClosed(cb) {
                b.close(cb, now: now)
                finished = true
            }
            a.drainEvents { _ in }
            b.drainEvents { _ in }
        }
        let elapsed = ContinuousClock.now - start
        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let mbps = Double(total) / secs / 1e6
        print("TCPThroughput: \(total >> 20) MiB in \(String(format: "%.3f", secs)) s = \(String(format: "%.0f", mbps)) MB/s (\(String(format: "%.2f", mbps * 8 / 1000)) Gbit/s), rounds \(rounds), drops \(ab.dropped + ba.dropped), retrans \(a.info(ca)?.retransmissions ?? 0)")
        #expect(mismatch == -1, "first corrupted byte at \(mismatch)")
        #expect(received == total)
        #expect(finished)
    }
}
