/// Neighbor Discovery (RFC 4861) for address resolution and unreachability detection, duplicate
/// address detection (RFC 4862 §5.4), and the MLDv2 reports (RFC 3810) that keep our
/// solicited-node groups alive in snooping bridges. The cache is the same `NeighborCache` ARP
/// uses (states, timeouts, queueing), with RFC 4861's update rules.
///
/// Checks on input (RFC 4861 §7.1): hop limit 255 (the message was not forwarded), code 0,
/// length, a unicast target, options of non-zero length; a solicitation from :: (DAD) goes to a
/// solicited-node group and carries no source link-layer address; a multicast advertisement is
/// never "solicited".
extension NetStack {
    func neighborSolicitationInput(_ icmp: ICMPv6View, _ cx: IPv6InputContext) {
        counters.ndSolicitationsReceived &+= 1
        guard cx.hopLimit == 255, let ns = try? NDPMessageView(icmp.bytes) else { counters.droppedMalformed &+= 1; return }
        let dad = cx.src.isUnspecified
        if dad {
            guard cx.dst.isSolicitedNode, ns.linkLayerAddress == nil else { counters.droppedMalformed &+= 1; return }
        }
        guard let i = addressIndex6(ns.target) else { counters.droppedNotForUs &+= 1; return }
        switch v6.entries[i].state {
        case .tentative:
            // Another node probing the same address (RFC 4862 §5.4.3); a unicast-sourced
            // solicitation is someone resolving it, which a tentative address does not answer.
            if dad { addressIsDuplicate(i) }
            return
        case .duplicate:
            return
        case .preferred:
            break
        }
        if !dad, let mac = ns.linkLayerAddress {
            // §7.2.3: the asker's address, as a stale entry (it was not confirmed).
            neighbors6.update(cx.src, mac: mac, now: now, create: true, confirmed: false) { sendQueued($0) }
        }
        if dad {
            sendNeighborAdvertisement(target: ns.target, to: .allNodes, mac: MACAddress(ipv6Multicast: .allNodes),
                                      solicited: false)
        } else {
            let mac = ns.linkLayerAddress ?? neighbor6(cx.src) ?? cx.linkSource
            sendNeighborAdvertisement(target: ns.target, to: cx.src, mac: mac, solicited: true)
        }
    }

    func neighborAdvertisementInput(_ icmp: ICMPv6View, _ cx: IPv6InputContext) {
        counters.ndAdvertisementsReceived &+= 1
        guard cx.hopLimit == 255, let na = try? NDPMessageView(icmp.bytes) else { counters.droppedMalformed &+= 1; return }
        let solicited = na.flags & NDPFlag.solicited != 0
        if cx.dst.isMulticast && solicited { counters.droppedMalformed &+= 1; return }
        if let i = addressIndex6(na.target) {
            // Somebody else has our address: fatal for a tentative one (§5.4.4), logged for a
            // preferred one (RFC 4862 leaves that to the implementation: we keep it).
            counters.dadConflicts &+= 1
            if v6.entries[i].state == .tentative { addressIsDuplicate(i) }
            return
        }
        neighbors6.update(na.target, mac: na.linkLayerAddress, now: now, create: false, confirmed: solicited,
                          override: na.flags & NDPFlag.override != 0) { sendQueued($0) }
    }

    /// A frame that waited for its neighbor (destination MAC already in place).
    func sendQueued(_ frame: UnsafeMutableRawBufferPointer) {
        counters.framesOut &+= 1
        counters.bytesOut &+= UInt64(frame.count)
        sink.sendFrame(UnsafeRawBufferPointer(frame))
    }

    private func addressIsDuplicate(_ i: Int) {
        counters.dadConflicts &+= 1
        v6.entries[i].state = .duplicate
    }

    /// The MAC cached for an IPv6 neighbor, if resolved (diagnostics and tests).
    public func neighbor6(_ ip: IPAddress) -> MACAddress? {
        guard let e = neighbors6.entry(ip), e.state != .incomplete else { return nil }
        return e.mac
    }

    /// Every Neighbor Discovery cache entry (diagnostics; allocates).
    public func forEachNeighbor6(_ body: (IPAddress, MACAddress?, NeighborState) -> Void) {
        for (ip, e) in neighbors6.entries.sorted(by: { $0.key < $1.key }) {
            switch e.state {
            case .incomplete: body(ip, nil, .incomplete)
            case .reachable: body(ip, e.mac, now < e.confirmed + neighbors6.reachableTime ? .reachable : .stale)
            case .stale: body(ip, e.mac, .stale)
            }
        }
    }

    // MARK: - Sending

    /// A solicitation for `target`: to its solicited-node group (resolution, or DAD from ::
    /// without our link-layer address), or to `unicast` (confirming a stale entry).
    func sendNeighborSolicitation(target: IPAddress, unicast: MACAddress?, dad: Bool) {
        let src: IPAddress
        if dad {
            src = .v6Any
        } else {
            guard let s = sourceAddress6(for: target) else { return }
            src = s
        }
        let dst = unicast != nil ? target : target.solicitedNode
        let icmp = ndBuffer + (EthernetHeaderView.headerLength &+ IPv6HeaderView.headerLength)
        let n = NDPMessageView.emit(into: icmp, type: ICMPv6Type.neighborSolicitation, flags: 0, target: target,
                                    option: NDPOption.sourceLinkLayerAddress, mac: dad ? nil : config.mac)
        sendNDMessage(length: n, src: src, dst: dst, mac: unicast ?? MACAddress(ipv6Multicast: dst), hopLimit: 255)
        counters.ndSolicitationsSent &+= 1
    }

