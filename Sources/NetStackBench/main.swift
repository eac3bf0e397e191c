// NetStackBench — a fixed, deterministic in-process workload for instruction counts.
//
//   NetStackBench tcp MB   two TCPLayers joined by an in-memory arena (no IP, no Ethernet):
//                          the TCP code alone, which is where exclusivity checks matter
//   NetStackBench sim MB   two NetStacks on a NetSim link; A writes MB MiB to B's discard
//                          service (Ethernet, ARP, IPv4, TCP and the service, as ztapd runs it)
//   tcp-offload, sim-offload   the same with the link's offloads, as on a TAP with a virtio
//                          header: 64 KiB TSO super-segments out, taken whole on input, no
//                          checksums (tcp-offload: the arena hands segments over uncopied and
//                          checksums nothing; sim-offload: NetSim ports with every offload, so
//                          only NetSim's own copies of each frame remain)
//
// Meant for `valgrind --tool=callgrind` (instruction counts do not depend on the machine's
// load; wall-clock figures do): the virtual clock, the seeds and the link are fixed, so every
// run executes the same instructions. It prints what it moved so a count can be divided per MB
// and per segment. Not a throughput benchmark: bench/ has those.
import NetStack
#if canImport(Glibc)
import Glibc
#endif

/// A perfect one-way link for the `tcp` mode: segments are copied into a preallocated arena
/// and delivered in order, so the link itself allocates nothing per segment. Its properties are
/// `@exclusivity(unchecked)` so the harness's own access checks stay out of the counts.
final class ArenaLink: IPv4Transmitter {
    let slotSize: Int
    let slots: Int
    /// Offloads: super-segments up to 64 KiB, checksums left alone both ways, payload gathered.
    let offload: Bool
    let storage: UnsafeMutableRawPointer
    @exclusivity(unchecked) var lengths: [Int]
    @exclusivity(unchecked) var srcs: [IPv4Address]
    @exclusivity(unchecked) var dsts: [IPv4Address]
    @exclusivity(unchecked) var head = 0
    @exclusivity(unchecked) var count = 0
    @exclusivity(unchecked) var segments = 0
    @exclusivity(unchecked) var pieces: [Int]
    let mtu: Int

    init(mtu: Int, slots: Int, offload: Bool = false) {
        self.mtu = mtu
        slotSize = offload ? maxSegmentationL4 : mtu - 20
        self.slots = slots
        self.offload = offload
        storage = .allocate(byteCount: slotSize * slots, alignment: 16)
        lengths = Array(repeating: 0, count: slots)
        srcs = Array(repeating: .any, count: slots)
        dsts = Array(repeating: .any, count: slots)
        pieces = Array(repeating: 0, count: slots)
    }
    deinit { storage.deallocate() }

    func maxPayload(to dst: IPv4Address) -> Int { mtu - 20 }
    func segmentationLimit(to dst: IPv4Address) -> Int { offload ? maxSegmentationL4 : 0 }

    /// With offloads the header is written and the payload gathered (one copy: the arena stands
    /// for the kernel's skb); no checksum, as the kernel computes none for a local socket.
    func transmitTCP(src: IPv4Address, dst: IPv4Address, header: TCPHeaderRepr, payload: UnsafeRawBufferPointer,
                     _ more: UnsafeRawBufferPointer, segmentSize: Int, options: IPv4SendOptions) -> Bool {
        guard offload else {
            let hl = header.headerLength
            let total = hl + payload.count + more.count
            return transmit(src: src, dst: dst, proto: IPProtocol.tcp, capacity: total) { buf in
                guard buf.count >= total, let p = buf.baseAddress else { return 0 }
                header.emit(into: p)
                TCPHeaderRepr.fillChecksum(p, headerLength: hl, payload: payload, more, copy: true, source: src,
                                           destination: dst)
                return total
            }
        }
        guard count < slots else { return false }
        let i = (head + count) % slots
        let p = storage + i * slotSize
        let hl = header.headerLength
        header.emit(into: p)
        if let a = payload.baseAddress { (p + hl).copyMemory(from: a, byteCount: payload.count) }
        if let b = more.baseAddress { (p + hl + payload.count).copyMemory(from: b, byteCount: more.count) }
        lengths[i] = hl + payload.count + more.count
        srcs[i] = src
        dsts[i] = dst
        pieces[i] = segmentSize
        count += 1
        segments += 1
        return true
    }

