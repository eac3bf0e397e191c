/// One network interface of the stack: Ethernet in and out, ARP, IPv4 (no forwarding, with
/// reassembly and fragmentation), ICMP, UDP sockets, the TCP layer and the diagnostic services.
///
/// Sans-I/O contract: the driver feeds frames with `receive(frame:now:)`, then calls
/// `poll(now:)` (after every batch of input and whenever the returned deadline passes), drains
/// socket events with `drainEvents`, and uses `tcp` / the `udp*` calls for sockets. Frames go
/// out synchronously through the `FrameSink`. Nothing here reads a clock or does I/O, and no
/// input can make it trap. Not thread-safe: one network loop thread owns it.
///
/// ICMP errors received are counted; a destination unreachable that quotes one of our TCP
/// segments fails a connect still in SYN-SENT, and one quoting a UDP datagram is reported on
/// the connected UDP socket it came from (both like Linux, see `destinationUnreachable`).
///
/// Not supported (by design): IP forwarding, multicast/IGMP, IP options on output, PMTU
/// discovery, other ICMP-driven socket errors (source quench, time exceeded, redirects).
public final class NetStack {
    public private(set) var config: StackConfig
    public internal(set) var counters = StackCounters()
    public let tcp: TCPLayer
    /// Every bound port of this interface, TCP and UDP; public so the intercept hub's bind()
    /// reservations share it with the stack's listeners, sockets and services.
    public let ports: PortTable
    let sink: FrameSink
    /// What of `sink.transmitOffloads` the stack uses (see `refreshOffloads`).
    public internal(set) var transmitOffloads: TransmitOffloads = []
    public private(set) var mtu: Int
    public private(set) var addresses: [IPv4CIDR]

    let neighbors: NeighborCache
    let reassembler: Reassembler
    let udp = UDPSocketTable()
    var icmpBucket: TokenBucket
    var ipID: UInt16
    /// `now` of the entry point being run; `transmit` (called back by TCP) has no clock argument.
    var now = Instant.zero
    /// One outgoing frame: Ethernet header, IPv4 header, L4 bytes (sized for the largest MTU so
    /// `setMTU` never reallocates).
    let txBuffer: UnsafeMutableRawPointer
    static let txBufferSize = EthernetHeaderView.headerLength &+ StackConfig.mtuRange.upperBound
    /// ARP frames are built here so they never clobber a frame being assembled in `txBuffer`.
    let arpBuffer: UnsafeMutableRawPointer
    static let arpFrameLength = 60

    var events: [SocketEvent] = []
    var eventsOut: [SocketEvent] = []
    var tcpEventScratch: [SocketEvent] = []
    var services: ServiceState

    public init(config: StackConfig, sink: FrameSink, random: some RandomSource) {
        var cfg = config
        cfg.mtu = min(max(config.mtu, StackConfig.mtuRange.lowerBound), StackConfig.mtuRange.upperBound)
        self.config = cfg
        self.sink = sink
        var rng: any RandomSource = random
        ipID = UInt16(truncatingIfNeeded: rng.next())
        // TCP and the port table get their own streams so neither depends on how often the
        // other draws.
        let tcpSeed = rng.next()
        ports = PortTable(ephemeral: cfg.ephemeralPorts, seed: rng.next())
        tcp = TCPLayer(config: cfg.tcp, random: XorShiftRandom(seed: tcpSeed), ports: ports)
        mtu = cfg.mtu
        addresses = cfg.addresses
        neighbors = NeighborCache(config: cfg)
        reassembler = Reassembler(maxDatagrams: cfg.reassemblyMaxDatagrams,
                                  maxFragments: cfg.reassemblyMaxFragments, timeout: cfg.reassemblyTimeout)
        icmpBucket = TokenBucket(ratePerSecond: cfg.icmpErrorsPerSecond, burst: cfg.icmpErrorBurst)
        txBuffer = .allocate(byteCount: Self.txBufferSize, alignment: 16)
        arpBuffer = .allocate(byteCount: Self.arpFrameLength, alignment: 16)
        arpBuffer.initializeMemory(as: UInt8.self, repeating: 0, count: Self.arpFrameLength)
        services = ServiceState()
        events.reserveCapacity(256)
        eventsOut.reserveCapacity(256)
        tcpEventScratch.reserveCapacity(256)
        transmitOffloads = Self.usableOffloads(sink.transmitOffloads)
        // `tcp.connect` from a wildcard address asks us which source address routing picks.
        tcp.sourceAddressResolver = { [unowned self] dst in
            self.route(dst) != nil ? self.sourceAddress(for: dst) : nil
        }
        startServices()
    }

