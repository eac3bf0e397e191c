import Testing
@testable import NetStack

/// A sink with every offload that records what the stack hands it: headers and payload joined,
/// and the offload state of each frame.
final class OffloadRecorder: FrameSink {
    var frames: [(bytes: [UInt8], offload: FrameOffload)] = []
    let transmitOffloads: TransmitOffloads
    init(_ offloads: TransmitOffloads = .all) { transmitOffloads = offloads }
    func sendFrame(_ frame: UnsafeRawBufferPointer) { frames.append((Array(frame), .none)) }
    func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                   offload: FrameOffload) {
        frames.append((Array(head) + Array(payload) + Array(more), offload))
    }
}

/// A sink that records like `OffloadRecorder` and passes every frame on to a NetSim port.
final class RecordingPort: FrameSink {
    let port: SimPort
    var superSegments: [(bytes: [UInt8], offload: FrameOffload)] = []
    var frames = 0
    init(_ port: SimPort) { self.port = port }
    var transmitOffloads: TransmitOffloads { port.transmitOffloads }
    func sendFrame(_ frame: UnsafeRawBufferPointer) { frames += 1; port.sendFrame(frame) }
    func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                   offload: FrameOffload) {
        frames += 1
        if offload.segmentation != .none { superSegments.append((Array(head) + Array(payload) + Array(more), offload)) }
        port.sendFrame(head: head, payload: payload, more, offload: offload)
    }
}

/// Two stacks on a NetSim segment, each with or without offloads (a TAP with a virtio header:
/// super-frames and partial checksums both ways).
func makeOffloadPair(seed: UInt64, faults: LinkFaults = .perfect, mtu: Int = 1500, serverOffload: Bool,
                     clientOffload: Bool, ipv6: Bool = false) -> (NetSim, NetStack, NetStack, RecordingPort, RecordingPort) {
    let sim = NetSim(seed: seed)
    let ps = sim.makePort(faults: faults), pc = sim.makePort(faults: faults)
    if serverOffload { ps.transmitOffloads = .all; ps.receivesOffloads = true }
    if clientOffload { pc.transmitOffloads = .all; pc.receivesOffloads = true }
    let rs = RecordingPort(ps), rc = RecordingPort(pc)
    var tcp = TCPConfig()
    tcp.receiveBufferSize = 1 << 20
    tcp.sendBufferSize = 1 << 20
    var sc = StackConfig(mac: ourMAC, mtu: mtu, addresses: [IPv4CIDR(address: serverIP, prefixLength: 24)], tcp: tcp)
    sc.arpMaxTries = 12
    var cc = StackConfig(mac: peerMAC, mtu: mtu, addresses: [IPv4CIDR(address: clientIP, prefixLength: 24)], tcp: tcp)
    cc.arpMaxTries = 12
    if ipv6 {
        sc.addresses6 = [IPv6CIDR(address: serverIP6, prefixLength: 64)]
        cc.addresses6 = [IPv6CIDR(address: clientIP6, prefixLength: 64)]
        sc.dadTransmits = 0
        cc.dadTransmits = 0
    }
    let server = NetStack(config: sc, sink: rs, random: XorShiftRandom(seed: seed &+ 1))
    let client = NetStack(config: cc, sink: rc, random: XorShiftRandom(seed: seed &+ 2))
    sim.attach(server, to: ps); sim.attach(client, to: pc)
    server.up(now: sim.now); client.up(now: sim.now)
    return (sim, server, client, rs, rc)
}

