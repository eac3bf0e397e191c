/// A frame-level network simulator for tests: nodes (NetStacks or scripted peers) on one
/// Ethernet segment (a hub: every frame goes to every other port), a virtual clock, and seeded
/// faults per delivery — drop, duplicate, reorder (extra random delay), corrupt, fixed delay.
/// Ports can have offloads, like TAPs with IFF_VNET_HDR: a port's `transmitOffloads` is what
/// its node may send, and a port that `receivesOffloads` gets frames with their offload state
/// (super-frames whole, partial checksums); a port that does not gets what the kernel would
/// put on a wire (`SoftwareSegmentation`). Frames delivered with offload state are never
/// corrupted: that state only ever describes bytes that did not cross a wire.
/// `run` advances the clock straight to the earliest of the nodes' deadlines and the next
/// delivery, so minutes of protocol time cost only the work done. Modelled on smoltcp's
/// loopback + FaultInjector; test infrastructure, not for the data path (it copies frames).

/// What a simulated link does to frames (probabilities in 0...1).
public struct LinkFaults: Sendable {
    public var dropRate = 0.0
    public var duplicateRate = 0.0
    /// Fraction of frames held back by an extra random delay up to `reorderDelay`.
    public var reorderRate = 0.0
    public var reorderDelay = Duration.milliseconds(5)
    public var corruptRate = 0.0
    /// One-way latency of every frame.
    public var delay = Duration.milliseconds(1)
    public init(dropRate: Double = 0, duplicateRate: Double = 0, reorderRate: Double = 0,
                corruptRate: Double = 0, delay: Duration = .milliseconds(1)) {
        self.dropRate = dropRate
        self.duplicateRate = duplicateRate
        self.reorderRate = reorderRate
        self.corruptRate = corruptRate
        self.delay = delay
    }
    public static let perfect = LinkFaults()
}

/// Something attached to the simulated segment.
public protocol SimNode: AnyObject {
    func receive(frame: UnsafeRawBufferPointer, now: Instant)
    /// A frame with offload state (only for ports that `receivesOffloads`).
    func receive(frame: UnsafeRawBufferPointer, offload: FrameOffload, now: Instant)
    func poll(now: Instant) -> Instant?
}

extension SimNode {
    public func receive(frame: UnsafeRawBufferPointer, offload: FrameOffload, now: Instant) {
        receive(frame: frame, now: now)
    }
}

extension NetStack: SimNode {}

/// A node driven by a closure: sees every frame, may answer through its port.
public final class ScriptedNode: SimNode {
    public let port: SimPort
    public var onFrame: (_ frame: [UInt8], _ now: Instant, _ port: SimPort) -> Void
    public private(set) var received: [[UInt8]] = []
    public init(port: SimPort, onFrame: @escaping ([UInt8], Instant, SimPort) -> Void = { _, _, _ in }) {
        self.port = port
        self.onFrame = onFrame
    }
    public func receive(frame: UnsafeRawBufferPointer, now: Instant) {
        let f = Array(frame)
        received.append(f)
        onFrame(f, now, port)
    }
    public func poll(now: Instant) -> Instant? { nil }
}

/// A node's attachment point; it is the node's `FrameSink`.
public final class SimPort: FrameSink {
    public let id: Int
    unowned let sim: NetSim
    /// Faults applied to frames this port sends.
    public var faults: LinkFaults
    /// What the node behind this port may send (set before the node is made: a NetStack reads
    /// it at init, or calls `refreshOffloads`).
    public var transmitOffloads: TransmitOffloads = []
    /// Whether frames arrive here with their offload state instead of as plain frames.
    public var receivesOffloads = false
    init(id: Int, sim: NetSim, faults: LinkFaults) { self.id = id; self.sim = sim; self.faults = faults }
    public func sendFrame(_ frame: UnsafeRawBufferPointer) { sim.transmit(from: self, frame, offload: .none) }
    public func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                          offload: FrameOffload) {
        var bytes = [UInt8](head)
        bytes.append(contentsOf: payload)
        bytes.append(contentsOf: more)
        bytes.withUnsafeBytes { sim.transmit(from: self, $0, offload: offload) }
    }
    /// Sends bytes as if this port's node had (scripted peers).
    public func send(_ frame: [UInt8]) { frame.withUnsafeBytes { sendFrame($0) } }
}

public final class NetSim {
    public private(set) var now: Instant
    var rng: XorShiftRandom
    private var ports: [SimPort] = []
    private var nodes: [SimNode?] = []
    private struct InFlight { var at: Instant; var seq: UInt64; var to: Int; var bytes: [UInt8]; var offload = FrameOffload.none }
    private var inFlight: [InFlight] = []   // sorted by (at, seq); live part starts at `head`
    private var head = 0
    private var seq: UInt64 = 0
    /// Statistics, for tests that want to see the faults happen.
    public private(set) var delivered = 0, dropped = 0, duplicated = 0, corrupted = 0, reordered = 0
    /// Frames sent with offload state (super-frames, partial checksums).
    public private(set) var superFrames = 0
    /// When true, every transmitted frame is recorded (sender port id, bytes).
    public var recordTrace = false
    public private(set) var trace: [(from: Int, bytes: [UInt8])] = []