    deinit {
        txBuffer.deallocate()
        arpBuffer.deallocate()
    }

    // MARK: - Driver entry points

    /// Announces every address with a gratuitous ARP request (RFC 5227 §3).
    public func up(now: Instant) {
        self.now = now
        for a in addresses { sendARP(operation: ARPOperation.request, to: .broadcast, targetMAC: .zero,
                                     senderIP: a.address, targetIP: a.address) }
    }

    /// Handles one received Ethernet frame. Never traps, whatever the bytes.
    public func receive(frame: UnsafeRawBufferPointer, now: Instant) { receive(frame: frame, offload: .none, now: now) }

    /// `receive`, for a frame with offload state from the link (a TAP's virtio header): a
    /// partial or kernel-verified L4 checksum is not verified again, and a super-frame is taken
    /// whole (TCP) or as the datagrams it holds (UDP). Never traps, whatever the bytes.
    public func receive(frame: UnsafeRawBufferPointer, offload: FrameOffload, now: Instant) {
        self.now = now
        counters.framesIn &+= 1
        counters.bytesIn &+= UInt64(frame.count)
        guard let eth = try? EthernetHeaderView(frame) else { counters.droppedMalformed &+= 1; return }
        let dmac = eth.destination
        let linkBroadcast: Bool
        if dmac == config.mac {
            linkBroadcast = false
        } else if dmac.isBroadcast {
            linkBroadcast = true
        } else {
            counters.droppedNotForUs &+= 1
            return
        }
        switch eth.etherType {
        case EtherType.ipv4: ipv4Input(eth.payload, linkBroadcast: linkBroadcast, offload: offload)
        case EtherType.arp: arpInput(eth.payload)
        default: counters.droppedNotForUs &+= 1
        }
        if tcpMayHaveEvents { pumpTCPEvents() }
    }

    /// Runs every timer that is due (ARP retries, reassembly expiry, TCP) and lets the services
    /// and TCP send what is pending. Returns when it must be called again at the latest. Socket
    /// events stay queued for `drainEvents`.
    public func poll(now: Instant) -> Instant? { poll(now: now, events: nil) }

    /// Reactions that produce more work (a service answering, the driver moving bytes after an
    /// event) are polled again in the same pass at most this many times; past that, `poll` asks
    /// to be called again at once rather than leave bytes in a buffer with no deadline.
    static let reactionRounds = 8

    /// `poll(now:)`, handing the driver's socket events to `deliver` as they come: what the
    /// driver does in reaction (consume, commitSend, accept) only marks sockets dirty, so TCP is
    /// polled again and window updates and new data leave in this same pass.
    public func poll(now: Instant, events deliver: ((SocketEvent) -> Void)?) -> Instant? {
        self.now = now
        let next = earliest(neighbors.poll(now: now) { action in
            switch action {
            case let .sendRequest(ip, unicast):
                sendARPRequest(for: ip, unicast: unicast)
            case let .gaveUp(hop, dropped):
                counters.arpFailures &+= 1
                counters.arpUnresolvedDrops &+= UInt64(dropped)
                tcp.nextHopFailed(where: { [unowned self] dst in route(dst)?.hop == hop }, now: now)
            }
        }, reassembler.poll(now: now) { quote in
            counters.reassemblyTimeouts &+= 1
            if let q = quote { sendICMPError(type: ICMPv4Type.timeExceeded, code: 1, quote: q) }
        })
        pumpTCPEvents()
        services.dirty = false   // this poll sends what the services queued so far
        var tcpNext = tcp.poll(now: now, tx: self)
        for _ in 0..<Self.reactionRounds {
            pumpTCPEvents()
            var reacted = services.dirty
            services.dirty = false
            if let deliver { drainEvents { e in reacted = true; deliver(e) } }
            if !reacted { return earliest(next, tcpNext) }
            tcpNext = tcp.poll(now: now, tx: self)
        }
        return now
    }

