import Testing
@testable import NetStack

@Test(arguments: [(0.0, 2 << 20), (0.05, 512 << 10), (0.3, 64 << 10)]) func debugLossy(loss: Double, size: Int) throws {
    let faults = LinkFaults(dropRate: loss, duplicateRate: 0.01, reorderRate: 0.02, corruptRate: 0.005)
    let (sim, server, client) = makePair(seed: 11, faults: faults)
    let data = pattern(size, seed: 9)
    let c = try ClientConn(stack: client, port: 7, now: sim.now, send: data)
    var steps = 0
    sim.recordTrace = true
    var lastPrint = sim.now
    let ok = sim.run(for: .seconds(120)) {
        steps += 1
        c.step()
        if sim.now > lastPrint + .seconds(1) || steps % 200000 == 0 {
            lastPrint = sim.now
            print("t=\(sim.now) steps=\(steps) sent=\(c.sent) recv=\(c.received.count) inflight=\(sim.framesInFlight) info=\(String(describing: client.tcp.info(c.h)))")
        }
        return (c.received.count >= data.count && client.tcp.isPeerClosed(c.h)) || c.failed != nil || steps > 2_000_000
    }
    print("nb server->client \(String(describing: server.neighbor(clientIP))) client->server \(String(describing: client.neighbor(serverIP))) corrupted=\(sim.corrupted)")
    server.tcp.forEachConnection { h, i in print("srv conn \(String(describing: h)) \(i)") }
    print("srv counters \(server.counters)")
    print("cli counters \(client.counters)")
    for (from, bytes) in sim.trace.suffix(30) {
        bytes.withUnsafeBytes { raw in
            guard let eth = try? EthernetHeaderView(raw), eth.etherType == EtherType.ipv4, let ip = try? IPv4HeaderView(eth.payload), let t = try? TCPHeaderView(ip.payload) else { print("from \(from) non-tcp \(bytes.count)"); return }
            var ts = ""
            var it = t.options
            while let o = try? it.next() { ts += "\(o) " }
            print("from \(from) seq=\(t.sequenceNumber) ack=\(t.ackNumber) flags=\(t.flags) win=\(t.window) len=\(t.payload.count) opts=\(ts)")
        }
    }
    print("done ok=\(ok) steps=\(steps) t=\(sim.now) failed=\(String(describing: c.failed)) delivered=\(sim.delivered) dropped=\(sim.dropped)")
    _ = server
    #expect(ok)
}
