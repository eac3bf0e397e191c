import Testing
@testable import NetStack

/// A transmitter that records every segment it is asked to send.
final class RecordingTransmitter: IPTransmitter {
    struct Packet { var src: IPAddress; var dst: IPAddress; var bytes: [UInt8] }
    var maxPayloadBytes = 1480
    /// What `segmentationLimit` offers (0: no TSO, the default).
    var tsoLimit = 0
    var packets: [Packet] = []
    func segmentationLimit(to dst: IPAddress) -> Int { tsoLimit }
    /// Segments asked for with more room than the path allows (a real interface drops them).
    var oversize = 0
    func maxPayload(to dst: IPAddress) -> Int { maxPayloadBytes }
    func transmit(src: IPAddress, dst: IPAddress, proto: UInt8, capacity: Int,
                  _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        if capacity > maxPayloadBytes { oversize += 1 }
        var buf = [UInt8](repeating: 0, count: min(capacity, maxPayloadBytes))
        let n = buf.withUnsafeMutableBytes { fill($0) }
        if n > 0 { packets.append(Packet(src: src, dst: dst, bytes: Array(buf[0..<n]))) }
        return true
    }
}

/// A parsed segment as seen on the wire.
struct Seg: CustomStringConvertible {
    var src: IPEndpoint
    var dst: IPEndpoint
    var seq: UInt32
    var ack: UInt32
    var flags: TCPFlags
    var window: UInt16
    var options: TCPSegmentOptions
    var urgentPointer: UInt16
    var payload: [UInt8]
    var checksumOK: Bool

    init(_ p: RecordingTransmitter.Packet) {
        let (hdr, payload, ok) = p.bytes.withUnsafeBytes { raw -> (TCPHeaderRepr, [UInt8], Bool) in
            let v = try! TCPHeaderView(raw)
            return (TCPHeaderRepr(v), Array(v.payload), v.checksumValid(source: p.src, destination: p.dst))
        }
        src = IPEndpoint(p.src, hdr.sourcePort)
        dst = IPEndpoint(p.dst, hdr.destinationPort)
        seq = hdr.sequenceNumber.rawValue
        ack = hdr.ackNumber.rawValue
        flags = hdr.flags
        window = hdr.window
        options = hdr.options
        urgentPointer = hdr.urgentPointer
        self.payload = payload
        checksumOK = ok
    }
    var description: String { "\(src)->\(dst) [\(flags)] seq=\(seq) ack=\(ack) win=\(window) len=\(payload.count)" }
}

func buildSegment(from: IPEndpoint, to: IPEndpoint, seq: UInt32, ack: UInt32 = 0, flags: TCPFlags,
                  window: UInt16 = 65535, options: TCPSegmentOptions = TCPSegmentOptions(),
                  payload: [UInt8] = [], urgentPointer: UInt16 = 0) -> [UInt8] {
    var hdr = TCPHeaderRepr(sourcePort: from.port, destinationPort: to.port, sequenceNumber: SeqNumber(seq),
                            ackNumber: SeqNumber(ack), flags: flags, window: window, options: options)
    hdr.urgentPointer = urgentPointer
    let hl = hdr.headerLength
    var bytes = [UInt8](repeating: 0, count: hl + payload.count)
    bytes.withUnsafeMutableBytes { p in
        hdr.emit(into: p.baseAddress!)
        for (i, b) in payload.enumerated() { p[hl + i] = b }
        TCPHeaderRepr.fillChecksum(p.baseAddress!, length: hl + payload.count, source: from.address, destination: to.address)
    }
    return bytes
}

/// One TCPLayer under test, driven by hand with an injected clock (smoltcp-style fixtures).
final class Harness {
    let layer: TCPLayer
    let tx = RecordingTransmitter()
    var now = Instant.milliseconds(10_000)
    let local = IPEndpoint(IPv4Address(10, 0, 0, 1), 80)
    var remote = IPEndpoint(IPv4Address(10, 0, 0, 2), 40000)
    var events: [SocketEvent] = []
    /// Next sequence number the simulated peer sends, and the next it expects from us.
    var peerSeq: UInt32 = 1000
    var peerAck: UInt32 = 0

    init(_ configure: (inout TCPConfig) -> Void = { _ in }) {
        var c = TCPConfig()
        c.receiveBufferSize = 64 << 10
        c.sendBufferSize = 64 << 10
        configure(&c)
        layer = TCPLayer(config: c, random: XorShiftRandom(seed: 42))
    }

    /// Drives a layer made by the test (its own port table, memory...).
    init(layer: TCPLayer) { self.layer = layer }