    /// Hands the socket events gathered since the last call to `body` (TCP and UDP sockets of
    /// the driver; the internal services' events never show up here). UDP `.readable` fires when
    /// a socket's queue goes from empty to non-empty: read until `udpReceive` returns nil.
    public func drainEvents(_ body: (SocketEvent) -> Void) {
        pumpTCPEvents()
        swap(&events, &eventsOut)
        for e in eventsOut { body(e) }
        eventsOut.removeAll(keepingCapacity: true)
    }

    /// Changes the IP MTU (clamped to `StackConfig.mtuRange`). Frames waiting for ARP are dropped.
    public func setMTU(_ mtu: Int) {
        let m = min(max(mtu, StackConfig.mtuRange.lowerBound), StackConfig.mtuRange.upperBound)
        guard m != self.mtu else { return }
        self.mtu = m
        config.mtu = m
        counters.arpQueueDrops &+= UInt64(neighbors.resize(mtu: m))
    }

    /// Replaces the interface addresses; new ones are announced by gratuitous ARP. Sockets bound
    /// to a removed address stay open but receive nothing.
    public func setAddresses(_ a: [IPv4CIDR], now: Instant) {
        self.now = now
        let old = Set(addresses.map(\.address))
        addresses = a
        config.addresses = a
        for c in a where !old.contains(c.address) {
            sendARP(operation: ARPOperation.request, to: .broadcast, targetMAC: .zero,
                    senderIP: c.address, targetIP: c.address)
        }
    }

    /// The MAC address cached for `ip`, if resolved (diagnostics and tests).
    public func neighbor(_ ip: IPv4Address) -> MACAddress? {
        guard let e = neighbors.entry(ip), e.state != .incomplete else { return nil }
        return e.mac
    }

    public var neighborCount: Int { neighbors.count }

    /// ARP cache entry states as `ztctl` shows them.
    public enum NeighborState: String, Sendable { case incomplete, reachable, stale }

    /// Every ARP cache entry (diagnostics; allocates, not for the data path).
    public func forEachNeighbor(_ body: (IPv4Address, MACAddress?, NeighborState) -> Void) {
        for (ip, e) in neighbors.entries.sorted(by: { $0.key < $1.key }) {
            switch e.state {
            case .incomplete: body(ip, nil, .incomplete)
            case .reachable: body(ip, e.mac, now < e.confirmed + neighbors.reachableTime ? .reachable : .stale)
            case .stale: body(ip, e.mac, .stale)
            }
        }
    }

    // MARK: - Addressing and routing

    @inline(__always) func isLocal(_ a: IPv4Address) -> Bool {
        for c in addresses where c.address == a { return true }
        return false
    }

    /// Limited broadcast or the directed broadcast of one of our subnets.
    @inline(__always) func isBroadcastFor(_ a: IPv4Address) -> Bool {
        if a.isBroadcast { return true }
        for c in addresses where c.prefixLength < 31 && c.directedBroadcast == a { return true }
        return false
    }

    /// Next hop for `dst`: on-link if inside one of our subnets, else the gateway; nil when
    /// there is no route (ENETUNREACH).
    @inline(__always) func route(_ dst: IPv4Address) -> (hop: IPv4Address, broadcast: Bool)? {
        if dst.isBroadcast { return (dst, true) }
        if dst.isMulticast || dst.isUnspecified { return nil }
        for c in addresses where c.contains(dst) {
            return (dst, c.prefixLength < 31 && dst == c.directedBroadcast)
        }
        if let g = config.gateway {
            for c in addresses where c.contains(g) { return (g, false) }
        }
        return nil
    }

    /// Source address for traffic to `dst`: the address whose subnet holds it, else the first.
    public func sourceAddress(for dst: IPv4Address) -> IPv4Address? {
        for c in addresses where c.contains(dst) { return c.address }
        return addresses.first?.address
    }

    @inline(__always) func nextIPID() -> UInt16 {
        ipID &+= 1
        return ipID
    }

    // MARK: - Output

    /// Sends the IPv4 datagram of `length` bytes at `txBuffer + 14` to `hop`: writes the
    /// Ethernet header and hands the frame to the sink, or parks it until ARP resolves.
    @discardableResult
    func sendIPv4Frame(ipLength: Int, hop: IPv4Address, broadcast: Bool) -> Bool {
        let length = EthernetHeaderView.headerLength &+ ipLength
        EthernetHeaderView.emit(into: txBuffer, destination: .broadcast, source: config.mac, etherType: EtherType.ipv4)
        if broadcast { return emit(length: length) }
        return sendResolved(length: length, hop: hop, neighbors.lookup(hop, now: now))
    }

