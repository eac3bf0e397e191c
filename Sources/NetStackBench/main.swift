// NetStackBench — a fixed, deterministic in-process workload for instruction counts.
//
//   NetStackBench tcp MB   two TCPLayers joined by an in-memory arena (no IP, no Ethernet):
//                          the TCP code alone, which is where exclusivity checks matter
//   NetStackBench sim MB   two NetStacks on a NetSim link; A writes MB MiB to B's discard
//                          service (Ethernet, ARP, IPv4, TCP and the service, as ztapd runs it)
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
    let storage: UnsafeMutableRawPointer
    @exclusivity(unchecked) var lengths: [Int]
    @exclusivity(unchecked) var srcs: [IPv4Address]
    @exclusivity(unchecked) var dsts: [IPv4Address]
    @exclusivity(unchecked) var head = 0
    @exclusivity(unchecked) var count = 0
    @exclusivity(unchecked) var segments = 0

    init(mtu: Int, slots: Int) {
        slotSize = mtu - 20
        self.slots = slots
        storage = .allocate(byteCount: slotSize * slots, alignment: 16)
        lengths = Array(repeating: 0, count: slots)
        srcs = Array(repeating: .any, count: slots)
        dsts = Array(repeating: .any, count: slots)
    }
    deinit { storage.deallocate() }

    func maxPayload(to dst: IPv4Address) -> Int { slotSize }
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
                          now: now, tx: reply)
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

func runTCP(total: Int) throws(SocketError) {
    var cfg = TCPConfig()
    cfg.timeWait = .seconds(1)
    let a = TCPLayer(config: cfg, random: XorShiftRandom(seed: 1))
    let b = TCPLayer(config: cfg, random: XorShiftRandom(seed: 2))
    let ab = ArenaLink(mtu: 1500, slots: 8192)
    let ba = ArenaLink(mtu: 1500, slots: 8192)
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
    func sendFrame(_ frame: UnsafeRawBufferPointer) { frames += 1; port.sendFrame(frame) }
}

func runSim(total: Int) throws(SocketError) {
    let sim = NetSim(seed: 7)
    let pa = sim.makePort(), pb = sim.makePort()
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
    print("sim: \(total >> 20) MiB, frames A->B \(sa.frames), B->A \(sb.frames), delivered \(sim.delivered)")
}

let args = CommandLine.arguments
let mode = args.count > 1 ? args[1] : "tcp"
let mb = args.count > 2 ? Int(args[2]) ?? 64 : 64
do throws(SocketError) {
    switch mode {
    case "tcp": try runTCP(total: mb << 20)
    case "sim": try runSim(total: mb << 20)
    default: fail("usage: NetStackBench tcp|sim [MiB]")
    }
} catch {
    fail("\(error)")
}
