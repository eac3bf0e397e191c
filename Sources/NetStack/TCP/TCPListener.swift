/// Passive opens: the listening socket, and what a segment for a listener does (RFC 9293
/// §3.10.7.2): a SYN makes an embryonic connection in SYN-RECEIVED, or, once the listener's SYN
/// queue is full, a stateless SYN-ACK whose ISN is a SYN cookie; an ACK echoing a valid cookie
/// makes the connection the cookie stood for. Anything else draws an RST.

/// A listening socket: its options are inherited by the connections it accepts.
final class TCPListener {
    let binding: PortTable.Binding
    /// The listener bound the port itself (`listen(local:)`) and gives it back when it closes.
    let ownsBinding: Bool
    var local: IPEndpoint { binding.local }
    let slot: UInt32
    let generation: UInt32
    var handle: SocketHandle { SocketHandle(index: slot, generation: generation) }
    var backlog: Int
    var synQueue = 0
    var acceptQueue: [TCPConnection] = []
    /// How many connections the driver took from `acceptQueue` that its app has not accepted yet
    /// (ztapd: those waiting in a listener's accept channel); they count against the backlog.
    var heldByDriver: ((_ room: Int) -> Int)?
    var closed = false
    var released = false
    var rxBufferSize: Int
    var txBufferSize: Int
    var rxLocked = false
    var txLocked = false
    var noDelay: Bool
    var keepAlive: Bool
    var lingerAbort = false
    var congestion: CongestionControl
    /// Inherited by accepted connections; `deferAccept` is the listener's own.
    var options: TCPSocketOptions

    init(binding: PortTable.Binding, ownsBinding: Bool, slot: UInt32, generation: UInt32, backlog: Int,
         config: TCPConfig) {
        self.binding = binding
        self.ownsBinding = ownsBinding
        self.slot = slot
        self.generation = generation
        self.backlog = backlog
        rxBufferSize = config.receiveBufferSize
        txBufferSize = config.sendBufferSize
        noDelay = config.noDelay
        keepAlive = config.keepAlive
        congestion = config.congestionControl
        options = TCPSocketOptions(config)
        acceptQueue.reserveCapacity(min(backlog + 1, 1024))
    }

    /// Linux's sk_acceptq_is_full: backlog + 1 established connections may wait to be accepted;
    /// then SYNs are dropped and a handshake's last ACK is ignored.
    var acceptQueueFull: Bool {
        let n = acceptQueue.count
        if n > backlog { return true }
        guard let held = heldByDriver else { return false }
        return n + held(backlog - n) > backlog
    }
}

extension TCPLayer {
    static let cookieMSS: [Int] = [536, 1200, 1400, 1460, 2760, 4000, 8960, 9000]
    static let cookiePeriodNs: UInt64 = 64_000_000_000

    /// SYN cookie ISN: 5 bits time counter, 3 bits MSS index, 24 bits keyed hash.
    func cookie(_ k: TCPConnKey, clientISN: SeqNumber, counter: UInt64, mssIndex: Int) -> SeqNumber {
        let h = tupleHash(k, salt: UInt64(clientISN.rawValue) << 8 ^ counter &* 0x100_0000_01B3)
        return SeqNumber(UInt32(counter & 31) << 27 | UInt32(mssIndex) << 24 | UInt32(truncatingIfNeeded: h) & 0xFF_FFFF)
    }

    /// Validates a cookie echoed in an ACK; returns the MSS it encodes.
    func checkCookie(_ k: TCPConnKey, clientISN: SeqNumber, cookie c: SeqNumber, now: Instant) -> Int? {
        let counter = now.nanoseconds / Self.cookiePeriodNs
        let t = UInt64(c.rawValue >> 27)
        let mssIndex = Int(c.rawValue >> 24 & 7)
        for age in 0..<UInt64(2) {
            guard counter >= age else { break }
            let cand = counter - age
            if cand & 31 == t, cookie(k, clientISN: clientISN, counter: cand, mssIndex: mssIndex) == c {
                return Self.cookieMSS[mssIndex]
            }
        }
        return nil
    }