    /// Sends the frame of `length` bytes in `txBuffer` to `hop` as `lookup` found it: with its
    /// MAC, or parked until ARP resolves.
    func sendResolved(length: Int, hop: IPv4Address, _ lookup: NeighborCache.Lookup) -> Bool {
        switch lookup {
        case let .resolved(mac):
            mac.store(to: txBuffer)
            return emit(length: length)
        case let .resolvedNeedsProbe(mac):
            mac.store(to: txBuffer)
            let ok = emit(length: length)
            sendARPRequest(for: hop, unicast: mac)
            return ok
        case .unresolved:
            let r = neighbors.enqueue(hop, frame: txBuffer, length: length, now: now)
            if r.queued { counters.arpQueued &+= 1 } else { counters.arpQueueDrops &+= 1 }
            if r.isNew { sendARPRequest(for: hop, unicast: nil) }
            return r.queued
        }
    }

    @inline(__always) func emit(length: Int) -> Bool {
        counters.framesOut &+= 1
        counters.bytesOut &+= UInt64(length)
        sink.sendFrame(UnsafeRawBufferPointer(start: txBuffer, count: length))
        return true
    }

    /// Sends `header` (8 bytes: UDP or ICMP) + `body` as one datagram, fragmenting it when it
    /// exceeds the MTU (UDP and ICMP only; TCP never needs it).
    func outputDatagram(src: IPv4Address, dst: IPv4Address, proto: UInt8, header: UnsafeRawPointer,
                        body: UnsafeRawBufferPointer, ip: IPv4SendOptions = .standard) throws(SocketError) {
        guard let (hop, bcast) = route(dst) else { counters.noRoute &+= 1; throw .networkUnreachable }
        let total = 8 &+ body.count
        let maxL4 = mtu &- IPv4HeaderView.minHeaderLength
        let l4 = txBuffer + (EthernetHeaderView.headerLength &+ IPv4HeaderView.minHeaderLength)
        let ipStart = txBuffer + EthernetHeaderView.headerLength
        if total <= maxL4 {
            copyVirtual(header: header, body: body, from: 0, count: total, to: l4)
            IPv4HeaderView.emit(into: ipStart, source: src, destination: dst, protocolNumber: proto,
                                payloadLength: total, identification: nextIPID(), ttl: ip.timeToLive,
                                dscpECN: ip.typeOfService)
            sendIPv4Frame(ipLength: IPv4HeaderView.minHeaderLength &+ total, hop: hop, broadcast: bcast)
            return
        }
        let id = nextIPID()
        let chunk = maxL4 & ~7
        var off = 0
        while off < total {
            let len = min(chunk, total &- off)
            let more = off &+ len < total
            copyVirtual(header: header, body: body, from: off, count: len, to: l4)
            IPv4HeaderView.emit(into: ipStart, source: src, destination: dst, protocolNumber: proto,
                                payloadLength: len, identification: id, moreFragments: more, fragmentOffset: off,
                                ttl: ip.timeToLive, dscpECN: ip.typeOfService)
            counters.fragmentsOut &+= 1
            sendIPv4Frame(ipLength: IPv4HeaderView.minHeaderLength &+ len, hop: hop, broadcast: bcast)
            off &+= len
        }
    }

    /// Copies bytes [from, from+count) of the concatenation header(8) ++ body to `to`.
    @inline(__always)
    private func copyVirtual(header: UnsafeRawPointer, body: UnsafeRawBufferPointer, from: Int, count: Int,
                             to: UnsafeMutableRawPointer) {
        var o = from, d = to, n = count
        if o < 8 {
            let k = min(8 &- o, n)
            d.copyMemory(from: header + o, byteCount: k)
            d += k; o &+= k; n &-= k
        }
        if n > 0, let b = body.baseAddress { d.copyMemory(from: b + (o &- 8), byteCount: n) }
    }

    // MARK: - ARP

