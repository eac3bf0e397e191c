/// One network interface of the stack: Ethernet in and out, ARP, IPv4 and IPv6 (no forwarding,
/// with reassembly and fragmentation), ICMP and ICMPv6, Neighbor Discovery, UDP sockets, the TCP
/// layer and the diagnostic services. IPv6 lives in the NetStack+IPv6*.swift files.
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
/// Not supported (by design): IP forwarding, multicast sockets/IGMP (MLD only for our own
/// solicited-node groups), IP options on output, IPv4 PMTU discovery (IPv6 follows packet too
/// big), router advertisements/SLAAC, other ICMP-driven socket errors (source quench, time
/// exceeded, redirects).
public final class NetStack {
    public internal(set) var config: StackConfig
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

    let neighbors: NeighborCache<IPv4Address>
    let reassembler: Reassembler
    /// Frames waiting for ARP or Neighbor Discovery (one pool for both caches).
    let neighborPool: FrameQueuePool
    /// IPv6: addresses and their DAD state, path MTUs, ICMPv6 rate limit (NetStack+IPv6.swift).
    @exclusivity(unchecked) var v6: IPv6State
    let neighbors6: NeighborCache<IPAddress>
    let reassembler6: Reassembler
    /// Neighbor Discovery and MLD messages are built here, never clobbering `txBuffer`.
    let ndBuffer: UnsafeMutableRawPointer
    static let ndBufferSize = 1280
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
        neighborPool = FrameQueuePool(mtu: cfg.mtu, slots: cfg.arpQueueTotal)
        neighbors = NeighborCache(config: cfg, pool: neighborPool)
        neighbors6 = NeighborCache(config: cfg, pool: neighborPool, delayFirstProbe: .seconds(5))
        reassembler = Reassembler(maxDatagrams: cfg.reassemblyMaxDatagrams,
                                  maxFragments: cfg.reassemblyMaxFragments, timeout: cfg.reassemblyTimeout)
        reassembler6 = Reassembler(maxDatagrams: cfg.reassemblyMaxDatagrams,
                                   maxFragments: cfg.reassemblyMaxFragments, timeout: cfg.reassemblyTimeout6)
        v6 = IPv6State(config: cfg, fragmentID: UInt32(truncatingIfNeeded: rng.next()))
        ndBuffer = .allocate(byteCount: Self.ndBufferSize, alignment: 16)
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
            self.hasRoute(to: dst) ? self.sourceAddress(for: dst) : nil
        }
        startServices()
    }

    deinit {
        txBuffer.deallocate()
        arpBuffer.deallocate()
        ndBuffer.deallocate()
    }

    // MARK: - Driver entry points

    /// Announces every IPv4 address with a gratuitous ARP request (RFC 5227 §3) and starts
    /// duplicate address detection for the IPv6 ones (usable once it passed).
    public func up(now: Instant) {
        self.now = now
        for a in addresses { sendARP(operation: ARPOperation.request, to: .broadcast, targetMAC: .zero,
                                     senderIP: a.address, targetIP: a.address) }
        startIPv6(now: now)
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
        } else if dmac.isBroadcast || dmac.isIPv6Multicast {
            linkBroadcast = true
        } else {
            counters.droppedNotForUs &+= 1
            return
        }
        switch eth.etherType {
        case EtherType.ipv4: ipv4Input(eth.payload, linkBroadcast: linkBroadcast, offload: offload)
        case EtherType.ipv6: ipv6Input(eth.payload, source: eth.source, linkMulticast: linkBroadcast, offload: offload)
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
        let next4 = earliest(neighbors.poll(now: now) { action in
            switch action {
            case let .sendRequest(ip, unicast):
                sendARPRequest(for: ip, unicast: unicast)
            case let .gaveUp(hop, dropped):
                counters.arpFailures &+= 1
                counters.arpUnresolvedDrops &+= UInt64(dropped)
                tcp.nextHopFailed(where: { [unowned self] dst in dst.isV4 && route(dst.v4)?.hop == hop }, now: now)
            }
        }, reassembler.poll(now: now) { quote in
            counters.reassemblyTimeouts &+= 1
            if let q = quote { sendICMPError(type: ICMPv4Type.timeExceeded, code: 1, quote: q) }
        })
        let next = earliest(next4, pollIPv6(now: now))
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

    /// Changes the IP MTU (clamped to `StackConfig.mtuRange`). Frames waiting for ARP or
    /// Neighbor Discovery are dropped; path MTUs above the new MTU are forgotten.
    public func setMTU(_ mtu: Int) {
        let m = min(max(mtu, StackConfig.mtuRange.lowerBound), StackConfig.mtuRange.upperBound)
        guard m != self.mtu else { return }
        self.mtu = m
        config.mtu = m
        counters.arpQueueDrops &+= UInt64(neighbors.dropQueues())
        counters.ndQueueDrops &+= UInt64(neighbors6.dropQueues())
        neighborPool.resize(mtu: m)
        v6.pathMTU = v6.pathMTU.filter { $0.value.mtu < m }
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

    // Family-independent forms, for sockets and TCP.

    @inline(__always) func isLocal(_ a: IPAddress) -> Bool { a.isV4 ? isLocal(a.v4) : isLocal6(a) }

    /// Whether `a` is a usable address of this interface (an IPv6 one has passed DAD).
    public func isLocalAddress(_ a: IPAddress) -> Bool { isLocal(a) }

    /// Whether `dst` has a route (on-link or through a gateway of its family).
    @inline(__always) func hasRoute(to dst: IPAddress) -> Bool {
        dst.isV4 ? route(dst.v4) != nil : route6(dst) != nil
    }

    /// Source address for traffic to `dst`, of its family.
    public func sourceAddress(for dst: IPAddress) -> IPAddress? {
        if dst.isV4 { return sourceAddress(for: dst.v4).map(IPAddress.init) }
        return sourceAddress6(for: dst)
    }

    /// `header` (8 bytes) + `body` as one datagram of the destination's family (fragmented above
    /// the path MTU).
    func outputDatagram(src: IPAddress, dst: IPAddress, proto: UInt8, header: UnsafeRawPointer,
                        body: UnsafeRawBufferPointer, ip: IPSendOptions = .standard) throws(SocketError) {
        if dst.isV4 {
            try outputDatagram4(src: src.v4, dst: dst.v4, proto: proto, header: header, body: body, ip: ip)
        } else {
            try outputDatagram6(src: src, dst: dst, proto: proto, header: header, body: body, ip: ip)
        }
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
    func sendResolved(length: Int, hop: IPv4Address, _ lookup: NeighborLookup) -> Bool {
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
    func outputDatagram4(src: IPv4Address, dst: IPv4Address, proto: UInt8, header: UnsafeRawPointer,
                         body: UnsafeRawBufferPointer, ip: IPSendOptions = .standard) throws(SocketError) {
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
    func copyVirtual(header: UnsafeRawPointer, body: UnsafeRawBufferPointer, from: Int, count: Int,
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
            tcp.receive(src: IPAddress(src), dst: IPAddress(dst), segment: payload, checksumVerified: checksumVerified,
                        segmentSize: segmentSize, now: now, tx: self)
            tcpMayHaveEvents = true
        case IPProtocol.udp:
            udpInput(src: IPAddress(src), dst: IPAddress(dst), payload: payload, quote: quote, broadcast: broadcast,
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

    // MARK: - UDP input

    /// One UDP datagram of either family; `quote` is the whole packet from its IP header (for the
    /// port unreachable), `broadcast` that it came to a broadcast or multicast address.
    /// `segmentSize` > 0: a USO super-datagram, whose payload is that many bytes per datagram.
    func udpInput(src: IPAddress, dst: IPAddress, payload: UnsafeRawBufferPointer,
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
    func udpDeliver(src: IPAddress, dst: IPAddress, sourcePort: UInt16, destinationPort: UInt16,
                    _ payload: UnsafeRawBufferPointer, quote: UnsafeRawBufferPointer?, broadcast: Bool) {
        counters.udpDatagramsIn &+= 1
        let from = IPEndpoint(src, sourcePort)
        guard let (sock, h) = udp.lookup(dst: IPEndpoint(dst, destinationPort), src: from) else {
            counters.droppedNoSocket &+= 1
            if !broadcast, let quote {
                if src.isV4 {
                    sendICMPError(type: ICMPv4Type.destinationUnreachable, code: ICMPv4UnreachableCode.port, quote: quote)
                } else {
                    sendICMPv6Error(type: ICMPv6Type.destinationUnreachable, code: ICMPv6UnreachableCode.port, quote: quote)
                }
            }
            return
        }
        if sock.isService {
            // UDP echo (RFC 862): answer inline, never to broadcasts or port 0.
            if !broadcast && sourcePort != 0 { udpEchoReply(local: IPEndpoint(dst, destinationPort), to: from, payload) }
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

// MARK: - IPTransmitter (used by TCPLayer)

extension NetStack: IPTransmitter {
    @inline(__always)
    public func maxPayload(to dst: IPAddress) -> Int {
        dst.isV4 ? mtu &- IPv4HeaderView.minHeaderLength : maxPayload6(to: dst)
    }

    public func segmentationLimit(to dst: IPAddress) -> Int {
        dst.isV4 ? segmentationLimit4(to: dst.v4) : segmentationLimit6(to: dst)
    }

    /// The segment goes out over the destination's family.
    @discardableResult @inline(__always)
    public func transmitTCP(src: IPAddress, dst: IPAddress, header: TCPHeaderRepr, payload: UnsafeRawBufferPointer,
                            _ more: UnsafeRawBufferPointer, segmentSize: Int, options: IPSendOptions) -> Bool {
        if dst.isV4 {
            return transmitTCP4(src: src.v4, dst: dst.v4, header: header, payload: payload, more, segmentSize: segmentSize,
                                options: options)
        }
        return transmitTCP6(src: src, dst: dst, header: header, payload: payload, more, segmentSize: segmentSize,
                            options: options)
    }

    /// The datagram goes out over the destination's family.
    @discardableResult @inline(__always)
    public func transmit(src: IPAddress, dst: IPAddress, proto: UInt8, capacity: Int,
                         _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        transmit(src: src, dst: dst, proto: proto, capacity: capacity, options: .standard, fill)
    }

    /// `transmit` with the socket's header fields (TTL and TOS, or hop limit and traffic class).
    @discardableResult @inline(__always)
    public func transmit(src: IPAddress, dst: IPAddress, proto: UInt8, capacity: Int, options: IPSendOptions,
                         _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        if dst.isV4 { return transmit4(src: src.v4, dst: dst.v4, proto: proto, capacity: capacity, options: options, fill) }
        return transmit6(src: src, dst: dst, proto: proto, capacity: capacity, options: options, fill)
    }

    /// TCP writes its segment straight into the outgoing frame; we prepend IPv4 (DF set, TTL 64
    /// unless the socket chose otherwise) and Ethernet headers. Unresolved neighbors get the frame parked in the ARP queue.
    @discardableResult
    func transmit4(src: IPv4Address, dst: IPv4Address, proto: UInt8, capacity: Int, options: IPSendOptions,
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
    public func tcpConnect(local: IPEndpoint, remote: IPEndpoint, now: Instant) throws(SocketError) -> SocketHandle {
        self.now = now
        guard hasRoute(to: remote.address) else { counters.noRoute &+= 1; throw .networkUnreachable }
        var l = local
        if l.address.isUnspecified {
            guard l.address == .v6Any || remote.address.isV4 else { throw .addressNotAvailable }
            guard let a = sourceAddress(for: remote.address) else { throw .networkUnreachable }
            l.address = a
        } else if !isLocal(l.address) || l.address.isV4 != remote.address.isV4 {
            throw .addressNotAvailable
        }
        return try tcp.connect(local: l, remote: remote, now: now)
    }
}