/// Client sends `data` to a server socket on port 5001; returns what the server read, and
/// whether both sides finished.
func transfer(_ sim: NetSim, server: NetStack, client: NetStack, _ data: [UInt8],
              limit: Duration = .seconds(600), to serverAddress: IPAddress = IPAddress(serverIP)) throws
    -> (got: [UInt8], ok: Bool, failed: SocketError?) {
    let listener = try server.tcp.listen(local: IPEndpoint(.v6Any, 5001), backlog: 4, now: sim.now)
    let c = try ClientConn(stack: client, port: 5001, now: sim.now, send: data, server: serverAddress)
    var conn: SocketHandle?
    var got: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 64 << 10)
    var serverClosed = false
    let ok = sim.run(for: limit) {
        c.step(now: sim.now)
        server.drainEvents { ev in
            if case let .acceptable(l) = ev, l == listener, let h = try? server.tcp.accept(l, now: sim.now) {
                conn = h
            }
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
    return (got, ok, c.failed)
}

@Suite struct VirtioHeaderTests {
    @Test func layoutIsLittleEndianTenBytes() {
        let h = VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, gsoType: VirtioNetHeader.gsoTCPv4,
                                headerLength: 66, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        var bytes = [UInt8](repeating: 0xEE, count: 12)
        bytes.withUnsafeMutableBytes { h.store(to: $0.baseAddress!) }
        #expect(bytes == [1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0, 0xEE, 0xEE])
        let back = bytes.withUnsafeBytes { VirtioNetHeader(loading: $0.baseAddress!) }
        #expect(back == h)
    }

    @Test func offloadStateFromHeader() throws {
        let tso = try #require(FrameOffload(virtio: VirtioNetHeader(flags: 1, gsoType: VirtioNetHeader.gsoTCPv4 | VirtioNetHeader.gsoECN,
                                                                    headerLength: 66, gsoSize: 1448, checksumStart: 34,
                                                                    checksumOffset: 16)))
        #expect(tso == FrameOffload(segmentation: .tcp4, segmentSize: 1448, checksum: .partial, checksumStart: 34,
                                    checksumOffset: 16))
        let uso = try #require(FrameOffload(virtio: VirtioNetHeader(flags: 1, gsoType: VirtioNetHeader.gsoUDPL4, gsoSize: 1200,
                                                                    checksumStart: 34, checksumOffset: 6)))
        #expect(uso.segmentation == .udp4 && uso.segmentSize == 1200)
        #expect(FrameOffload(virtio: VirtioNetHeader(flags: VirtioNetHeader.flagDataValid))?.checksum == .valid)
        #expect(FrameOffload(virtio: VirtioNetHeader()) == FrameOffload.none)
        #expect(FrameOffload(virtio: VirtioNetHeader(gsoType: VirtioNetHeader.gsoTCPv6, gsoSize: 1428))
                == FrameOffload(segmentation: .tcp6, segmentSize: 1428))
        // What the stack cannot take: dropped, not misread.
        #expect(FrameOffload(virtio: VirtioNetHeader(gsoType: VirtioNetHeader.gsoUDP, gsoSize: 1400)) == nil)
        #expect(FrameOffload(virtio: VirtioNetHeader(gsoType: VirtioNetHeader.gsoTCPv4, gsoSize: 0)) == nil)
        #expect(FrameOffload(virtio: VirtioNetHeader(gsoType: 9, gsoSize: 100)) == nil)
    }

    @Test func headerFromOffloadState() {
        let o = FrameOffload(segmentation: .tcp4, segmentSize: 1448, checksum: .partial, checksumStart: 34, checksumOffset: 16)
        #expect(o.virtioHeader(headerLength: 66) == VirtioNetHeader(flags: 1, gsoType: 1, headerLength: 66, gsoSize: 1448,
                                                                    checksumStart: 34, checksumOffset: 16))
        // A plain frame: all zero (hdr_len only matters with segmentation).
        #expect(FrameOffload.none.virtioHeader(headerLength: 54) == VirtioNetHeader())
        let partial = FrameOffload(checksum: .partial, checksumStart: 34, checksumOffset: 6)
        #expect(partial.virtioHeader(headerLength: 42) == VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 6))
    }
}

