import Foundation
import Testing
@testable import NetStack

/// A lossless back-to-back link for throughput runs: frames are copied into a preallocated
/// ring (no allocation per frame) and delivered in order after both stacks were polled.
final class FastLink {
    final class Side: FrameSink {
        unowned let link: FastLink
        let dst: Int
        init(link: FastLink, dst: Int) { self.link = link; self.dst = dst }
        func sendFrame(_ frame: UnsafeRawBufferPointer) { link.push(frame, to: dst) }
    }
    let slotSize: Int
    let slots: Int
    let storage: UnsafeMutableRawPointer
    var lengths: [Int]
    var dsts: [Int]
    var head = 0, count = 0
    var dropped = 0
    var nodes: [NetStack] = []

    init(slotSize: Int, slots: Int) {
        self.slotSize = slotSize
        self.slots = slots
        storage = .allocate(byteCount: slotSize * slots, alignment: 16)
        lengths = Array(repeating: 0, count: slots)
        dsts = Array(repeating: 0, count: slots)
    }
    deinit { storage.deallocate() }

    func push(_ f: UnsafeRawBufferPointer, to dst: Int) {
        guard count < slots, f.count <= slotSize, let b = f.baseAddress else { dropped += 1; return }
        let i = (head + count) % slots
        (storage + i * slotSize).copyMemory(from: b, byteCount: f.count)
        lengths[i] = f.count
        dsts[i] = dst
        count += 1
    }

    /// Delivers the frames queued now (not the ones they trigger).
    func deliver(now: Instant) {
        var n = count
        while n > 0 {
            let i = head
            head = (head + 1) % slots
            count -= 1
            n -= 1
            nodes[dsts[i]].receive(frame: UnsafeRawBufferPointer(start: storage + i * slotSize, count: lengths[i]), now: now)
        }
    }
}

@Suite struct FrameThroughputTests {
    #if DEBUG
    static let bytes = 8 << 20
    #else
    static let bytes = 400 << 20
    #endif

    func pair(mtu: Int) -> (FastLink, NetStack, NetStack) {
        let link = FastLink(slotSize: mtu + 14, slots: 8192)
        var tcp = TCPConfig()
        tcp.receiveBufferSize = 4 << 20
        tcp.sendBufferSize = 4 << 20
        let server = NetStack(config: StackConfig(mac: ourMAC, mtu: mtu, addresses: [IPv4CIDR(address: serverIP, prefixLength: 24)],
                                                  tcp: tcp, services: [.discard, .chargen, .echo]),
                              sink: FastLink.Side(link: link, dst: 1), random: XorShiftRandom(seed: 1))
        let client = NetStack(config: StackConfig(mac: peerMAC, mtu: mtu, addresses: [IPv4CIDR(address: clientIP, prefixLength: 24)], tcp: tcp),
                              sink: FastLink.Side(link: link, dst: 0), random: XorShiftRandom(seed: 2))
        link.nodes = [server, client]
        return (link, server, client)
    }

    /// chargen -> client at MTU 2800: every byte checked against the RFC 864 pattern.
    /// `swift test -c release --filter FrameThroughput` prints the rate.
    @Test func chargenToClient() throws {
        let (link, server, client) = pair(mtu: 2800)
        var now = Instant.milliseconds(1000)
        server.up(now: now); client.up(now: now)
        let h = try client.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(serverIP, 19), now: now)
        var received = 0
        var mismatch = false
        let start = Date()
        var rounds = 0
        while received < Self.bytes && rounds < 50_000_000 {
            rounds += 1
            _ = server.poll(now: now)
            _ = client.poll(now: now)
            link.deliver(now: now)
            client.drainEvents { _ in }
            if let rx = client.tcp.receiveBuffer(h), rx.count > 0 {
                let (r1, r2) = rx.readableRegions()
                for r in [r1, r2] where r.count > 0 {
                    var off = 0
                    while off < r.count {
                        let k = min(r.count - off, Chargen.span)
                        let p = (received + off) % Chargen.period
                        if memcmp(r.baseAddress! + off, Chargen.pattern.base + p, k) != 0 { mismatch = true }
                        off += k
                    }
                    received += r.count
                }
                client.tcp.consume(h, r1.count + r2.count, now: now)
            }
            now = now + .microseconds(20)
        }
        let secs = Date().timeIntervalSince(start)
        print("FrameThroughput chargen->client: \(received >> 20) MiB in \(String(format: "%.2f", secs)) s = \(String(format: "%.0f", Double(received) * 8 / secs / 1e6)) Mbit/s")
        #expect(received >= Self.bytes)
        #expect(!mismatch)
        #expect(link.dropped == 0)
        client.tcp.close(h, now: now)
    }

    /// client -> discard at MTU 2800 (bytes only counted by the receiving TCP).
    @Test func clientToDiscard() throws {
        let (link, server, client) = pair(mtu: 2800)
        var now = Instant.milliseconds(1000)
        let h = try client.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(serverIP, 9), now: now)
        let chunk = pattern(1 << 16)
        var sent = 0
        let start = Date()
        var rounds = 0
        while (client.tcp.info(h)?.bytesSent ?? 0) < UInt64(Self.bytes) && rounds < 50_000_000 {
            rounds += 1
            client.drainEvents { _ in }
            if sent < Self.bytes, let tx = client.tcp.sendBuffer(h), tx.free > 0 {
                let (w1, w2) = tx.freeRegions()
                var n = 0
                for w in [w1, w2] where w.count > 0 {
                    var off = 0
                    while off < w.count {
                        let k = min(w.count - off, chunk.count)
                        chunk.withUnsafeBytes { w.baseAddress!.advanced(by: off).copyMemory(from: $0.baseAddress!, byteCount: k) }
                        off += k
                    }
                    n += w.count
                }
                client.tcp.commitSend(h, n, now: now)
                sent += n
            }
            _ = client.poll(now: now)
            _ = server.poll(now: now)
            link.deliver(now: now)
            now = now + .microseconds(20)
        }
        let acked = Int(client.tcp.info(h)?.bytesSent ?? 0)
        let secs = Date().timeIntervalSince(start)
        print("FrameThroughput client->discard: \(acked >> 20) MiB in \(String(format: "%.2f", secs)) s = \(String(format: "%.0f", Double(acked) * 8 / secs / 1e6)) Mbit/s")
        #expect(acked >= Self.bytes)
        #expect(link.dropped == 0)
        #expect(server.counters.droppedChecksum == 0)
    }
}