    func inject(seq: UInt32? = nil, ack: UInt32? = nil, flags: TCPFlags, window: UInt16 = 65535,
                options: TCPSegmentOptions = TCPSegmentOptions(), payload: [UInt8] = [], from: IPEndpoint? = nil,
                urgentPointer: UInt16 = 0) {
        let bytes = buildSegment(from: from ?? remote, to: local, seq: seq ?? peerSeq, ack: ack ?? peerAck,
                                 flags: flags, window: window, options: options, payload: payload,
                                 urgentPointer: urgentPointer)
        bytes.withUnsafeBytes {
            layer.receive(src: (from ?? remote).address, dst: local.address, segment: $0, now: now, tx: tx)
        }
        collectEvents()
    }

    @discardableResult func poll() -> Instant? {
        let d = layer.poll(now: now, tx: tx)
        collectEvents()
        return d
    }

    func advance(ms: UInt64) { now = now + .milliseconds(ms) }
    /// Moves time forward step by step, polling at each deadline, until `until`.
    func run(untilMs ms: UInt64) {
        let end = now + .milliseconds(ms)
        while true {
            let d = poll()
            guard let d, d <= end else { break }
            if d > now { now = d }
        }
        now = end
        poll()
    }

    func collectEvents() { layer.drainEvents { events.append($0) } }
    func takeEvents() -> [SocketEvent] { defer { events.removeAll() }; return events }
    func sent() -> [Seg] {
        defer { tx.packets.removeAll() }
        return tx.packets.map(Seg.init)
    }

    static func peerOptions(mss: UInt16 = 1460, ws: UInt8? = nil, sack: Bool = false,
                            ts: (UInt32, UInt32)? = nil) -> TCPSegmentOptions {
        var o = TCPSegmentOptions()
        o.maxSegmentSize = mss
        o.windowScale = ws
        o.sackPermitted = sack
        if let ts { o.timestamp = (ts.0, ts.1) }
        return o
    }

    /// Listen, take a SYN, answer the SYN-ACK, accept. Leaves `peerSeq`/`peerAck` ready.
    func passiveEstablished(options: TCPSegmentOptions = Harness.peerOptions()) -> SocketHandle {
        let l = try! layer.listen(local: local, backlog: 8, now: now)
        listener = l
        inject(seq: peerSeq, ack: 0, flags: .syn, options: options)
        let synack = sent()
        precondition(synack.count == 1 && synack[0].flags == [.syn, .ack], "no SYN-ACK: \(synack)")
        peerSeq &+= 1
        peerAck = synack[0].seq &+ 1
        inject(flags: .ack)
        _ = takeEvents()
        let h = try! layer.accept(l, now: now)!
        _ = takeEvents()
        return h
    }
    var listener: SocketHandle?

    /// Connect, answer the SYN with a SYN-ACK; our ACK is consumed.
    func activeEstablished(options: TCPSegmentOptions = Harness.peerOptions()) -> SocketHandle {
        let h = try! layer.connect(local: IPEndpoint(local.address, 0), remote: remote, now: now)
        poll()
        let syn = sent()
        precondition(syn.count == 1 && syn[0].flags == .syn)
        activeLocal = syn[0].src
        peerAck = syn[0].seq &+ 1
        injectTo(activeLocal!, seq: peerSeq, ack: peerAck, flags: [.syn, .ack], options: options)
        peerSeq &+= 1
        _ = sent()
        _ = takeEvents()
        return h
    }
    var activeLocal: IPEndpoint?

    func injectTo(_ dst: IPEndpoint, seq: UInt32, ack: UInt32, flags: TCPFlags, window: UInt16 = 65535,
                  options: TCPSegmentOptions = TCPSegmentOptions(), payload: [UInt8] = []) {
        let bytes = buildSegment(from: remote, to: dst, seq: seq, ack: ack, flags: flags, window: window,
                                 options: options, payload: payload)
        bytes.withUnsafeBytes { layer.receive(src: remote.address, dst: dst.address, segment: $0, now: now, tx: tx) }
        collectEvents()
    }

    func write(_ h: SocketHandle, _ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { try! layer.send(h, $0, now: now) }
    }
    func read(_ h: SocketHandle, max: Int = 1 << 20) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: max)
        let n = buf.withUnsafeMutableBytes { try! layer.receive(h, into: $0, now: now) }
        return Array(buf[0..<n])
    }
    func state(_ h: SocketHandle) -> TCPState? { layer.info(h)?.state }
}

func bytes(_ n: Int, seed: Int = 0) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: ($0 &+ seed) % 251) } }
