import Testing
@testable import NetStack

/// Two TCPLayers joined by a simulated link that can drop, duplicate, reorder and delay segments
/// (seeded, so every run is the same). Time only moves when the simulation advances it.
final class SimLink {
    struct Flight {
        var at: Instant
        var order: UInt64
        var toB: Bool
        var src: IPAddress
        var dst: IPAddress
        var bytes: [UInt8]
    }

    final class End: IPTransmitter {
        unowned let link: SimLink
        let isA: Bool
        init(link: SimLink, isA: Bool) { self.link = link; self.isA = isA }
        func maxPayload(to dst: IPAddress) -> Int { link.mtu - 20 }
        func transmit(src: IPAddress, dst: IPAddress, proto: UInt8, capacity: Int,
                      _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
            // Like a real interface: never more than the MTU allows.
            if capacity > link.mtu - 20 { link.oversize += 1 }
            var buf = [UInt8](repeating: 0, count: min(capacity, link.mtu - 20))
            let n = buf.withUnsafeMutableBytes { fill($0) }
            guard n > 0 else { return true }
            buf.removeLast(buf.count - n)
            link.enqueue(toB: isA, src: src, dst: dst, bytes: buf)
            return true
        }
    }

    let a: TCPLayer
    let b: TCPLayer
    var endA: End!
    var endB: End!
    var now = Instant.milliseconds(1000)
    var rng: XorShiftRandom
    var mtu = 1500
    var loss = 0.0
    var duplicate = 0.0
    var reorder = 0.0
    var delay = Duration.milliseconds(5)
    var jitter = Duration.milliseconds(3)
    var queue: [Flight] = []
    var order: UInt64 = 0
    var sentSegments = 0
    var oversize = 0
    var droppedSegments = 0
    var eventsA: [SocketEvent] = []
    var eventsB: [SocketEvent] = []

    init(config: TCPConfig, seed: UInt64) {
        a = TCPLayer(config: config, random: XorShiftRandom(seed: seed &+ 1))
        b = TCPLayer(config: config, random: XorShiftRandom(seed: seed &+ 2))
        rng = XorShiftRandom(seed: seed)
        endA = End(link: self, isA: true)
        endB = End(link: self, isA: false)
    }

    func chance(_ p: Double) -> Bool {
        p > 0 && Double(rng.next() >> 11) / Double(1 << 53) < p
    }

    var trace: [String]? = nil
    func enqueue(toB: Bool, src: IPAddress, dst: IPAddress, bytes: [UInt8]) {
        sentSegments += 1
        let lost = chance(loss)
        if trace != nil {
            let s = Seg(RecordingTransmitter.Packet(src: src, dst: dst, bytes: bytes))
            trace!.append("\(now) \(toB ? "A>B" : "B>A") \(lost ? "LOST " : "")[\(s.flags)] seq=\(s.seq) ack=\(s.ack) win=\(s.window) len=\(s.payload.count) sack=\((0..<s.options.sackBlocks.count).map { s.options.sackBlocks[$0] })")
            if trace!.count > 400 { trace!.removeFirst(100) }
        }
        if lost { droppedSegments += 1; return }
        var at = now + delay
        if chance(reorder) { at = at + jitter }
        order &+= 1
        queue.append(Flight(at: at, order: order, toB: toB, src: src, dst: dst, bytes: bytes))
        if chance(duplicate) {
            order &+= 1
            queue.append(Flight(at: at + .milliseconds(1), order: order, toB: toB, src: src, dst: dst, bytes: bytes))
        }
    }

    func deliverDue() {
        while true {
            var best = -1
            for i in queue.indices where queue[i].at <= now {
                if best < 0 || queue[i].at < queue[best].at
                    || (queue[i].at == queue[best].at && queue[i].order < queue[best].order) { best = i }
            }
            if best < 0 { return }
            let f = queue.remove(at: best)
            f.bytes.withUnsafeBytes { raw in
                if f.toB { b.receive(src: f.src, dst: f.dst, segment: raw, now: now, tx: endB) }
                else { a.receive(src: f.src, dst: f.dst, segment: raw, now: now, tx: endA) }
            }
        }
    }

    /// One simulation step: deliver what is due, poll both sides, run `app`, then jump to the
    /// next interesting instant. Returns false when nothing is pending anywhere.
    @discardableResult
    func step(_ app: () -> Void = {}) -> Bool {
        deliverDue()
        let da = a.poll(now: now, tx: endA)
        let db = b.poll(now: now, tx: endB)
        a.drainEvents { eventsA.append($0) }
        b.drainEvents { eventsB.append($0) }
        app()
        let da2 = a.poll(now: now, tx: endA)
        let db2 = b.poll(now: now, tx: endB)
        a.drainEvents { eventsA.append($0) }
        b.drainEvents { eventsB.append($0) }
        var next = earliest(earliest(da, db), earliest(da2, db2))
        for f in queue { next = earliest(next, f.at) }
        guard let n = next else { return false }
        if n > now { now = n } else { now = now + .microseconds(100) }
        return true
    }
}