@Suite struct ChecksumCopyTests {
    /// `copyPartial` and the two-piece `partial` agree with one `partial` over the whole, for
    /// every length around the vector width and every split, odd ones included.
    @Test func copyAndSplitSumsMatchOnePass() {
        let data = pattern(300, seed: 7)
        data.withUnsafeBytes { src in
            var dst = [UInt8](repeating: 0, count: 300)
            for n in [0, 1, 2, 3, 4, 5, 31, 32, 33, 63, 64, 65, 100, 255, 299, 300] {
                let want = Checksum.fold16(Checksum.partial(src.baseAddress!, count: n, initial: 0x1234))
                dst.withUnsafeMutableBytes { d in
                    let got = Checksum.fold16(Checksum.copyPartial(from: src.baseAddress!, to: d.baseAddress!, count: n,
                                                                   initial: 0x1234))
                    #expect(got == want, "copyPartial n=\(n)")
                }
                #expect(Array(dst[0..<n]) == Array(data[0..<n]))
                for split in [0, 1, 2, 3, n / 2, max(n - 1, 0), n] where split <= n {
                    let a = UnsafeRawBufferPointer(rebasing: src[0..<split])
                    let b = UnsafeRawBufferPointer(rebasing: src[split..<n])
                    #expect(Checksum.fold16(Checksum.partial(a, b, initial: 0x1234)) == want, "n=\(n) split=\(split)")
                    dst = [UInt8](repeating: 0, count: 300)
                    let s = dst.withUnsafeMutableBytes { Checksum.partial(a, b, initial: 0x1234, copyTo: $0.baseAddress!) }
                    #expect(Checksum.fold16(s) == want)
                    #expect(Array(dst[0..<n]) == Array(data[0..<n]))
                }
            }
        }
    }
}

@Suite struct ChecksumOffloadInputTests {
    let local = IPEndpoint(ourIP, 5000), remote = IPEndpoint(peerIP, 4000)

    /// A UDP frame whose checksum field is `field` (the payload is correct).
    func udpFrame(field: UInt16) -> [UInt8] {
        var f = Build.udpFrame(from: remote, to: local, Array("offload".utf8))
        f[40] = UInt8(field >> 8); f[41] = UInt8(field & 0xFF)
        return f
    }

    /// The pseudo-header sum a kernel leaves in a partial UDP checksum.
    var pseudo: UInt16 {
        ~Checksum.finish(Checksum.pseudoHeader(src: peerIP, dst: ourIP, proto: IPProtocol.udp, length: 8 + 7))
    }

    func deliver(_ frame: [UInt8], _ o: FrameOffload) -> (NetStack, Int) {
        let (stack, _) = makeStack()
        let h = try! stack.udpOpen(local: local)
        frame.withUnsafeBytes { stack.receive(frame: $0, offload: o, now: t0) }
        var buf = [UInt8](repeating: 0, count: 64)
        let n = buf.withUnsafeMutableBytes { (try? stack.udpReceive(h, into: $0))?.count ?? -1 }
        return (stack, n)
    }

    @Test func partialChecksumIsNotVerified() {
        let (_, n) = deliver(udpFrame(field: pseudo), FrameOffload(checksum: .partial, checksumStart: 34, checksumOffset: 6))
        #expect(n == 7)
    }

    @Test func kernelVerifiedChecksumIsNotVerifiedAgain() {
        let (_, n) = deliver(udpFrame(field: 0x1357), FrameOffload(checksum: .valid))
        #expect(n == 7)
    }

    @Test func withoutOffloadStateABadChecksumDrops() {
        let (stack, n) = deliver(udpFrame(field: 0x1357), .none)
        #expect(n == -1)
        #expect(stack.counters.droppedChecksum == 1)
    }

    /// A partial checksum that does not start at this datagram's L4 header vouches for nothing:
    /// the checksum is verified, and the pseudo-header sum alone fails.
    @Test func partialChecksumElsewhereIsVerified() {
        let (stack, n) = deliver(udpFrame(field: pseudo), FrameOffload(checksum: .partial, checksumStart: 30, checksumOffset: 6))
        #expect(n == -1)
        #expect(stack.counters.droppedChecksum == 1)
    }

