import Testing
@testable import NetStack

let serverIP6 = IPAddress("fd00:1::1")!, clientIP6 = IPAddress("fd00:1::2")!

/// Two dual-stack stacks on a simulated segment (`makePair` plus IPv6 addresses, with DAD run
/// through first unless `dad` is 0).
func makePair6(seed: UInt64, faults: LinkFaults, mtu: Int = 1500, dad: Int = 1,
               services: Set<DiagnosticService> = [.echo, .discard, .chargen]) -> (NetSim, NetStack, NetStack) {
    let sim = NetSim(seed: seed)
    let ps = sim.makePort(faults: faults), pc = sim.makePort(faults: faults)
    var tcp = TCPConfig()
    tcp.receiveBufferSize = 256 << 10
    tcp.sendBufferSize = 256 << 10
    var sc = StackConfig(mac: ourMAC, mtu: mtu, addresses: [IPv4CIDR(address: serverIP, prefixLength: 24)],
                         tcp: tcp, services: services)
    sc.addresses6 = [IPv6CIDR(address: serverIP6, prefixLength: 64)]
    sc.arpMaxTries = 12
    sc.dadTransmits = dad
    var cc = StackConfig(mac: peerMAC, mtu: mtu, addresses: [IPv4CIDR(address: clientIP, prefixLength: 24)], tcp: tcp)
    cc.addresses6 = [IPv6CIDR(address: clientIP6, prefixLength: 64)]
    cc.arpMaxTries = 12
    cc.dadTransmits = dad
    let server = NetStack(config: sc, sink: ps, random: XorShiftRandom(seed: seed &+ 1))
    let client = NetStack(config: cc, sink: pc, random: XorShiftRandom(seed: seed &+ 2))
    sim.attach(server, to: ps); sim.attach(client, to: pc)
    server.up(now: sim.now); client.up(now: sim.now)
    if dad > 0 { sim.run(for: .seconds(2)) }
    return (sim, server, client)
}

@Suite(.enabled(if: tcpImplemented, "needs the TCPLayer"))
struct IPv6SimTests {
    @Test func dadPassesOnAQuietLink() {
        let (_, server, client) = makePair6(seed: 1, faults: .perfect)
        #expect(server.addresses6.allSatisfy { $0.state == .preferred } && client.addresses6.count == 2)
        #expect(client.addresses6.allSatisfy { $0.state == .preferred } && server.counters.dadConflicts == 0)
    }

    @Test func echoOneMiBOverIPv6() throws {
        let (sim, server, client) = makePair6(seed: 2, faults: .perfect)
        let data = pattern(1 << 20, seed: 3)
        let c = try ClientConn(stack: client, port: 7, now: sim.now, send: data, server: serverIP6)
        let ok = sim.run(for: .seconds(120)) { c.step(now: sim.now); return c.received.count >= data.count && client.tcp.isPeerClosed(c.h) }
        #expect(ok)
        let same = c.received == data; #expect(same, "echoed bytes differ")
        #expect(client.tcp.localEndpoint(c.h)?.address == clientIP6 && server.counters.ipv6PacketsIn > 100)
        #expect(server.counters.ndSolicitationsReceived > 0 && server.neighbor6(clientIP6) == peerMAC)
    }