    func arpInput(_ payload: UnsafeRawBufferPointer) {
        let arp: ARPPacketView
        do { arp = try ARPPacketView(payload) } catch {
            if case .truncated = error { counters.droppedMalformed &+= 1 } else { counters.droppedUnsupported &+= 1 }
            return
        }
        let op = arp.operation
        switch op {
        case ARPOperation.request: counters.arpRequestsReceived &+= 1
        case ARPOperation.reply: counters.arpRepliesReceived &+= 1
        default: counters.droppedUnsupported &+= 1; return
        }
        let sha = arp.senderHardwareAddress, spa = arp.senderProtocolAddress, tpa = arp.targetProtocolAddress
        guard sha.isUnicast, sha != .zero, sha != config.mac else { counters.droppedMartian &+= 1; return }
        let targetIsUs = isLocal(tpa)
        if !spa.isUnspecified && !isLocal(spa) && !spa.isBroadcast && !spa.isMulticast {
            // RFC 826: refresh a known sender always; create only when the packet was for us.
            neighbors.update(spa, mac: sha, now: now, create: targetIsUs) { frame in
                counters.framesOut &+= 1
                counters.bytesOut &+= UInt64(frame.count)
                sink.sendFrame(UnsafeRawBufferPointer(frame))
            }
        }
        if op == ARPOperation.request && targetIsUs {
            sendARP(operation: ARPOperation.reply, to: sha, targetMAC: sha, senderIP: tpa, targetIP: spa)
        } else if !targetIsUs && op == ARPOperation.request {
            counters.droppedNotForUs &+= 1
        }
    }

    func sendARPRequest(for ip: IPv4Address, unicast: MACAddress?) {
        guard let src = sourceAddress(for: ip) else { return }
        sendARP(operation: ARPOperation.request, to: unicast ?? .broadcast, targetMAC: .zero, senderIP: src, targetIP: ip)
    }

    func sendARP(operation: UInt16, to: MACAddress, targetMAC: MACAddress, senderIP: IPv4Address, targetIP: IPv4Address) {
        EthernetHeaderView.emit(into: arpBuffer, destination: to, source: config.mac, etherType: EtherType.arp)
        ARPPacketView.emit(into: arpBuffer + EthernetHeaderView.headerLength, operation: operation,
                           senderMAC: config.mac, senderIP: senderIP, targetMAC: targetMAC, targetIP: targetIP)
        if operation == ARPOperation.request { counters.arpRequestsSent &+= 1 } else { counters.arpRepliesSent &+= 1 }
        counters.framesOut &+= 1
        counters.bytesOut &+= UInt64(Self.arpFrameLength)
        sink.sendFrame(UnsafeRawBufferPointer(start: arpBuffer, count: Self.arpFrameLength))
    }

    // MARK: - IPv4 input

    func ipv4Input(_ payload: UnsafeRawBufferPointer, linkBroadcast: Bool, offload: FrameOffload) {
        let ip: IPv4HeaderView
        do { ip = try IPv4HeaderView(payload) } catch {
            if case .badChecksum = error { counters.droppedChecksum &+= 1 } else { counters.droppedMalformed &+= 1 }
            return
        }
        let dst = ip.destination, src = ip.source
        let local = isLocal(dst)
        guard local || isBroadcastFor(dst) else { counters.droppedNotForUs &+= 1; return }
        guard !src.isBroadcast, !src.isMulticast, !isLocal(src), !isBroadcastFor(src) else {
            counters.droppedMartian &+= 1
            return
        }
        let broadcast = linkBroadcast || !local
        var verified = false
        var pieces = 0
        if !offload.isNone {
            let l4 = linkOffloadOfL4(ip, offload)
            guard l4.usable else { counters.droppedMalformed &+= 1; return }
            verified = l4.verified
            pieces = l4.segmentSize
        }
        if ip.isFragment {
            counters.fragmentsIn &+= 1
            switch reassembler.add(ip, now: now) {
            case let .complete(packet, _, body):
                counters.reassembled &+= 1
                deliver(proto: ip.protocolNumber, src: src, dst: dst, payload: body, quote: packet, broadcast: broadcast)
            case let .dropped(overlap):
                if overlap { counters.reassemblyOverlaps &+= 1 } else { counters.reassemblyDrops &+= 1 }
            case .incomplete, .duplicate:
                break
            }
            return
        }
        deliver(proto: ip.protocolNumber, src: src, dst: dst, payload: ip.payload, quote: ip.bytes, broadcast: broadcast,
                checksumVerified: verified, segmentSize: pieces)
    }