    @Test func virtioFramesParseTheirHeader() {
        let (stack, _) = makeStack()
        let h = try! stack.udpOpen(local: local)
        var frame = [UInt8](repeating: 0, count: VirtioNetHeader.length) + udpFrame(field: pseudo)
        frame.withUnsafeMutableBytes {
            VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, checksumStart: 34, checksumOffset: 6).store(to: $0.baseAddress!)
        }
        frame.withUnsafeBytes { stack.receive(virtioFrame: $0, now: t0) }
        #expect(stack.counters.udpDatagramsIn == 1)
        // Too short for a header, a segmentation type we do not take, and one that does not fit
        // the packet (TCP/IPv6 on UDP/IPv4): dropped and counted.
        [UInt8](repeating: 0, count: 9).withUnsafeBytes { stack.receive(virtioFrame: $0, now: t0) }
        #expect(stack.counters.droppedMalformed == 1)
        frame.withUnsafeMutableBytes {
            VirtioNetHeader(gsoType: VirtioNetHeader.gsoUDP, gsoSize: 1400).store(to: $0.baseAddress!)
        }
        frame.withUnsafeBytes { stack.receive(virtioFrame: $0, now: t0) }
        #expect(stack.counters.droppedUnsupported == 1)
        frame.withUnsafeMutableBytes {
            VirtioNetHeader(gsoType: VirtioNetHeader.gsoTCPv6, gsoSize: 1400).store(to: $0.baseAddress!)
        }
        frame.withUnsafeBytes { stack.receive(virtioFrame: $0, now: t0) }
        #expect(stack.counters.droppedMalformed == 2)
        var buf = [UInt8](repeating: 0, count: 64)
        #expect(buf.withUnsafeMutableBytes { (try? stack.udpReceive(h, into: $0))?.count } == 7)
    }

    /// A USO super-datagram is the datagrams it stands for, each of `segmentSize` bytes but the last.
    @Test func udpSuperDatagramIsSplit() throws {
        let (stack, _) = makeStack()
        let h = try stack.udpOpen(local: local)
        let payload = pattern(350, seed: 2)
        var f = Build.udpFrame(from: remote, to: local, payload)
        f[40] = 0; f[41] = 0
        let o = FrameOffload(segmentation: .udp4, segmentSize: 100, checksum: .partial, checksumStart: 34, checksumOffset: 6)
        f.withUnsafeBytes { stack.receive(frame: $0, offload: o, now: t0) }
        var got: [[UInt8]] = []
        var buf = [UInt8](repeating: 0, count: 512)
        while let r = buf.withUnsafeMutableBytes({ try? stack.udpReceive(h, into: $0) }) {
            #expect(r.from == remote)
            got.append(Array(buf[0..<r.count]))
        }
        #expect(got.map(\.count) == [100, 100, 100, 50])
        #expect(got.flatMap { $0 } == payload)
        #expect(stack.counters.superFramesIn == 1 && stack.counters.udpDatagramsIn == 4)
    }

    /// Segmentation that does not match the packet (TCP segmentation on UDP, or on a fragment)
    /// is malformed.
    @Test func mismatchedSegmentationDrops() throws {
        let (stack, _) = makeStack()
        _ = try stack.udpOpen(local: local)
        let f = Build.udpFrame(from: remote, to: local, pattern(40))
        f.withUnsafeBytes { stack.receive(frame: $0, offload: FrameOffload(segmentation: .tcp4, segmentSize: 10), now: t0) }
        let frag = Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.udp, pattern(64), mf: true))
        frag.withUnsafeBytes { stack.receive(frame: $0, offload: FrameOffload(segmentation: .udp4, segmentSize: 10), now: t0) }
        #expect(stack.counters.droppedMalformed == 2)
        #expect(stack.counters.udpDatagramsIn == 0)
    }
}