    public init(seed: UInt64, start: Instant = .milliseconds(1000)) {
        rng = XorShiftRandom(seed: seed)
        now = start
    }

    public func makePort(faults: LinkFaults = .perfect) -> SimPort {
        let p = SimPort(id: ports.count, sim: self, faults: faults)
        ports.append(p)
        nodes.append(nil)
        return p
    }

    public func attach(_ node: SimNode, to port: SimPort) { nodes[port.id] = node }

    private func chance(_ p: Double) -> Bool {
        guard p > 0 else { return false }
        return Double(rng.next() >> 11) / Double(1 << 53) < p
    }

    func transmit(from port: SimPort, _ frame: UnsafeRawBufferPointer, offload: FrameOffload) {
        if !offload.isNone {
            superFrames += 1
            // Receivers with offloads get the frame as it is; the others what a wire carries.
            for p in ports where p.id != port.id && p.receivesOffloads { deliver(from: port, to: p, frame, offload: offload) }
            SoftwareSegmentation.segment(frame, offload: offload) { piece in
                for p in ports where p.id != port.id && !p.receivesOffloads { deliver(from: port, to: p, piece, offload: .none) }
            }
            if recordTrace { SoftwareSegmentation.segment(frame, offload: offload) { trace.append((port.id, Array($0))) } }
            return
        }
        if recordTrace { trace.append((port.id, Array(frame))) }
        for p in ports where p.id != port.id { deliver(from: port, to: p, frame, offload: .none) }
    }

    private func deliver(from port: SimPort, to p: SimPort, _ frame: UnsafeRawBufferPointer, offload: FrameOffload) {
        let f = port.faults
        if chance(f.dropRate) { dropped += 1; return }
        var bytes = Array(frame)
        // Only IP frames are corrupted: ARP has no checksum of its own (a real link's FCS drops
        // such frames), and a poisoned cache would only test the cache lifetime.
        if chance(f.corruptRate), offload.isNone, bytes.count > 14,
           (bytes[12] == 0x08 && bytes[13] == 0x00) || (bytes[12] == 0x86 && bytes[13] == 0xDD) {
            let i = 14 + Int(rng.next() % UInt64(bytes.count - 14))
            bytes[i] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            corrupted += 1
        }
        var at = now + f.delay
        if chance(f.reorderRate) {
            at = at + Duration(nanoseconds: rng.next() % max(1, f.reorderDelay.nanoseconds))
            reordered += 1
        }
        enqueue(InFlight(at: at, seq: 0, to: p.id, bytes: bytes, offload: offload))
        if chance(f.duplicateRate) {
            duplicated += 1
            enqueue(InFlight(at: at + .microseconds(10), seq: 0, to: p.id, bytes: bytes, offload: offload))
        }
    }

    private func enqueue(_ e: InFlight) {
        var e = e
        seq &+= 1
        e.seq = seq
        // Keep sorted by (at, seq): binary search for the insertion point.
        var lo = head, hi = inFlight.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let m = inFlight[mid]
            if m.at < e.at || (m.at == e.at && m.seq < e.seq) { lo = mid + 1 } else { hi = mid }
        }
        inFlight.insert(e, at: lo)
    }

    /// Frames in flight right now.
    public var framesInFlight: Int { inFlight.count - head }

    private var firstInFlight: InFlight? { head < inFlight.count ? inFlight[head] : nil }

    /// Runs until `done()` holds (true), or virtual time passes `limit` / nothing is left to do
    /// (false). Each step polls every node, then jumps to the next event.
    @discardableResult
    public func run(for limit: Duration, maxSteps: Int = 2_000_000, until done: () -> Bool = { false }) -> Bool {
        let end = now + limit
        var idleSpins: UInt64 = 0
        var steps = 0
        while true {
            steps += 1
            if steps > maxSteps { return done() }
            var next: Instant?
            for n in nodes { if let n { next = earliest(next, n.poll(now: now)) } }
            if done() { return true }
            if let first = firstInFlight { next = earliest(next, first.at) }
            guard let t = next else { return false }
            if t > end { now = end; return done() }
            if t > now {
                now = t
                idleSpins = 0
            } else if firstInFlight.map({ $0.at > now }) ?? true {
                // A node asked to be polled again "now" without anything to deliver: nudge the
                // clock, exponentially (up to 10 ms), so a deadline stuck in the past cannot
                // spin forever.
                idleSpins += 1
                if idleSpins > 2 { now = now + .microseconds(min(1 << min(idleSpins - 2, 20), 10_000)) }
            }
            var batch = 0
            while let f = firstInFlight, f.at <= now {
                head += 1
                if head >= 4096 && head * 2 >= inFlight.count {
                    inFlight.removeFirst(head)
                    head = 0
                }
                delivered += 1
                batch += 1
                if let node = nodes[f.to] {
                    if f.offload.isNone {
                        f.bytes.withUnsafeBytes { node.receive(frame: $0, now: now) }
                    } else {
                        f.bytes.withUnsafeBytes { node.receive(frame: $0, offload: f.offload, now: now) }
                    }
                }
                if batch >= 64 { break }    // poll between bursts, like a driver's batch
            }
        }
    }

    /// Advances the clock by `d`, delivering and polling on the way.
    public func advance(_ d: Duration) { run(for: d) }
}
