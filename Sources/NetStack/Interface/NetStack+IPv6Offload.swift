/// TCP over IPv6 with the link's offloads, as NetStack+Offload.swift does it for IPv4: headers
/// built in `txBuffer`, the payload left in the send ring for the sink to gather, the checksum
/// left partial and super-segments cut by the kernel (TSO6) when the sink takes them.
extension NetStack {
    /// Super-segments only with TSO and towards a resolved neighbor (a parked frame leaves
    /// later as a plain frame, which must fit the path MTU).
    func segmentationLimit6(to dst: IPAddress) -> Int {
        guard transmitOffloads.contains(.tcpSegmentation), let hop = route6(dst), neighbor6(hop) != nil else { return 0 }
        return maxSegmentationL4
    }

    /// One TCP segment over IPv6 (the socket's hop limit and traffic class); see `transmitTCP4` for the shape of the offload
    /// path. Segments (or super-segment pieces) never exceed the path MTU.
    func transmitTCP6(src: IPAddress, dst: IPAddress, header: TCPHeaderRepr, payload: UnsafeRawBufferPointer,
                      _ more: UnsafeRawBufferPointer, segmentSize: Int, options: IPSendOptions) -> Bool {
        guard let hop = route6(dst) else { counters.noRoute &+= 1; return false }
        let hl = header.headerLength
        let total = hl &+ payload.count &+ more.count
        let maxL4 = pathMTU(dst) &- IPv6HeaderView.headerLength
        var pieces = 0
        if total > maxL4 {
            guard segmentSize > 0, hl &+ segmentSize <= maxL4, total <= maxSegmentationL4,
                  transmitOffloads.contains(.tcpSegmentation) else {
                counters.oversizeTransmits &+= 1
                return true
            }
            pieces = segmentSize
        }
        let l4Start = EthernetHeaderView.headerLength &+ IPv6HeaderView.headerLength
        let l4 = txBuffer + l4Start
        header.emit(into: l4)
        IPv6HeaderView.emit(into: txBuffer + EthernetHeaderView.headerLength, source: src, destination: dst,
                            nextHeader: IPProtocol.tcp, payloadLength: total, hopLimit: options.hopLimit,
                            trafficClass: options.trafficClass)
        EthernetHeaderView.emit(into: txBuffer, destination: .broadcast, source: config.mac, etherType: EtherType.ipv6)
        let sum = Checksum.addressSum(src, dst)
        let lookup = neighbors6.lookup(hop, now: now)
        var mac: MACAddress?
        switch lookup {
        case let .resolved(m), let .resolvedNeedsProbe(m): mac = m
        case .unresolved: break
        }
        if let mac, transmitOffloads.contains(.gather) {
            mac.store(to: txBuffer)
            var o = FrameOffload.none
            if transmitOffloads.contains(.checksum) {
                wireStore16(l4, 16, TCPHeaderRepr.partialChecksum(length: total, addressSum: sum))
                o.checksum = .partial
                o.checksumStart = l4Start
                o.checksumOffset = 16
                if pieces > 0 {
                    o.segmentation = .tcp6
                    o.segmentSize = pieces
                    counters.superFramesOut &+= 1
                }
            } else {
                TCPHeaderRepr.fillChecksum(l4, headerLength: hl, payload: payload, more, copy: false, addressSum: sum)
            }
            counters.framesOut &+= 1
            counters.bytesOut &+= UInt64(l4Start &+ total)
            sink.sendFrame(head: UnsafeRawBufferPointer(start: txBuffer, count: l4Start &+ hl), payload: payload, more,
                           offload: o)
            if case .resolvedNeedsProbe = lookup { sendNeighborSolicitation(target: hop, unicast: mac, dad: false) }
            return true
        }
        guard pieces == 0 else { counters.oversizeTransmits &+= 1; return true }
        TCPHeaderRepr.fillChecksum(l4, headerLength: hl, payload: payload, more, copy: true, addressSum: sum)
        return sendResolved6(length: l4Start &+ total, hop: hop, lookup)
    }
}
