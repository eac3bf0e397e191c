/// IPv6 on the interface (RFC 8200, RFC 4291, RFC 4862): its addresses (the configured ones and
/// the EUI-64 link-local one) with their duplicate address detection state, routing (on-link
/// prefixes, link-local, one gateway), path MTUs learned from packet too big (RFC 8201), and
/// output with source fragmentation. Input is NetStack+IPv6Input.swift, ICMPv6
/// NetStack+ICMPv6.swift, Neighbor Discovery, DAD and MLD NetStack+NDP.swift.

/// An interface address's duplicate address detection state (RFC 4862 §5.4): `tentative` while
/// solicitations are out (packets to it are dropped, it is never a source), `preferred` once
/// nobody objected, `duplicate` when another node has it (never used).
public enum IPv6AddressState: String, Sendable, Hashable { case tentative, preferred, duplicate }

struct IPv6State {
    struct Entry {
        var cidr: IPv6CIDR
        var state: IPv6AddressState
        /// DAD solicitations still to send, and when the next step (send or done) is due.
        var probesLeft = 0
        var deadline = Instant.zero
        var isLinkLocal: Bool
    }
    var entries: [Entry] = []
    var gateway: IPAddress?
    struct PathMTU { var mtu: Int; var expires: Instant }
    var pathMTU: [IPAddress: PathMTU] = [:]
    var icmpBucket: TokenBucket
    var fragmentID: UInt32
    /// MLD (RFC 3810): when the next report of our solicited-node groups is due, and how many
    /// unsolicited reports after a change are still to go (robustness 2, 1 s apart).
    var mldAt: Instant?
    var mldUnsolicitedLeft = 0
    /// `up` ran: DAD runs for new addresses as they come.
    var started = false

    init(config: StackConfig, fragmentID: UInt32) {
        icmpBucket = TokenBucket(ratePerSecond: config.icmpErrorsPerSecond, burst: config.icmpErrorBurst)
        self.fragmentID = fragmentID
        gateway = config.gateway6
        entries = Self.entries(for: config.addresses6, mac: config.mac, linkLocal: config.linkLocal,
                               dad: config.dadTransmits > 0)
    }

    /// The interface's address list for `addresses`: each as given, plus the EUI-64 link-local
    /// address unless one is configured. With DAD they start tentative.
    static func entries(for addresses: [IPv6CIDR], mac: MACAddress, linkLocal: Bool, dad: Bool) -> [Entry] {
        var out: [Entry] = []
        let state: IPv6AddressState = dad ? .tentative : .preferred
        if linkLocal && !addresses.contains(where: { $0.address.isLinkLocal }) {
            let ll = IPAddress(hi: 0xFE80_0000_0000_0000, lo: mac.interfaceIdentifier)
            out.append(Entry(cidr: IPv6CIDR(address: ll, prefixLength: 64), state: state, isLinkLocal: true))
        }
        for a in addresses where !out.contains(where: { $0.cidr.address == a.address }) {
            out.append(Entry(cidr: a, state: state, isLinkLocal: a.address.isLinkLocal))
        }
        return out
    }
}

extension NetStack {
    // MARK: - Addresses

    /// The IPv6 addresses with their DAD state, the link-local one first (diagnostics, ztctl).
    public var addresses6: [(cidr: IPv6CIDR, state: IPv6AddressState)] { v6.entries.map { ($0.cidr, $0.state) } }

    /// The IPv6 gateway in use.
    public var gateway6: IPAddress? { v6.gateway }

    /// Replaces the configured IPv6 addresses (the link-local one stays unless one is given) and
    /// the gateway. Addresses kept keep their state; new ones go through DAD (after `up`).
    /// Sockets bound to a removed address stay open but receive nothing.
    public func setAddresses6(_ a: [IPv6CIDR], gateway: IPAddress?, now: Instant) {
        self.now = now
        config.addresses6 = a
        config.gateway6 = gateway
        v6.gateway = gateway
        var next = IPv6State.entries(for: a, mac: config.mac, linkLocal: config.linkLocal, dad: config.dadTransmits > 0)
        var added = false
        for i in next.indices {
            if let old = v6.entries.first(where: { $0.cidr.address == next[i].cidr.address }) {
                next[i].state = old.state
                next[i].probesLeft = old.probesLeft
                next[i].deadline = old.deadline
            } else {
                added = true
                if v6.started && next[i].state == .tentative { next[i].probesLeft = config.dadTransmits; next[i].deadline = now }
            }
        }
        v6.entries = next
        if added && v6.started { scheduleUnsolicitedMLD(now: now) }
    }

    /// `up`: DAD for every tentative address, and MLD reports for our solicited-node groups.
    func startIPv6(now: Instant) {
        guard !v6.started else { return }
        v6.started = true
        for i in v6.entries.indices where v6.entries[i].state == .tentative {
            v6.entries[i].probesLeft = config.dadTransmits
            v6.entries[i].deadline = now
        }
        if !v6.entries.isEmpty { scheduleUnsolicitedMLD(now: now) }
    }