    /// The IPv4 header is not built here: the socket's TTL/TOS have nowhere to go.
    func transmit(src: IPv4Address, dst: IPv4Address, proto: UInt8, capacity: Int, options: IPv4SendOptions,
                  _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        transmit(src: src, dst: dst, proto: proto, capacity: capacity, fill)
    }
    func transmit(src: IPv4Address, dst: IPv4Address, proto: UInt8, capacity: Int,
                  _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard count < slots, capacity <= slotSize else { return false }
        let i = (head + count) % slots
        let n = fill(UnsafeMutableRawBufferPointer(start: storage + i * slotSize, count: capacity))
        guard n > 0 else { return true }
        lengths[i] = n
        pieces[i] = 0
        srcs[i] = src
        dsts[i] = dst
        count += 1
        segments += 1
        return true
    }

    func deliver(to layer: TCPLayer, now: Instant, reply: ArenaLink) {
        var n = count
        while n > 0 {
            let i = head
            layer.receive(src: srcs[i], dst: dsts[i],
                          segment: UnsafeRawBufferPointer(start: storage + i * slotSize, count: lengths[i]),
                          checksumVerified: offload, segmentSize: pieces[i], now: now, tx: reply)
            head = (head + 1) % slots
            count -= 1
            n -= 1
        }
    }
}

func fail(_ s: String) -> Never {
    print("NetStackBench: \(s)")
    exit(1)
}

func runTCP(total: Int, offload: Bool) throws(SocketError) {
    var cfg = TCPConfig()
    cfg.timeWait = .seconds(1)
    let a = TCPLayer(config: cfg, random: XorShiftRandom(seed: 1))
    let b = TCPLayer(config: cfg, random: XorShiftRandom(seed: 2))
    let ab = ArenaLink(mtu: 1500, slots: offload ? 512 : 8192, offload: offload)
    let ba = ArenaLink(mtu: 1500, slots: offload ? 512 : 8192, offload: offload)
    let addrA = IPv4Address(10, 2, 0, 1), addrB = IPv4Address(10, 2, 0, 2)
    var now = Instant.milliseconds(1)
    let l = try b.listen(local: IPv4Endpoint(addrB, 5201), backlog: 1, now: now)
    let ca = try a.connect(local: IPv4Endpoint(addrA, 0), remote: IPv4Endpoint(addrB, 5201), now: now)
    var cb: SocketHandle?
    var sent = 0, received = 0, rounds = 0
    while rounds < 10_000_000 {
        rounds += 1
        now = now + .microseconds(20)
        _ = a.poll(now: now, tx: ab)
        _ = b.poll(now: now, tx: ba)
        ab.deliver(to: b, now: now, reply: ba)
        ba.deliver(to: a, now: now, reply: ab)
        if cb == nil { cb = try b.accept(l, now: now) }
        if sent < total, let tx = a.sendBuffer(ca), tx.free > 0 {
            let n = min(tx.free, total - sent)
            a.commitSend(ca, n, now: now)
            sent += n
            if sent == total { try a.shutdownWrite(ca, now: now) }
        }
        if let cb, let rx = b.receiveBuffer(cb), !rx.isEmpty {
            let n = rx.count
            received += n
            b.consume(cb, n, now: now)
        }
        a.drainEvents { _ in }
        b.drainEvents { _ in }
        if received == total, let cb, b.isPeerClosed(cb) { break }
    }
    guard received == total else { fail("tcp: received \(received) of \(total)") }
    let retrans = a.info(ca)?.retransmissions ?? 0
    print("tcp: \(total >> 20) MiB, segments A->B \(ab.segments), B->A \(ba.segments), rounds \(rounds), retransmissions \(retrans)")
}