@Suite(.enabled(if: tcpImplemented, "needs the TCPLayer"))
struct SegmentationOffloadTests {
    /// Every super-segment the sender hands the link is what the kernel's TSO takes: partial
    /// checksum over the pseudo-header with the full length, gso_size = the data per segment,
    /// IPv4 total length of the whole, DF; cut up it gives MSS-sized segments with consecutive
    /// sequence numbers, PSH only at the end, complete checksums and the same bytes.
    @Test func superSegmentShape() throws {
        let (sim, server, client, _, rc) = makeOffloadPair(seed: 3, serverOffload: false, clientOffload: true)
        let data = pattern(3 << 20, seed: 5)
        let r = try transfer(sim, server: server, client: client, data)
        #expect(r.ok && r.failed == nil)
        let same = r.got == data; #expect(same)
        #expect(rc.superSegments.count > 10)
        #expect(client.counters.superFramesOut == UInt64(rc.superSegments.count))
        // Timestamps on: 1500 - 20 - 20 - 12 bytes of data per segment.
        let mss = 1448
        for (bytes, o) in rc.superSegments {
            #expect(o.segmentation == .tcp4 && o.segmentSize == mss)
            #expect(o.checksum == .partial && o.checksumStart == 34 && o.checksumOffset == 16)
            bytes.withUnsafeBytes { raw in
                let ip = try! IPv4HeaderView(UnsafeRawBufferPointer(rebasing: raw[14...]))
                #expect(ip.totalLength == bytes.count - 14 && ip.dontFragment && !ip.isFragment)
                #expect(ip.totalLength <= 65535)
                let tcp = try! TCPHeaderView(ip.payload)
                #expect(tcp.payload.count > mss)
                let want = TCPHeaderRepr.partialChecksum(length: ip.payload.count, source: ip.source, destination: ip.destination)
                #expect(tcp.checksum == want)
            }
            // What the kernel does with a partial checksum: sum from csum_start over the field
            // (holding the pseudo-header sum) and the rest, and store the complement there.
            var completed = bytes
            completed.withUnsafeMutableBytes { raw in
                let p = raw.baseAddress!
                wireStore16(p, 34 + 16, Checksum.finish(Checksum.partial(p + 34, count: raw.count - 34)))
                let ip = try! IPv4HeaderView(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(raw)[14...]))
                #expect(try! TCPHeaderView(ip.payload).checksumValid(source: ip.source, destination: ip.destination))
            }
            var pieces: [[UInt8]] = []
            bytes.withUnsafeBytes { raw in SoftwareSegmentation.segment(raw, offload: o) { pieces.append(Array($0)) } }
            #expect(pieces.count == (bytes.count - 66 + mss - 1) / mss)
            var joined: [UInt8] = []
            var nextSeq: SeqNumber?
            for (i, p) in pieces.enumerated() {
                #expect(p.count <= 1514)
                p.withUnsafeBytes { raw in
                    let ip = try! IPv4HeaderView(UnsafeRawBufferPointer(rebasing: raw[14...]))
                    let tcp = try! TCPHeaderView(ip.payload)
                    #expect(tcp.checksumValid(source: ip.source, destination: ip.destination))
                    if let n = nextSeq { #expect(tcp.sequenceNumber == n) }
                    nextSeq = tcp.sequenceNumber + tcp.payload.count
                    if i < pieces.count - 1 {
                        #expect(tcp.payload.count == mss && !tcp.flags.contains(.psh) && !tcp.flags.contains(.fin))
                    }
                    joined += Array(tcp.payload)
                }
            }
            #expect(joined == Array(bytes[66...]))
        }
    }

    /// Offloads on both sides: super-segments go out, are taken whole, and the ACKs follow
    /// the pieces (not one per super-segment each way); every byte arrives in order.
    @Test func bulkWithOffloadsBothSides() throws {
        let (sim, server, client, rs, rc) = makeOffloadPair(seed: 4, serverOffload: true, clientOffload: true)
        let data = pattern(8 << 20, seed: 6)
        let r = try transfer(sim, server: server, client: client, data)
        #expect(r.ok && r.failed == nil)
        let same = r.got == data; #expect(same)
        #expect(client.counters.superFramesOut > 50)
        #expect(server.counters.superFramesIn == client.counters.superFramesOut)
        // 8 MiB is ~5800 segments of 1448: the sender needed far fewer frames, and the
        // receiver acknowledged per super-segment at most.
        #expect(rc.frames < 1000)
        #expect(rs.frames <= rc.frames + 10)
        #expect(client.counters.oversizeTransmits + server.counters.oversizeTransmits == 0)
    }

