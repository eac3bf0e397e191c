/// The interface's offload paths: frames with a virtio header in, and TCP segments out as
/// headers plus ring regions, with the checksum and segmentation left to the kernel when the
/// sink takes them (`TransmitOffloads`).
extension NetStack {
    /// What of a sink's offloads the stack uses: each needs the one before it (a partial
    /// checksum only travels with `gather`'s descriptor; the kernel cuts super-segments only
    /// with partial checksums).
    static func usableOffloads(_ o: TransmitOffloads) -> TransmitOffloads {
        var r: TransmitOffloads = []
        guard o.contains(.gather) else { return r }
        r.insert(.gather)
        guard o.contains(.checksum) else { return r }
        r.insert(.checksum)
        if o.contains(.tcpSegmentation) { r.insert(.tcpSegmentation) }
        return r
    }

    /// Reads `sink.transmitOffloads` again (after the driver renegotiated them).
    public func refreshOffloads() { transmitOffloads = Self.usableOffloads(sink.transmitOffloads) }

    /// A frame as a TAP with IFF_VNET_HDR hands it over: `VirtioNetHeader.length` bytes of
    /// virtio header, then the Ethernet frame. A header this stack cannot honour (TCP/IPv6 or
    /// UFO segmentation) drops the frame. Never traps, whatever the bytes.
    public func receive(virtioFrame: UnsafeRawBufferPointer, now: Instant) {
        guard virtioFrame.count >= VirtioNetHeader.length, let p = virtioFrame.baseAddress else {
            self.now = now
            counters.framesIn &+= 1
            counters.droppedMalformed &+= 1
            return
        }
        let frame = UnsafeRawBufferPointer(start: p + VirtioNetHeader.length, count: virtioFrame.count &- VirtioNetHeader.length)
        guard let offload = FrameOffload(virtio: VirtioNetHeader(loading: p)) else {
            self.now = now
            counters.framesIn &+= 1
            counters.droppedUnsupported &+= 1
            return
        }
        receive(frame: frame, offload: offload, now: now)
    }

    /// What the link's offload state means for the L4 packet of `ip`: whether its checksum
    /// needs no verifying, and the piece size of a super-frame. A partial checksum vouches only
    /// when it starts at this datagram's L4 header and points at its checksum field; a
    /// fragment is never vouched for (the checksum covers the reassembled datagram). Not
    /// `usable`: a super-frame that is a fragment, or not of the protocol its type names.
    @inline(__always)
    func linkOffloadOfL4(_ ip: IPv4HeaderView, _ o: FrameOffload) -> (usable: Bool, verified: Bool, segmentSize: Int) {
        let proto = ip.protocolNumber
        var verified = false
        switch o.checksum {
        case .valid:
            verified = true
        case .partial:
            let field = proto == IPProtocol.tcp ? 16 : proto == IPProtocol.udp ? 6 : -1
            verified = o.checksumStart == EthernetHeaderView.headerLength &+ ip.headerLength && o.checksumOffset == field
        case .unverified:
            break
        }
        if ip.isFragment { verified = false }
        switch o.segmentation {
        case .none:
            return (true, verified, 0)
        case .tcp4:
            guard proto == IPProtocol.tcp, !ip.isFragment else { return (false, false, 0) }
        case .udp4:
            guard proto == IPProtocol.udp, !ip.isFragment else { return (false, false, 0) }
        }
        counters.superFramesIn &+= 1
        return (true, verified, o.segmentSize)
    }
}

// MARK: - TCP output with offloads (IPv4Transmitter)

extension NetStack {
    /// Super-segments only with TSO, and only to a resolved neighbor: a frame parked for ARP is
    /// sent later as a plain frame, which must fit the MTU.
    public func segmentationLimit(to dst: IPv4Address) -> Int {
        guard transmitOffloads.contains(.tcpSegmentation), let (hop, bcast) = route(dst), !bcast,
              neighbor(hop) != nil else { return 0 }
        return maxSegmentationL4
    }