    /// `quote` is the whole datagram starting at its IPv4 header (for ICMP errors).
    @inline(__always)
    func deliver(proto: UInt8, src: IPv4Address, dst: IPv4Address, payload: UnsafeRawBufferPointer,
                 quote: UnsafeRawBufferPointer, broadcast: Bool, checksumVerified: Bool = false, segmentSize: Int = 0) {
        switch proto {
        case IPProtocol.tcp:
            guard !broadcast else { counters.droppedNotForUs &+= 1; return }
            counters.tcpSegmentsIn &+= 1
            tcp.receive(src: src, dst: dst, segment: payload, checksumVerified: checksumVerified, segmentSize: segmentSize,
                        now: now, tx: self)
            tcpMayHaveEvents = true
        case IPProtocol.udp:
            udpInput(src: src, dst: dst, payload: payload, quote: quote, broadcast: broadcast,
                     checksumVerified: checksumVerified, segmentSize: segmentSize)
        case IPProtocol.icmp:
            icmpInput(src: src, dst: dst, payload: payload, broadcast: broadcast)
        default:
            counters.droppedUnsupported &+= 1
            if !broadcast {
                sendICMPError(type: ICMPv4Type.destinationUnreachable, code: ICMPv4UnreachableCode.protocolUnreachable,
                              quote: quote)
            }
        }
    }

    // MARK: - ICMP

    func icmpInput(src: IPv4Address, dst: IPv4Address, payload: UnsafeRawBufferPointer, broadcast: Bool) {
        let icmp: ICMPv4View
        do { icmp = try ICMPv4View(payload) } catch {
            if case .badChecksum = error { counters.droppedChecksum &+= 1 } else { counters.droppedMalformed &+= 1 }
            return
        }
        switch icmp.type {
        case ICMPv4Type.echoRequest:
            counters.icmpEchoRequests &+= 1
            // Like Linux's icmp_echo_ignore_broadcasts=1: no smurf amplification.
            guard !broadcast, icmp.code == 0 else { return }
            var hdr: UInt64 = 0
            withUnsafeMutableBytes(of: &hdr) { h in
                let p = h.baseAddress.unsafelyUnwrapped
                p.storeBytes(of: ICMPv4Type.echoReply, as: UInt8.self)
                p.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
                wireStore16(p, 2, 0)
                wireStore16(p, 4, icmp.identifier)
                wireStore16(p, 6, icmp.sequence)
                let body = icmp.body
                var s = Checksum.partial(UnsafeRawPointer(p), count: 8)
                if let b = body.baseAddress { s = Checksum.partial(b, count: body.count, initial: s) }
                wireStore16(p, 2, Checksum.finish(s))
                do {
                    try outputDatagram(src: dst, dst: src, proto: IPProtocol.icmp, header: UnsafeRawPointer(p), body: body)
                    counters.icmpEchoReplies &+= 1
                } catch {}
            }
        case ICMPv4Type.echoReply:
            break
        default:
            guard ICMPv4Type.isError(icmp.type) else { return }
            counters.icmpErrorsReceived &+= 1
            if icmp.type == ICMPv4Type.destinationUnreachable { destinationUnreachable(code: icmp.code, quote: icmp.body) }
        }
    }

    /// Hands a destination unreachable to TCP or UDP when it quotes a segment or datagram we sent
    /// (the quote is the original IPv4 header plus at least 8 bytes: ports, and for TCP the
    /// sequence number).
    private func destinationUnreachable(code: UInt8, quote: UnsafeRawBufferPointer) {
        guard quote.count >= IPv4HeaderView.minHeaderLength, let q = quote.baseAddress else { return }
        let ihl = Int(q.load(as: UInt8.self) & 0x0F) &* 4
        guard ihl >= IPv4HeaderView.minHeaderLength, quote.count >= ihl &+ 8 else { return }
        let proto = q.load(fromByteOffset: 9, as: UInt8.self)
        let src = IPv4Address(wireLoad32(q, 12)), dst = IPv4Address(wireLoad32(q, 16))
        guard isLocal(src) else { return }
        let local = IPv4Endpoint(src, wireLoad16(q, ihl)), remote = IPv4Endpoint(dst, wireLoad16(q, ihl &+ 2))
        if proto == IPProtocol.udp {
            udpUnreachable(code: code, local: local, remote: remote)
            return
        }
        guard proto == IPProtocol.tcp else { return }
        tcp.destinationUnreachable(code: code, local: local, remote: remote, quotedSeq: wireLoad32(q, ihl &+ 4), now: now)
        tcpMayHaveEvents = true   // a failed connect posts an event: pumped at the end of receive
    }