    func listenerInput(_ l: TCPListener, seg: TCPHeaderView, flags: TCPFlags, options: TCPSegmentOptions,
                       key: TCPConnKey, src: IPAddress, dst: IPAddress, now: Instant,
                       tx: some IPTransmitter) {
        let local = IPEndpoint(dst, seg.destinationPort)
        let remote = IPEndpoint(src, seg.sourcePort)
        if flags.contains(.rst) { return }
        if flags.contains(.ack) {
            // Possibly the third segment of a cookie handshake.
            if !flags.contains(.syn), config.synCookies,
               let mss = checkCookie(key, clientISN: seg.sequenceNumber - 1, cookie: seg.ackNumber - 1, now: now),
               !l.acceptQueueFull, roomForConnection(now: now) {
                let c = makeConnection(l: l, local: local, remote: remote, key: key, now: now, tx: tx)
                c.iss = seg.ackNumber - 1
                c.irs = seg.sequenceNumber - 1
                c.rcvNxt = seg.sequenceNumber
                c.sndUna = c.iss
                c.sndNxt = seg.ackNumber
                c.sndMax = seg.ackNumber
                c.lastSmallEnd = c.sndUna
                c.txBase = seg.ackNumber
                c.wsOK = false; c.rcvShift = 0; c.tsOK = false; c.sackOK = false
                c.sndMss = min(mss, c.advertisedMss)
                c.cc.cwnd = c.payloadMss &* config.initialWindowSegments
                c.rcvAdvEdge = c.rcvNxt + Int(c.windowField(syn: true))
                c.sndWnd = Int(seg.window)
                c.sndWl1 = seg.sequenceNumber - 1
                c.sndWl2 = seg.ackNumber
                _ = c.segmentArrived(seg, options: options, now: now, tx: tx)
                schedule(c)
                return
            }
            resetFor(seg, src: src, dst: dst, tx: tx)
            return
        }
        guard flags.contains(.syn), !flags.contains(.fin) else { return }
        guard local != remote else { return }   // LAND: a SYN from ourselves to ourselves
        guard roomForConnection(now: now) else { return }
        // A full accept queue drops the SYN (Linux tcp_conn_request): the peer retransmits it.
        guard !l.acceptQueueFull else { return }
        if l.synQueue >= config.maxSynQueue {
            guard config.synCookies else { return }
            sendCookieSynAck(l, seg, options: options, key: key, local: local, remote: remote, now: now, tx: tx)
            return
        }
        let c = makeConnection(l: l, local: local, remote: remote, key: key, now: now, tx: tx)
        c.stats.segmentsIn = 1   // the SYN
        c.irs = seg.sequenceNumber
        c.rcvNxt = c.irs + 1
        c.negotiate(options, synOptionsSent: false)
        if c.tsOK, let ts = options.timestamp { c.tsRecent = ts.value }
        c.rcvAdvEdge = c.rcvNxt + Int(c.windowField(syn: true))
        c.iss = makeISN(key, now: now)
        c.sndUna = c.iss
        c.sndNxt = c.iss
        c.sndMax = c.iss
        c.lastSmallEnd = c.iss
        c.txBase = c.iss + 1
        c.sndWnd = Int(seg.window)
        c.maxSndWnd = c.sndWnd
        c.sndWl1 = seg.sequenceNumber
        c.sndWl2 = c.iss
        c.needSyn = true
        c.inSynQueue = true
        l.synQueue &+= 1
        c.output(now: now, tx: tx)
        schedule(c)
    }

    private func makeConnection(l: TCPListener, local: IPEndpoint, remote: IPEndpoint, key: TCPConnKey,
                                now: Instant, tx: some IPTransmitter) -> TCPConnection {
        let s = allocateSlot()
        let c = TCPConnection(layer: self, slot: s, generation: generations[Int(s)], state: .synReceived,
                              local: local, remote: remote, rxBufferSize: l.rxBufferSize,
                              txBufferSize: l.txBufferSize, noDelay: l.noDelay, congestion: l.congestion,
                              options: l.options, now: now)
        c.listener = l
        c.accepted = false
        c.rxLocked = l.rxLocked
        c.txLocked = l.txLocked
        c.keepAlive = l.keepAlive
        c.lingerAbort = l.lingerAbort
        c.advertisedMss = c.limitedMss(max(tx.maxPayload(to: remote.address) &- TCPHeaderView.minimumHeaderLength, 64))
        c.tsOffset = UInt32(truncatingIfNeeded: tupleHash(key, salt: 1))
        slots[Int(s)] = .connection(c)
        connections[key] = c
        return c
    }

    private func sendCookieSynAck(_ l: TCPListener, _ seg: TCPHeaderView, options: TCPSegmentOptions, key: TCPConnKey,
                                  local: IPEndpoint, remote: IPEndpoint, now: Instant, tx: some IPTransmitter) {
        let peerMss = Int(options.maxSegmentSize ?? UInt16(config.mssDefault))
        var ourMss = max(tx.maxPayload(to: remote.address) &- TCPHeaderView.minimumHeaderLength, 64)
        if l.options.maxSegment > 0 { ourMss = min(ourMss, l.options.maxSegment) }
        let want = min(peerMss, ourMss)
        var idx = 0
        for (i, m) in Self.cookieMSS.enumerated() where m <= want { idx = i }
        let isn = cookie(key, clientISN: seg.sequenceNumber, counter: now.nanoseconds / Self.cookiePeriodNs, mssIndex: idx)
        // No window scale, SACK or timestamps: a cookie cannot remember them.
        var hdr = TCPHeaderRepr(sourcePort: local.port, destinationPort: remote.port, sequenceNumber: isn,
                                ackNumber: seg.sequenceNumber + 1, flags: [.syn, .ack],
                                window: UInt16(min(config.receiveBufferSize, 0xFFFF)))
        hdr.options.maxSegmentSize = UInt16(clamping: Self.cookieMSS[idx])
        let total = hdr.headerLength
        synCookiesSent &+= 1
        tx.transmit(src: local.address, dst: remote.address, proto: IPProtocol.tcp, capacity: total) { buf in
            guard buf.count >= total, let p = buf.baseAddress else { return 0 }
            hdr.emit(into: p)
            TCPHeaderRepr.fillChecksum(p, length: total, source: local.address, destination: remote.address)
            return total
        }
    }

}