    /// An advertisement of our `target` (override set: the address is ours alone).
    func sendNeighborAdvertisement(target: IPAddress, to dst: IPAddress, mac: MACAddress, solicited: Bool) {
        let icmp = ndBuffer + (EthernetHeaderView.headerLength &+ IPv6HeaderView.headerLength)
        let flags = NDPFlag.override | (solicited ? NDPFlag.solicited : 0)
        let n = NDPMessageView.emit(into: icmp, type: ICMPv6Type.neighborAdvertisement, flags: flags, target: target,
                                    option: NDPOption.targetLinkLayerAddress, mac: config.mac)
        sendNDMessage(length: n, src: target, dst: dst, mac: mac, hopLimit: 255)
        counters.ndAdvertisementsSent &+= 1
    }

    /// Finishes the ICMPv6 message of `length` bytes built in `ndBuffer` behind room for the
    /// Ethernet and IPv6 headers (checksum, headers) and sends it.
    private func sendNDMessage(length: Int, src: IPAddress, dst: IPAddress, mac: MACAddress, hopLimit: UInt8,
                               extensionLength: Int = 0) {
        let ip = ndBuffer + EthernetHeaderView.headerLength
        let icmp = ip + (IPv6HeaderView.headerLength &+ extensionLength)
        wireStore16(icmp, 2, 0)
        let s = Checksum.pseudoHeader(src: src, dst: dst, proto: IPProtocol.icmpv6, length: length)
        wireStore16(icmp, 2, Checksum.finish(Checksum.partial(UnsafeRawPointer(icmp), count: length, initial: s)))
        IPv6HeaderView.emit(into: ip, source: src, destination: dst,
                            nextHeader: extensionLength > 0 ? IPProtocol.hopByHop : IPProtocol.icmpv6,
                            payloadLength: extensionLength &+ length, hopLimit: hopLimit)
        EthernetHeaderView.emit(into: ndBuffer, destination: mac, source: config.mac, etherType: EtherType.ipv6)
        let total = EthernetHeaderView.headerLength &+ IPv6HeaderView.headerLength &+ extensionLength &+ length
        counters.framesOut &+= 1
        counters.bytesOut &+= UInt64(total)
        sink.sendFrame(UnsafeRawBufferPointer(start: ndBuffer, count: total))
    }

    // MARK: - MLD

    /// Reports after an address change: two, a second apart (RFC 3810 §6.1, robustness 2).
    func scheduleUnsolicitedMLD(now: Instant) {
        v6.mldUnsolicitedLeft = 2
        v6.mldAt = now
    }

    /// A query (from a link-local source, hop limit 1): our report goes out within its maximum
    /// response delay, at a point that differs between hosts (RFC 3810 §6.2).
    func mldQueryInput(_ icmp: ICMPv6View, _ cx: IPv6InputContext) {
        guard cx.hopLimit == 1, cx.src.isLinkLocal, icmp.bytes.count >= 24, let p = icmp.bytes.baseAddress else { return }
        let group = IPAddress(loadingFrom: p + 8)
        guard group.isUnspecified || isOurSolicitedNodeGroup(group) else { return }
        let maxDelay = UInt64(max(MLDv2.maxResponseDelay(icmp.bytes), 1)) &* 1_000_000
        let jitter = (config.mac.interfaceIdentifier ^ now.nanoseconds) % maxDelay
        let at = now + Duration(nanoseconds: jitter)
        if v6.mldAt.map({ at < $0 }) ?? true { v6.mldAt = at }
    }

    /// One MLDv2 report of every solicited-node group of ours to ff02::16, with the Router Alert
    /// option, hop limit 1, from our link-local address or :: before it is usable (RFC 3590).
    func sendMLDReport(change: Bool) {
        var groups: [IPAddress] = []
        for e in v6.entries where e.state != .duplicate && !groups.contains(e.cidr.address.solicitedNode) {
            groups.append(e.cidr.address.solicitedNode)
        }
        let maxRecords = (Self.ndBufferSize &- EthernetHeaderView.headerLength &- IPv6HeaderView.headerLength &- 16) / 20
        guard !groups.isEmpty else { return }
        if groups.count > maxRecords { groups.removeLast(groups.count &- maxRecords) }
        let src = v6.entries.first { $0.isLinkLocal && $0.state == .preferred }?.cidr.address ?? .v6Any
        let hbh = ndBuffer + (EthernetHeaderView.headerLength &+ IPv6HeaderView.headerLength)
        // Hop-by-Hop: next header ICMPv6, length 0, Router Alert (MLD), PadN of 0.
        for (i, b) in [IPProtocol.icmpv6, 0, IPv6Option.routerAlert, 2, 0, 0, IPv6Option.padN, 0].enumerated() {
            hbh.storeBytes(of: b, toByteOffset: i, as: UInt8.self)
        }
        let icmp = hbh + 8
        icmp.storeBytes(of: ICMPv6Type.mldv2Report, as: UInt8.self)
        icmp.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
        wireStore16(icmp, 4, 0)
        wireStore16(icmp, 6, UInt16(groups.count))
        var off = 8
        for g in groups {
            icmp.storeBytes(of: change ? MLDv2.changeToExclude : MLDv2.modeIsExclude, toByteOffset: off, as: UInt8.self)
            icmp.storeBytes(of: 0, toByteOffset: off &+ 1, as: UInt8.self)
            wireStore16(icmp, off &+ 2, 0)
            g.store(to: icmp + (off &+ 4))
            off &+= 20
        }
        sendNDMessage(length: off, src: src, dst: MLDv2.allRouters, mac: MACAddress(ipv6Multicast: MLDv2.allRouters),
                      hopLimit: 1, extensionLength: 8)
        counters.mldReportsSent &+= 1
    }
}