    /// Sends an ICMP error about the datagram `quote` (starting at its IPv4 header), following
    /// RFC 1122 §3.2.2: never about an ICMP error, a broadcast/multicast, a non-first fragment
    /// or an impossible source; rate limited by a token bucket.
    func sendICMPError(type: UInt8, code: UInt8, quote: UnsafeRawBufferPointer, rest: UInt32 = 0) {
        guard quote.count >= IPv4HeaderView.minHeaderLength, let q = quote.baseAddress else { return }
        let ihl = Int(q.load(as: UInt8.self) & 0x0F) &* 4
        guard ihl >= IPv4HeaderView.minHeaderLength, ihl <= quote.count else { return }
        let origSrc = IPv4Address(wireLoad32(q, 12)), origDst = IPv4Address(wireLoad32(q, 16))
        guard !origSrc.isUnspecified, !origSrc.isBroadcast, !origSrc.isMulticast, !isBroadcastFor(origSrc),
              !isLocal(origSrc), !origDst.isBroadcast, !origDst.isMulticast, !isBroadcastFor(origDst) else { return }
        guard wireLoad16(q, 6) & 0x1FFF == 0 else { return }
        if q.load(fromByteOffset: 9, as: UInt8.self) == IPProtocol.icmp {
            guard quote.count > ihl else { return }
            let t = q.load(fromByteOffset: ihl, as: UInt8.self)
            guard t == ICMPv4Type.echoRequest || t == ICMPv4Type.echoReply || t == ICMPv4Type.timestampRequest
                    || t == 14 else { return }
        }
        guard icmpBucket.take(now: now) else { counters.icmpErrorsRateLimited &+= 1; return }
        guard let src = isLocal(origDst) ? origDst : sourceAddress(for: origSrc) else { return }
        // Quote as much as fits a 576-byte datagram (RFC 1812 §4.3.2.3), like Linux.
        let body = UnsafeRawBufferPointer(start: q, count: min(quote.count, 576 &- 20 &- 8))
        var hdr: UInt64 = 0
        withUnsafeMutableBytes(of: &hdr) { h in
            let p = h.baseAddress.unsafelyUnwrapped
            ICMPv4View.emit(into: p, type: type, code: code, rest: rest, bodyLength: 0)
            wireStore16(p, 2, 0)
            let s = Checksum.partial(q, count: body.count, initial: Checksum.partial(UnsafeRawPointer(p), count: 8))
            wireStore16(p, 2, Checksum.finish(s))
            do {
                try outputDatagram(src: src, dst: origSrc, proto: IPProtocol.icmp, header: UnsafeRawPointer(p), body: body)
                counters.icmpErrorsSent &+= 1
            } catch {}
        }
    }

    // MARK: - UDP input

    /// `segmentSize` > 0: a USO super-datagram, whose payload is that many bytes per datagram.
    func udpInput(src: IPv4Address, dst: IPv4Address, payload: UnsafeRawBufferPointer,
                  quote: UnsafeRawBufferPointer, broadcast: Bool, checksumVerified: Bool = false, segmentSize: Int = 0) {
        let u: UDPHeaderView
        do { u = try UDPHeaderView(payload) } catch { counters.droppedMalformed &+= 1; return }
        guard checksumVerified || u.checksumValid(source: src, destination: dst) else {
            counters.droppedChecksum &+= 1
            return
        }
        guard segmentSize > 0 else {
            udpDeliver(src: src, dst: dst, sourcePort: u.sourcePort, destinationPort: u.destinationPort, u.payload,
                       quote: quote, broadcast: broadcast)
            return
        }
        let all = u.payload
        var off = 0
        repeat {
            let n = min(segmentSize, all.count &- off)
            udpDeliver(src: src, dst: dst, sourcePort: u.sourcePort, destinationPort: u.destinationPort,
                       UnsafeRawBufferPointer(rebasing: all[off..<(off &+ n)]), quote: off == 0 ? quote : nil,
                       broadcast: broadcast)
            off &+= n
        } while off < all.count
    }