    /// The fallbacks: a sender with offloads towards a receiver without (the link cuts its
    /// super-segments, as the kernel does towards a real NIC), and the other way round.
    @Test(arguments: [(true, false), (false, true)])
    func mixedOffloads(clientOffload: Bool, serverOffload: Bool) throws {
        let (sim, server, client, _, _) = makeOffloadPair(seed: 5, serverOffload: serverOffload, clientOffload: clientOffload)
        let data = pattern(2 << 20, seed: 8)
        let r = try transfer(sim, server: server, client: client, data)
        #expect(r.ok && r.failed == nil)
        let same = r.got == data; #expect(same)
        #expect(server.counters.superFramesIn == 0)
        if clientOffload { #expect(client.counters.superFramesOut > 0) } else { #expect(client.counters.superFramesOut == 0) }
    }

    /// Loss, duplication and reordering of whole super-segments: recovery works per MSS piece
    /// (SACK of pieces, MSS-sized retransmissions) and every byte arrives.
    @Test(arguments: [0.01, 0.05])
    func bulkWithOffloadsOverLossyLink(loss: Double) throws {
        let faults = LinkFaults(dropRate: loss, duplicateRate: 0.01, reorderRate: 0.02)
        let (sim, server, client, _, _) = makeOffloadPair(seed: 6, faults: faults, serverOffload: true, clientOffload: true)
        let data = pattern(2 << 20, seed: 9)
        let r = try transfer(sim, server: server, client: client, data, limit: .seconds(1800))
        #expect(r.ok && r.failed == nil)
        #expect(r.got.count == data.count)
        let same = r.got == data; #expect(same)
        #expect(sim.dropped > 0)
        #expect(client.counters.oversizeTransmits == 0)
    }

    /// Without offloads in-order data is summed while it is copied into the ring: a corrupted
    /// segment must leave nothing readable behind (its bytes sat past the tail), and what the
    /// peer sends again lands in the same place.
    @Test func corruptedSegmentsNeverReachTheRing() throws {
        let faults = LinkFaults(corruptRate: 0.2)
        let (sim, server, client, _, _) = makeOffloadPair(seed: 8, faults: faults, serverOffload: false, clientOffload: false)
        let data = pattern(1 << 20, seed: 11)
        let r = try transfer(sim, server: server, client: client, data, limit: .seconds(1800))
        #expect(r.ok && r.failed == nil)
        let same = r.got == data; #expect(same)
        #expect(sim.corrupted > 50)
    }

    /// Direct receive: bytes the driver takes skip the ring; what it leaves is queued in order.
    @Test(arguments: [0, 1, 2])
    func directReceive(mode: Int) throws {
        let (sim, server, client, _, _) = makeOffloadPair(seed: 7, serverOffload: true, clientOffload: true)
        let data = pattern(2 << 20, seed: 10)
        var direct: [UInt8] = []
        var calls = 0
        let take: (SocketHandle, UnsafeRawBufferPointer) -> Int = { _, bytes in
            calls += 1
            // 0: take everything; 1: half; 2: nothing every other time.
            let n = mode == 0 ? bytes.count : mode == 1 ? bytes.count / 2 : (calls % 2 == 0 ? 0 : bytes.count)
            direct += bytes[0..<n]
            return n
        }
        var got: [UInt8] = []
        // Interleave what came directly and what the ring held, in arrival order: the ring
        // is only used while it is non-empty, so reading it after each step keeps the order.
        let listener = try server.tcp.listen(local: IPEndpoint(.any, 5001), backlog: 4, now: sim.now)
        let c = try ClientConn(stack: client, port: 5001, now: sim.now, send: data)
        var conn: SocketHandle?
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        server.tcp.directReceiver = { h, bytes in
            let n = take(h, bytes)
            got += direct; direct.removeAll()
            return n
        }
        let ok = sim.run(for: .seconds(600)) {
            c.step(now: sim.now)
            server.drainEvents { ev in
                if case let .acceptable(l) = ev, l == listener, let h = try? server.tcp.accept(l, now: sim.now) {
                    conn = h
                    server.tcp.setDirectReceive(h, true)
                }
            }
            if let h = conn {
                let n = buf.withUnsafeMutableBytes { (try? server.tcp.receive(h, into: $0, now: sim.now)) ?? 0 }
                got += buf[0..<n]
                return got.count == data.count && server.tcp.isPeerClosed(h)
            }
            return false
        }
        #expect(ok)
        let same = got == data; #expect(same)
        #expect(calls > 0)
    }
}
