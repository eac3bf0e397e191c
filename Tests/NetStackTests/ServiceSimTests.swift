import Testing
@testable import NetStack

/// True once the real TCPLayer (branch wt-nstcp) is merged; until then the TCP-dependent
/// frame-level tests are skipped rather than failing on the API skeleton.
let tcpImplemented: Bool = {
    let t = TCPLayer(config: TCPConfig(), random: XorShiftRandom(seed: 1))
    return (try? t.listen(local: IPEndpoint(.any, 1), backlog: 1, now: .zero)) != nil
}()

let serverIP = IPv4Address(10, 1, 0, 1), clientIP = IPv4Address(10, 1, 0, 2)

/// Two stacks on a simulated segment: `server` (services on) and `client`.
func makePair(seed: UInt64, faults: LinkFaults, mtu: Int = 1500,
              services: Set<DiagnosticService> = [.echo, .discard, .chargen]) -> (NetSim, NetStack, NetStack) {
    let sim = NetSim(seed: seed)
    let ps = sim.makePort(faults: faults), pc = sim.makePort(faults: faults)
    var tcp = TCPConfig()
    tcp.receiveBufferSize = 256 << 10
    tcp.sendBufferSize = 256 << 10
    var sc = StackConfig(mac: ourMAC, mtu: mtu, addresses: [IPv4CIDR(address: serverIP, prefixLength: 24)],
                         tcp: tcp, services: services)
    // These tests are about TCP: at 30% loss three ARP tries fail 13% of the time, which (as on
    // Linux) fails a connect with EHOSTUNREACH. More tries keep ARP out of the way.
    sc.arpMaxTries = 12
    let server = NetStack(config: sc, sink: ps, random: XorShiftRandom(seed: seed &+ 1))
    var cc = StackConfig(mac: peerMAC, mtu: mtu, addresses: [IPv4CIDR(address: clientIP, prefixLength: 24)], tcp: tcp)
    cc.arpMaxTries = 12
    let client = NetStack(config: cc, sink: pc, random: XorShiftRandom(seed: seed &+ 2))
    sim.attach(server, to: ps); sim.attach(client, to: pc)
    server.up(now: sim.now); client.up(now: sim.now)
    return (sim, server, client)
}

/// Minimal driver for one client connection: pushes `toSend`, collects what comes back.
final class ClientConn {
    let stack: NetStack
    let h: SocketHandle
    var toSend: [UInt8]
    var sent = 0
    var received: [UInt8] = []
    var shutAfterSend: Bool
    var shut = false
    var failed: SocketError?
    var closed = false
    var buf = [UInt8](repeating: 0, count: 64 << 10)

    init(stack: NetStack, port: UInt16, now: Instant, send: [UInt8], shutAfterSend: Bool = true,
         server: IPAddress = IPAddress(serverIP)) throws {
        self.stack = stack
        h = try stack.tcpConnect(local: IPEndpoint(.v6Any, 0), remote: IPEndpoint(server, port), now: now)
        toSend = send
        self.shutAfterSend = shutAfterSend
    }

    /// One driver step; call from the sim's `until` hook.
    func step(now: Instant, readLimit: Int = .max) {
        stack.drainEvents { ev in
            switch ev {
            case let .failed(x, e) where x == h: failed = e
            case let .closed(x) where x == h: closed = true
            default: break
            }
        }
        while sent < toSend.count {
            let n = toSend.withUnsafeBytes { (try? stack.tcp.send(h, UnsafeRawBufferPointer(rebasing: $0[sent...]), now: now)) ?? 0 }
            if n == 0 { break }
            sent += n
        }
        if sent == toSend.count && shutAfterSend && !shut { try? stack.tcp.shutdownWrite(h, now: now); shut = true }
        while received.count < readLimit {
            let n = buf.withUnsafeMutableBytes { (try? stack.tcp.receive(h, into: $0, now: now)) ?? 0 }
            if n == 0 { break }
            received += buf[0..<n]
        }
    }
}

@Suite(.enabled(if: tcpImplemented, "needs the TCPLayer from wt-nstcp"))
struct ServiceSimTests {
    @Test func echoOneByte() throws {
        let (sim, _, client) = makePair(seed: 1, faults: .perfect)
        let c = try ClientConn(stack: client, port: 7, now: sim.now, send: [0x5A])
        let ok = sim.run(for: .seconds(10)) { c.step(now: sim.now); return c.received.count >= 1 && client.tcp.isPeerClosed(c.h) }
        #expect(ok)
        #expect(c.received == [0x5A])
    }

    @Test func echoOneMiBIdentical() throws {
        let (sim, server, client) = makePair(seed: 2, faults: .perfect)
        let data = pattern(1 << 20, seed: 3)
        let c = try ClientConn(stack: client, port: 7, now: sim.now, send: data)
        let ok = sim.run(for: .seconds(120)) { c.step(now: sim.now); return c.received.count >= data.count && client.tcp.isPeerClosed(c.h) }
        #expect(ok)
        let same = c.received == data; #expect(same, "echoed bytes differ")
        #expect(server.collectEvents().isEmpty)   // service events stay inside the stack
    }