    /// The twin of ServiceSimTests.echoOverLossyLink: echo through a lossy, duplicating,
    /// reordering, corrupting link, Neighbor Discovery included.
    @Test(arguments: [(0.0, 1 << 20), (0.01, 512 << 10), (0.05, 256 << 10), (0.3, 64 << 10)])
    func echoOverLossyLink6(loss: Double, size: Int) throws {
        let faults = LinkFaults(dropRate: loss, duplicateRate: 0.01, reorderRate: 0.02, corruptRate: 0.005)
        let (sim, server, client) = makePair6(seed: 11, faults: faults, dad: 0)
        let data = pattern(size, seed: 9)
        let c = try ClientConn(stack: client, port: 7, now: sim.now, send: data, server: serverIP6)
        let ok = sim.run(for: .seconds(120), maxSteps: 200_000) {
            c.step(now: sim.now)
            return (c.received.count >= data.count && client.tcp.isPeerClosed(c.h)) || c.failed != nil
        }
        #expect(ok && c.failed == nil && c.received.count == data.count)
        let same = c.received == data
        #expect(same, "echoed bytes differ")
        #expect(server.counters.oversizeTransmits + client.counters.oversizeTransmits == 0)
        if loss > 0 { #expect(sim.dropped > 0) }
    }

    /// The twin of ServiceSimTests.bulkTransferOverLossyLink over IPv6 at MTU 2800.
    @Test(arguments: [(0.0, 4 << 20), (0.01, 2 << 20), (0.1, 1 << 20), (0.3, 256 << 10)])
    func bulkTransferOverLossyLink6(loss: Double, size: Int) throws {
        let faults = LinkFaults(dropRate: loss, duplicateRate: 0.02, reorderRate: 0.05, corruptRate: 0.01)
        let (sim, server, client) = makePair6(seed: 21, faults: faults, mtu: 2800, dad: 0, services: [])
        let listener = try server.tcp.listen(local: IPEndpoint(.v6Any, 5001), backlog: 4, now: sim.now)
        let data = pattern(size, seed: 4)
        let c = try ClientConn(stack: client, port: 5001, now: sim.now, send: data, server: serverIP6)
        var conn: SocketHandle?
        var got: [UInt8] = []
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
        #expect(ok && c.failed == nil && got.count == data.count)
        let same = got == data; #expect(same, "received bytes differ")
        // Segments fill the IPv6 MTU: 2800 - 40 (IPv6) - 20 (TCP) - 12 (timestamps).
        if let h = conn { #expect(server.tcp.info(h)?.mss == 2728) }
    }

    /// A dual-stack listener (:: without IPV6_V6ONLY) takes both families; its connections
    /// carry the peer's own family; a v6-only one and a 0.0.0.0 one share the port.
    @Test func dualStackListener() throws {
        let (sim, server, client) = makePair6(seed: 3, faults: .perfect, dad: 0, services: [])
        let l = try server.tcp.listen(local: IPEndpoint(.v6Any, 8080), backlog: 8, now: sim.now)
        let c4 = try ClientConn(stack: client, port: 8080, now: sim.now, send: [1], server: IPAddress(serverIP))
        let c6 = try ClientConn(stack: client, port: 8080, now: sim.now, send: [2], server: serverIP6)
        var accepted: [IPEndpoint] = []
        let ok = sim.run(for: .seconds(10)) {
            c4.step(now: sim.now); c6.step(now: sim.now)
            server.drainEvents { ev in
                if case let .acceptable(x) = ev, x == l {
                    while let h = try? server.tcp.accept(l, now: sim.now) {
                        if let r = server.tcp.remoteEndpoint(h) { accepted.append(r) }
                    }
                }
            }
            return accepted.count == 2
        }
        #expect(ok && Set(accepted.map(\.address)) == [IPAddress(clientIP), clientIP6])
        server.tcp.close(l, now: sim.now)
        let only = try server.ports.bind(.tcp, IPEndpoint(.v6Any, 9090), options: .init(v6Only: true))
        let any4 = try server.ports.bind(.tcp, IPEndpoint(IPAddress.v4Any, 9090))
        let l6 = try server.tcp.listen(binding: only, backlog: 4, now: sim.now)
        let l4 = try server.tcp.listen(binding: any4, backlog: 4, now: sim.now)
        let d4 = try ClientConn(stack: client, port: 9090, now: sim.now, send: [], server: IPAddress(serverIP))
        let d6 = try ClientConn(stack: client, port: 9090, now: sim.now, send: [], server: serverIP6)
        var by: [SocketHandle: IPAddress] = [:]
        _ = sim.run(for: .seconds(10)) {
            d4.step(now: sim.now); d6.step(now: sim.now)
            server.drainEvents { ev in
                if case let .acceptable(x) = ev, let h = try? server.tcp.accept(x, now: sim.now),
                   let r = server.tcp.remoteEndpoint(h) { by[x] = r.address }
            }
            return by.count == 2
        }
        #expect(by[l6] == clientIP6 && by[l4] == IPAddress(clientIP))
    }

    /// Packet too big (RFC 8201): the path MTU drops for that destination and TCP's segments
    /// follow, what was in flight is sent again at the new size, and the transfer completes.
    @Test func packetTooBigShrinksTCPSegments() throws {
        let sim = NetSim(seed: 5)
        let ps = sim.makePort(), pc = sim.makePort()
        var sc = StackConfig(mac: ourMAC, mtu: 9000, addresses: [], services: [.discard])
        sc.addresses6 = [IPv6CIDR(address: serverIP6, prefixLength: 64)]
        sc.dadTransmits = 0
        var cc = StackConfig(mac: peerMAC, mtu: 9000, addresses: [])
        cc.addresses6 = [IPv6CIDR(address: clientIP6, prefixLength: 64)]
        cc.dadTransmits = 0
        let server = NetStack(config: sc, sink: ps, random: XorShiftRandom(seed: 1))
        // A "router" in the middle: frames from the client longer than 1400 bytes of IPv6 are
        // dropped and answered with a packet too big for 1400.
        var tooBig = 0
        let mid = PTBFilter(inner: pc, limit: 1400, router: IPAddress("fd00:1::fe")!, routerMAC: MACAddress(2, 0, 0, 0, 0, 0xFE),
                            deliverBack: { _ in }, onTooBig: { tooBig += 1 })
        let client2 = NetStack(config: cc, sink: mid, random: XorShiftRandom(seed: 2))
        sim.attach(server, to: ps); sim.attach(client2, to: pc)
        mid.deliverBack = { f in f.withUnsafeBytes { client2.receive(frame: $0, now: sim.now) } }
        server.up(now: sim.now); client2.up(now: sim.now)
        let data = pattern(256 << 10, seed: 1)
        let c = try ClientConn(stack: client2, port: 9, now: sim.now, send: data, server: serverIP6)
        let ok = sim.run(for: .seconds(60)) {
            c.step(now: sim.now)
            return (c.sent == data.count && (client2.tcp.info(c.h)?.sendQueue ?? 1) == 0) || c.failed != nil
        }
        #expect(ok && c.failed == nil && tooBig > 0)
        #expect(client2.pathMTU6(to: serverIP6) == 1400)
        // TCP_INFO's tcpi_pmtu (and IPV6_MTU) count the 40-byte IPv6 header.
        #expect(client2.tcp.info(c.h)?.pathMTU == 1400)
        #expect((client2.tcp.info(c.h)?.mss ?? 0) <= 1400 - 40 - 20)
        #expect(mid.largestPassed <= 1400)
    }
}

/// The offload twins over IPv6: TSO6 super-segments and partial checksums both ways, the link
/// cutting them for a receiver without offloads, and loss recovery per piece.
@Suite struct IPv6OffloadTests {
    @Test func bulkWithOffloadsBothSides6() throws {
        let (sim, server, client, rs, rc) = makeOffloadPair(seed: 4, serverOffload: true, clientOffload: true, ipv6: true)
        let data = pattern(4 << 20, seed: 6)
        let r = try transfer(sim, server: server, client: client, data, to: serverIP6)
        #expect(r.ok && r.failed == nil)
        let same = r.got == data; #expect(same)
        #expect(client.counters.superFramesOut > 25 && server.counters.superFramesIn == client.counters.superFramesOut)
        #expect(rc.frames < 600 && rs.frames <= rc.frames + 10)
        #expect(client.counters.oversizeTransmits + server.counters.oversizeTransmits == 0)
    }

    @Test(arguments: [(true, false), (false, true)])
    func mixedOffloads6(clientOffload: Bool, serverOffload: Bool) throws {
        let (sim, server, client, _, _) = makeOffloadPair(seed: 5, serverOffload: serverOffload, clientOffload: clientOffload,
                                                          ipv6: true)
        let data = pattern(1 << 20, seed: 8)
        let r = try transfer(sim, server: server, client: client, data, to: serverIP6)
        #expect(r.ok && r.failed == nil)
        let same = r.got == data; #expect(same)
        #expect(server.counters.superFramesIn == 0)
        if clientOffload { #expect(client.counters.superFramesOut > 0) }
    }

    @Test func bulkWithOffloadsOverLossyLink6() throws {
        let faults = LinkFaults(dropRate: 0.02, duplicateRate: 0.01, reorderRate: 0.02)
        let (sim, server, client, _, _) = makeOffloadPair(seed: 6, faults: faults, serverOffload: true, clientOffload: true,
                                                          ipv6: true)
        let data = pattern(1 << 20, seed: 9)
        let r = try transfer(sim, server: server, client: client, data, limit: .seconds(1800), to: serverIP6)
        #expect(r.ok && r.failed == nil && r.got.count == data.count)
        let same = r.got == data; #expect(same)
        #expect(sim.dropped > 0 && client.counters.oversizeTransmits == 0)
    }
}

/// Stands between a stack and its port: IPv6 frames to the port longer than `limit` bytes of
/// IPv6 packet are dropped and answered with an ICMPv6 packet too big from `router`.
final class PTBFilter: FrameSink {
    let inner: SimPort
    let limit: Int
    let router: IPAddress
    let routerMAC: MACAddress
    var deliverBack: ([UInt8]) -> Void
    let onTooBig: () -> Void
    var largestPassed = 0
    init(inner: SimPort, limit: Int, router: IPAddress, routerMAC: MACAddress, deliverBack: @escaping ([UInt8]) -> Void,
         onTooBig: @escaping () -> Void) {
        self.inner = inner; self.limit = limit; self.router = router; self.routerMAC = routerMAC
        self.deliverBack = deliverBack; self.onTooBig = onTooBig
    }
    func sendFrame(_ frame: UnsafeRawBufferPointer) {
        let f = Array(frame)
        guard f.count > 54, f[12] == 0x86, f[13] == 0xDD, f.count - 14 > limit else {
            if f.count > 14 && f[12] == 0x86 { largestPassed = max(largestPassed, f.count - 14) }
            inner.sendFrame(frame)
            return
        }
        onTooBig()
        let orig = Array(f[14...])
        let src = IPAddress(bytes: orig[8..<24])
        let quote = Array(orig.prefix(1280 - 48))
        let ptb = Build6.ipv6(src: router, dst: src, next: IPProtocol.icmpv6,
                              Build6.icmp(type: ICMPv6Type.packetTooBig, rest: UInt32(limit), quote, src: router, dst: src))
        deliverBack(Build.ethernet(dst: MACAddress(loadingFrom: frame.baseAddress! + 6), src: routerMAC, type: EtherType.ipv6, ptb))
    }
}