    /// One UDP datagram's payload to its socket (or the echo service). `quote`: what an ICMP
    /// port unreachable quotes (nil: send none).
    func udpDeliver(src: IPv4Address, dst: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
                    _ payload: UnsafeRawBufferPointer, quote: UnsafeRawBufferPointer?, broadcast: Bool) {
        counters.udpDatagramsIn &+= 1
        let from = IPv4Endpoint(src, sourcePort)
        guard let (sock, h) = udp.lookup(dst: IPv4Endpoint(dst, destinationPort), src: from) else {
            counters.droppedNoSocket &+= 1
            if !broadcast, let quote {
                sendICMPError(type: ICMPv4Type.destinationUnreachable, code: ICMPv4UnreachableCode.port, quote: quote)
            }
            return
        }
        if sock.isService {
            // UDP echo (RFC 862): answer inline, never to broadcasts or port 0.
            if !broadcast && sourcePort != 0 { udpEchoReply(local: IPv4Endpoint(dst, destinationPort), to: from, payload) }
            return
        }
        let wasEmpty = sock.metaCount == 0
        if sock.push(payload, from: from) {
            if wasEmpty { events.append(.readable(h)) }
        } else {
            counters.droppedUDPQueueFull &+= 1
        }
    }

    /// Set when TCP may have queued events, so `receive` only pumps when needed.
    var tcpMayHaveEvents = false
}

// MARK: - IPv4Transmitter (used by TCPLayer)

extension NetStack: IPv4Transmitter {
    public func maxPayload(to dst: IPv4Address) -> Int { mtu &- IPv4HeaderView.minHeaderLength }

    /// TCP writes its segment straight into the outgoing frame; we prepend IPv4 (DF set, TTL 64
    /// unless the socket chose otherwise) and Ethernet headers. Unresolved neighbors get the frame parked in the ARP queue.
    @discardableResult
    public func transmit(src: IPv4Address, dst: IPv4Address, proto: UInt8, capacity: Int,
                         _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        transmit(src: src, dst: dst, proto: proto, capacity: capacity, options: .standard, fill)
    }

    /// `transmit` with the socket's TTL and TOS in the IPv4 header.
    @discardableResult
    public func transmit(src: IPv4Address, dst: IPv4Address, proto: UInt8, capacity: Int, options: IPv4SendOptions,
                         _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard let (hop, bcast) = route(dst) else { counters.noRoute &+= 1; return false }
        let cap = min(max(capacity, 0), mtu &- IPv4HeaderView.minHeaderLength)
        let l4 = txBuffer + (EthernetHeaderView.headerLength &+ IPv4HeaderView.minHeaderLength)
        let n = min(fill(UnsafeMutableRawBufferPointer(start: l4, count: cap)), cap)
        if n <= 0 {
            // A caller that needed more room than the MTU allows sent nothing: count it, it is
            // a bug upstream (e.g. options pushing a full-MSS segment past the MTU).
            if capacity > cap { counters.oversizeTransmits &+= 1 }
            return true
        }
        var source = src
        if source.isUnspecified { guard let s = sourceAddress(for: dst) else { return false }; source = s }
        IPv4HeaderView.emit(into: txBuffer + EthernetHeaderView.headerLength, source: source, destination: dst,
                            protocolNumber: proto, payloadLength: n, identification: nextIPID(),
                            dontFragment: proto == IPProtocol.tcp, ttl: options.timeToLive,
                            dscpECN: options.typeOfService)
        return sendIPv4Frame(ipLength: IPv4HeaderView.minHeaderLength &+ n, hop: hop, broadcast: bcast)
    }
}

// MARK: - TCP helpers

extension NetStack {
    /// `tcp.connect` with the interface's knowledge filled in: a wildcard local address becomes
    /// the source address routing picks for `remote`; fails with `.networkUnreachable` when
    /// there is no route and `.addressNotAvailable` for a local address that is not ours.
    /// Drivers should connect through this rather than `tcp.connect` directly.
    public func tcpConnect(local: IPv4Endpoint, remote: IPv4Endpoint, now: Instant) throws(SocketError) -> SocketHandle {
        self.now = now
        guard route(remote.address) != nil else { counters.noRoute &+= 1; throw .networkUnreachable }
        var l = local
        if l.address.isUnspecified {
            guard let a = sourceAddress(for: remote.address) else { throw .networkUnreachable }
            l.address = a
        } else if !isLocal(l.address) {
            throw .addressNotAvailable
        }
        return try tcp.connect(local: l, remote: remote, now: now)
    }
}