    @Test func discardConsumesEverything() throws {
        let (sim, server, client) = makePair(seed: 4, faults: .perfect)
        let c = try ClientConn(stack: client, port: 9, now: sim.now, send: pattern(512 << 10))
        let ok = sim.run(for: .seconds(60)) { c.step(now: sim.now); return c.sent == c.toSend.count && client.tcp.isPeerClosed(c.h) }
        #expect(ok)
        #expect(c.received.isEmpty)
        #expect(server.counters.tcpSegmentsIn > 300)
    }

    @Test func chargenFollowsRFC864Pattern() throws {
        let (sim, _, client) = makePair(seed: 5, faults: .perfect)
        let c = try ClientConn(stack: client, port: 19, now: sim.now, send: [], shutAfterSend: false)
        let want = 200_000
        let ok = sim.run(for: .seconds(60)) { c.step(now: sim.now, readLimit: want); return c.received.count >= want }
        #expect(ok)
        let firstBad = c.received.indices.first { c.received[$0] != Chargen.byte(at: $0) }
        #expect(firstBad == nil)
        #expect(Array(c.received[0..<74]) == Array(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n".utf8))
        client.tcp.close(c.h, now: sim.now)
    }

    /// Bulk transfer through the echo service over a lossy, duplicating, reordering, corrupting
    /// link, ARP included: every byte comes back, in order, with data flowing both ways.
    @Test(arguments: [(0.0, 2 << 20), (0.01, 1 << 20), (0.05, 512 << 10), (0.3, 64 << 10)])
    func echoOverLossyLink(loss: Double, size: Int) throws {
        let faults = LinkFaults(dropRate: loss, duplicateRate: 0.01, reorderRate: 0.02, corruptRate: 0.005)
        let (sim, server, client) = makePair(seed: 11, faults: faults)
        let data = pattern(size, seed: 9)
        let c = try ClientConn(stack: client, port: 7, now: sim.now, send: data)
        let ok = sim.run(for: .seconds(120), maxSteps: 200_000) {
            c.step(now: sim.now)
            return (c.received.count >= data.count && client.tcp.isPeerClosed(c.h)) || c.failed != nil
        }
        #expect(ok)
        #expect(c.failed == nil)
        #expect(c.received.count == data.count)
        let same = c.received == data
        #expect(same, "echoed bytes differ")
        // TCP must never ask for more than the MTU (SACK options shrink the payload).
        #expect(server.counters.oversizeTransmits + client.counters.oversizeTransmits == 0)
        if loss > 0 { #expect(sim.dropped > 0) }
    }

    /// One-way bulk transfer into a driver-level socket over a lossy link at 0-30% loss: the
    /// bytes arrive identical and both ends finish (FIN both ways).
    @Test(arguments: [(0.0, 8 << 20), (0.01, 4 << 20), (0.1, 2 << 20), (0.3, 512 << 10)])
    func bulkTransferOverLossyLink(loss: Double, size: Int) throws {
        let faults = LinkFaults(dropRate: loss, duplicateRate: 0.02, reorderRate: 0.05, corruptRate: 0.01)
        let (sim, server, client) = makePair(seed: 21, faults: faults, mtu: 2800, services: [])
        let listener = try server.tcp.listen(local: IPEndpoint(.any, 5001), backlog: 4, now: sim.now)
        let data = pattern(size, seed: 4)
        let c = try ClientConn(stack: client, port: 5001, now: sim.now, send: data)
        var conn: SocketHandle?
        var got: [UInt8] = []
        got.reserveCapacity(size)
        var buf = [UInt8](repeating: 0, count: 64 << 10)
        var serverClosed = false
        let ok = sim.run(for: .seconds(1800)) {
            c.step(now: sim.now)
            server.drainEvents { ev in
                if case let .acceptable(l) = ev, l == listener, let h = try? server.tcp.accept(l, now: sim.now) { conn = h }
            }
            if let h = conn {
                while true {
                    let n = buf.withUnsafeMutableBytes { (try? server.tcp.receive(h, into: $0, now: sim.now)) ?? 0 }
                    if n == 0 { break }
                    got += buf[0..<n]
                }
                if !serverClosed && server.tcp.isPeerClosed(h) { server.tcp.close(h, now: sim.now); serverClosed = true }
            }
            return (serverClosed && client.tcp.isPeerClosed(c.h)) || c.failed != nil
        }
        #expect(ok)
        #expect(c.failed == nil)
        #expect(got.count == data.count)
        let same = got == data; #expect(same, "received bytes differ")
        if loss > 0 { #expect(sim.dropped > 0) }
    }
}