    /// IPv6 timers: DAD steps, MLD reports, Neighbor Discovery retries, reassembly expiry.
    func pollIPv6(now: Instant) -> Instant? {
        var next: Instant?
        if v6.started {
            for i in v6.entries.indices where v6.entries[i].state == .tentative {
                if now >= v6.entries[i].deadline {
                    if v6.entries[i].probesLeft > 0 {
                        v6.entries[i].probesLeft &-= 1
                        v6.entries[i].deadline = now + config.dadRetransTimer
                        sendNeighborSolicitation(target: v6.entries[i].cidr.address, unicast: nil, dad: true)
                    } else {
                        v6.entries[i].state = .preferred
                        continue
                    }
                }
                next = earliest(next, v6.entries[i].deadline)
            }
            if let at = v6.mldAt {
                if now >= at {
                    sendMLDReport(change: v6.mldUnsolicitedLeft > 0)
                    if v6.mldUnsolicitedLeft > 0 { v6.mldUnsolicitedLeft &-= 1 }
                    v6.mldAt = v6.mldUnsolicitedLeft > 0 ? now + .seconds(1) : nil
                }
                next = earliest(next, v6.mldAt)
            }
        }
        next = earliest(next, neighbors6.poll(now: now) { action in
            switch action {
            case let .sendRequest(ip, unicast):
                sendNeighborSolicitation(target: ip, unicast: unicast, dad: false)
            case let .gaveUp(hop, dropped):
                counters.ndFailures &+= 1
                counters.ndUnresolvedDrops &+= UInt64(dropped)
                tcp.nextHopFailed(where: { [unowned self] dst in !dst.isV4 && route6(dst) == hop }, now: now)
            }
        })
        next = earliest(next, reassembler6.poll(now: now) { quote in
            counters.reassemblyTimeouts &+= 1
            if let q = quote { sendICMPv6Error(type: ICMPv6Type.timeExceeded, code: 1, quote: q) }
        })
        return next
    }

    // MARK: - Addressing and routing

    /// A preferred address of ours (tentative and duplicate ones are not assigned yet or at all).
    @inline(__always) func isLocal6(_ a: IPAddress) -> Bool {
        for e in v6.entries where e.cidr.address == a { return e.state == .preferred }
        return false
    }

    /// Our address entry for `a`, whatever its state.
    func addressIndex6(_ a: IPAddress) -> Int? { v6.entries.firstIndex { $0.cidr.address == a } }

    /// Next hop for a unicast `dst`: itself when on-link (link-local, or inside a prefix of ours),
    /// else the gateway; nil without a route. Multicast and ::/64 (unspecified, loopback, mapped)
    /// have none.
    @inline(__always) func route6(_ dst: IPAddress) -> IPAddress? {
        if dst.isMulticast || dst.hi == 0 { return nil }
        if dst.isLinkLocal { return dst }
        for e in v6.entries where !e.isLinkLocal && e.state != .duplicate && e.cidr.contains(dst) { return dst }
        return v6.gateway
    }

    /// Source address for `dst` (RFC 6724, the rules that matter on one link): the link-local
    /// address for link-local and link-scoped multicast destinations; else a preferred address
    /// whose prefix holds `dst`, else the first preferred global one.
    func sourceAddress6(for dst: IPAddress) -> IPAddress? {
        if dst.isLinkLocal || (dst.isMulticast && dst.hi >> 48 & 0xF == 2) {
            return v6.entries.first { $0.isLinkLocal && $0.state == .preferred }?.cidr.address
        }
        for e in v6.entries where !e.isLinkLocal && e.state == .preferred && e.cidr.contains(dst) { return e.cidr.address }
        return v6.entries.first { !$0.isLinkLocal && $0.state == .preferred }?.cidr.address
    }

    // MARK: - Path MTU (RFC 8201)

    /// The path MTU towards `dst`: the link's, or less after a packet too big.
    @inline(__always) func pathMTU(_ dst: IPAddress) -> Int {
        if v6.pathMTU.isEmpty { return mtu }
        guard let p = v6.pathMTU[dst] else { return mtu }
        if now >= p.expires {
            v6.pathMTU[dst] = nil
            return mtu
        }
        return min(p.mtu, mtu)
    }

    func maxPayload6(to dst: IPAddress) -> Int { pathMTU(dst) &- IPv6HeaderView.headerLength }

    /// Public view of the path MTU towards `dst` (diagnostics and tests).
    public func pathMTU6(to dst: IPAddress) -> Int { pathMTU(dst) }

    // MARK: - Output

    @inline(__always) func nextFragmentID() -> UInt32 {
        v6.fragmentID &+= 1
        return v6.fragmentID
    }