final class Counter: FrameSink {
    let port: SimPort
    @exclusivity(unchecked) var frames = 0
    init(_ p: SimPort) { port = p }
    var transmitOffloads: TransmitOffloads { port.transmitOffloads }
    func sendFrame(_ frame: UnsafeRawBufferPointer) { frames += 1; port.sendFrame(frame) }
    func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                   offload: FrameOffload) {
        frames += 1
        port.sendFrame(head: head, payload: payload, more, offload: offload)
    }
}

func runSim(total: Int, offload: Bool) throws(SocketError) {
    let sim = NetSim(seed: 7)
    let pa = sim.makePort(), pb = sim.makePort()
    if offload {
        for p in [pa, pb] {
            p.transmitOffloads = .all
            p.receivesOffloads = true
        }
    }
    let sa = Counter(pa), sb = Counter(pb)
    let ipA = IPv4Address(10, 3, 0, 1), ipB = IPv4Address(10, 3, 0, 2)
    let a = NetStack(config: StackConfig(mac: MACAddress(2, 0, 0, 0, 0, 1), mtu: 1500,
                                         addresses: [IPv4CIDR(address: ipA, prefixLength: 24)]),
                     sink: sa, random: XorShiftRandom(seed: 1))
    let b = NetStack(config: StackConfig(mac: MACAddress(2, 0, 0, 0, 0, 2), mtu: 1500,
                                         addresses: [IPv4CIDR(address: ipB, prefixLength: 24)],
                                         services: [.discard]),
                     sink: sb, random: XorShiftRandom(seed: 2))
    sim.attach(a, to: pa)
    sim.attach(b, to: pb)
    a.up(now: sim.now)
    b.up(now: sim.now)
    let h = try a.tcpConnect(local: IPv4Endpoint(.any, 0), remote: IPv4Endpoint(ipB, 9), now: sim.now)
    var sent = 0
    var closed = false
    var failure: SocketError?
    let done = sim.run(for: .seconds(3600)) {
        a.drainEvents { e in
            switch e {
            case .failed(_, let err): failure = err
            case .closed: closed = true
            default: break
            }
        }
        if failure != nil || closed { return true }
        if sent < total, let tx = a.tcp.sendBuffer(h), tx.free > 0 {
            let n = min(tx.free, total - sent)
            a.tcp.commitSend(h, n, now: sim.now)
            sent += n
            if sent == total { try? a.tcp.shutdownWrite(h, now: sim.now) }
        }
        // Done once everything is acknowledged (the discard service then closes its side).
        return sent == total && (a.tcp.info(h)?.sendQueue ?? 1) == 0
    }
    if let failure { fail("sim: connection failed: \(failure)") }
    guard done else { fail("sim: did not finish (sent \(sent) of \(total))") }
    print("sim: \(total >> 20) MiB, frames A->B \(sa.frames), B->A \(sb.frames), delivered \(sim.delivered), "
          + "super-frames \(sim.superFrames)")
}

let args = CommandLine.arguments
let mode = args.count > 1 ? args[1] : "tcp"
let mb = args.count > 2 ? Int(args[2]) ?? 64 : 64
do throws(SocketError) {
    switch mode {
    case "tcp": try runTCP(total: mb << 20, offload: false)
    case "sim": try runSim(total: mb << 20, offload: false)
    case "tcp-offload": try runTCP(total: mb << 20, offload: true)
    case "sim-offload": try runSim(total: mb << 20, offload: true)
    default: fail("usage: NetStackBench tcp|sim|tcp-offload|sim-offload [MiB]")
    }
} catch {
    fail("\(error)")
}