    /// Builds Ethernet, IPv4 (DF, TTL 64) and TCP headers in `txBuffer`. With `gather`, the
    /// payload stays where it is (the send ring) and the sink writes headers and payload in one
    /// go, checksum (and with `segmentSize`, segmentation) left to the kernel when it takes
    /// them; otherwise the payload is copied behind the headers and summed in the same pass.
    @discardableResult
    public func transmitTCP(src: IPv4Address, dst: IPv4Address, header: TCPHeaderRepr, payload: UnsafeRawBufferPointer,
                            _ more: UnsafeRawBufferPointer, segmentSize: Int, options: IPv4SendOptions) -> Bool {
        guard let (hop, bcast) = route(dst) else { counters.noRoute &+= 1; return false }
        var source = src
        if source.isUnspecified { guard let s = sourceAddress(for: dst) else { return false }; source = s }
        let hl = header.headerLength
        let total = hl &+ payload.count &+ more.count
        var pieces = 0
        if total > mtu &- IPv4HeaderView.minHeaderLength {
            guard segmentSize > 0, hl &+ segmentSize <= mtu &- IPv4HeaderView.minHeaderLength,
                  total <= maxSegmentationL4, transmitOffloads.contains(.tcpSegmentation), !bcast else {
                counters.oversizeTransmits &+= 1
                return true
            }
            pieces = segmentSize
        }
        let ipStart = txBuffer + EthernetHeaderView.headerLength
        let l4Start = EthernetHeaderView.headerLength &+ IPv4HeaderView.minHeaderLength
        let l4 = txBuffer + l4Start
        header.emit(into: l4)
        IPv4HeaderView.emit(into: ipStart, source: source, destination: dst, protocolNumber: IPProtocol.tcp,
                            payloadLength: total, identification: nextIPID(), dontFragment: true,
                            ttl: options.timeToLive, dscpECN: options.typeOfService)
        EthernetHeaderView.emit(into: txBuffer, destination: .broadcast, source: config.mac, etherType: EtherType.ipv4)
        let lookup = bcast ? NeighborCache.Lookup.resolved(.broadcast) : neighbors.lookup(hop, now: now)
        var mac: MACAddress?
        switch lookup {
        case let .resolved(m), let .resolvedNeedsProbe(m): mac = m
        case .unresolved: break
        }
        if let mac, transmitOffloads.contains(.gather) {
            mac.store(to: txBuffer)
            var o = FrameOffload.none
            if transmitOffloads.contains(.checksum) {
                wireStore16(l4, 16, TCPHeaderRepr.partialChecksum(length: total, source: source, destination: dst))
                o.checksum = .partial
                o.checksumStart = l4Start
                o.checksumOffset = 16
                if pieces > 0 {
                    o.segmentation = .tcp4
                    o.segmentSize = pieces
                    counters.superFramesOut &+= 1
                }
            } else {
                TCPHeaderRepr.fillChecksum(l4, headerLength: hl, payload: payload, more, copy: false, source: source,
                                           destination: dst)
            }
            counters.framesOut &+= 1
            counters.bytesOut &+= UInt64(l4Start &+ total)
            sink.sendFrame(head: UnsafeRawBufferPointer(start: txBuffer, count: l4Start &+ hl), payload: payload, more,
                           offload: o)
            if case .resolvedNeedsProbe = lookup { sendARPRequest(for: hop, unicast: mac) }
            return true
        }
        // A plain frame: only one that fits the MTU (the TSO limit asks for a resolved neighbor).
        guard pieces == 0 else { counters.oversizeTransmits &+= 1; return true }
        TCPHeaderRepr.fillChecksum(l4, headerLength: hl, payload: payload, more, copy: true, source: source,
                                   destination: dst)
        if bcast { return emit(length: l4Start &+ total) }
        return sendResolved(length: l4Start &+ total, hop: hop, lookup)
    }
}