    /// `transmit` for IPv6: the L4 packet goes straight into the frame behind a 40-byte header
    /// (hop limit 64); a neighbor not yet resolved gets the frame parked.
    func transmit6(src: IPAddress, dst: IPAddress, proto: UInt8, capacity: Int, options: IPSendOptions = .standard,
                   _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard let hop = route6(dst) else { counters.noRoute &+= 1; return false }
        let cap = min(max(capacity, 0), pathMTU(dst) &- IPv6HeaderView.headerLength)
        let l4 = txBuffer + (EthernetHeaderView.headerLength &+ IPv6HeaderView.headerLength)
        let n = min(fill(UnsafeMutableRawBufferPointer(start: l4, count: cap)), cap)
        if n <= 0 {
            if capacity > cap { counters.oversizeTransmits &+= 1 }
            return true
        }
        var source = src
        if source.isUnspecified { guard let s = sourceAddress6(for: dst) else { return false }; source = s }
        IPv6HeaderView.emit(into: txBuffer + EthernetHeaderView.headerLength, source: source, destination: dst,
                            nextHeader: proto, payloadLength: n, hopLimit: options.hopLimit,
                            trafficClass: options.trafficClass)
        return sendIPv6Frame(ipLength: IPv6HeaderView.headerLength &+ n, hop: hop)
    }

    /// Sends the IPv6 packet of `ipLength` bytes at `txBuffer + 14` to `hop`: multicast to its
    /// Ethernet group, unicast to the MAC Neighbor Discovery knows, or parked until it does.
    @discardableResult
    func sendIPv6Frame(ipLength: Int, hop: IPAddress) -> Bool {
        let length = EthernetHeaderView.headerLength &+ ipLength
        EthernetHeaderView.emit(into: txBuffer, destination: .broadcast, source: config.mac, etherType: EtherType.ipv6)
        if hop.isMulticast {
            MACAddress(ipv6Multicast: hop).store(to: txBuffer)
            return emit(length: length)
        }
        return sendResolved6(length: length, hop: hop, neighbors6.lookup(hop, now: now))
    }

    /// Sends the frame of `length` bytes in `txBuffer` to `hop` as `lookup` found it: with its
    /// MAC, or parked until Neighbor Discovery resolves it.
    func sendResolved6(length: Int, hop: IPAddress, _ lookup: NeighborLookup) -> Bool {
        switch lookup {
        case let .resolved(mac):
            mac.store(to: txBuffer)
            return emit(length: length)
        case let .resolvedNeedsProbe(mac):
            mac.store(to: txBuffer)
            let ok = emit(length: length)
            sendNeighborSolicitation(target: hop, unicast: mac, dad: false)
            return ok
        case .unresolved:
            let r = neighbors6.enqueue(hop, frame: txBuffer, length: length, now: now)
            if r.queued { counters.ndQueued &+= 1 } else { counters.ndQueueDrops &+= 1 }
            if r.isNew { sendNeighborSolicitation(target: hop, unicast: nil, dad: false) }
            return r.queued
        }
    }

    /// `header` (8 bytes: UDP or ICMPv6) + `body` as one datagram, with a Fragment header per
    /// piece when it exceeds the path MTU (RFC 8200 §4.5: the source fragments, routers never).
    func outputDatagram6(src: IPAddress, dst: IPAddress, proto: UInt8, header: UnsafeRawPointer,
                         body: UnsafeRawBufferPointer, ip: IPSendOptions = .standard) throws(SocketError) {
        guard let hop = route6(dst) else { counters.noRoute &+= 1; throw .networkUnreachable }
        let total = 8 &+ body.count
        let pmtu = pathMTU(dst)
        let ipStart = txBuffer + EthernetHeaderView.headerLength
        let hl = IPv6HeaderView.headerLength
        if total <= pmtu &- hl {
            copyVirtual(header: header, body: body, from: 0, count: total, to: ipStart + hl)
            IPv6HeaderView.emit(into: ipStart, source: src, destination: dst, nextHeader: proto, payloadLength: total,
                                hopLimit: ip.hopLimit, trafficClass: ip.trafficClass)
            sendIPv6Frame(ipLength: hl &+ total, hop: hop)
            return
        }
        let id = nextFragmentID()
        let chunk = (pmtu &- hl &- IPv6FragmentView.length) & ~7
        var off = 0
        while off < total {
            let len = min(chunk, total &- off)
            copyVirtual(header: header, body: body, from: off, count: len, to: ipStart + (hl &+ IPv6FragmentView.length))
            IPv6HeaderView.emit(into: ipStart, source: src, destination: dst, nextHeader: IPProtocol.fragment,
                                payloadLength: IPv6FragmentView.length &+ len, hopLimit: ip.hopLimit,
                                trafficClass: ip.trafficClass)
            IPv6FragmentView.emit(into: ipStart + hl, nextHeader: proto, offset: off, more: off &+ len < total,
                                  identification: id)
            counters.fragmentsOut &+= 1
            sendIPv6Frame(ipLength: hl &+ IPv6FragmentView.length &+ len, hop: hop)
            off &+= len
        }
    }
}
