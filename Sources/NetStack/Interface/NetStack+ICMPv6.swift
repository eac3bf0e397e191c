/// ICMPv6 (RFC 4443): echo, the errors we send (destination unreachable, packet too big is never
/// ours to send since we do not forward, time exceeded for reassembly, parameter problem) with
/// RFC 4443 §2.4's restraint and a token bucket, and the errors we receive: destination
/// unreachable to the TCP connect or connected UDP socket it concerns, packet too big to the
/// path MTU TCP's segment size follows (RFC 8201). Neighbor Discovery and MLD messages go to
/// NetStack+NDP.swift.
extension NetStack {
    /// Largest ICMPv6 error: the quote is cut so the message fits the minimum MTU.
    static let icmpv6ErrorQuote = IPv6HeaderView.minimumMTU &- IPv6HeaderView.headerLength &- ICMPv6View.headerLength

    func icmpv6Input(_ payload: UnsafeRawBufferPointer, packet: UnsafeRawBufferPointer, _ cx: IPv6InputContext) {
        let icmp: ICMPv6View
        do { icmp = try ICMPv6View(payload) } catch { counters.droppedMalformed &+= 1; return }
        guard cx.verified || icmp.checksumValid(source: cx.src, destination: cx.dst) else {
            counters.droppedChecksum &+= 1
            return
        }
        switch icmp.type {
        case ICMPv6Type.echoRequest:
            counters.icmpEchoRequests &+= 1
            guard icmp.code == 0, !cx.src.isUnspecified else { return }
            echoReply6(icmp, cx)
        case ICMPv6Type.neighborSolicitation:
            neighborSolicitationInput(icmp, cx)
        case ICMPv6Type.neighborAdvertisement:
            neighborAdvertisementInput(icmp, cx)
        case ICMPv6Type.mldQuery:
            mldQueryInput(icmp, cx)
        default:
            // Echo replies (no ICMP sockets), router messages (no SLAAC), redirects (one link),
            // other nodes' MLD reports: nothing to do.
            guard ICMPv6Type.isError(icmp.type) else { return }
            counters.icmpErrorsReceived &+= 1
            icmpv6ErrorInput(icmp)
        }
    }

    /// Answers an echo request: from the address asked, or for a multicast request from our
    /// address for the asker (Linux answers those too: icmp echo_ignore_multicast is 0 for v6).
    private func echoReply6(_ icmp: ICMPv6View, _ cx: IPv6InputContext) {
        guard let from = cx.dst.isMulticast ? sourceAddress6(for: cx.src) : cx.dst else { return }
        var hdr: UInt64 = 0
        withUnsafeMutableBytes(of: &hdr) { h in
            let p = h.baseAddress.unsafelyUnwrapped
            p.storeBytes(of: ICMPv6Type.echoReply, as: UInt8.self)
            p.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
            wireStore16(p, 2, 0)
            wireStore16(p, 4, icmp.identifier)
            wireStore16(p, 6, icmp.sequence)
            let body = icmp.body
            var s = Checksum.pseudoHeader(src: from, dst: cx.src, proto: IPProtocol.icmpv6, length: 8 &+ body.count)
            s = Checksum.partial(UnsafeRawPointer(p), count: 8, initial: s)
            if let b = body.baseAddress { s = Checksum.partial(b, count: body.count, initial: s) }
            wireStore16(p, 2, Checksum.finish(s))
            do {
                try outputDatagram6(src: from, dst: cx.src, proto: IPProtocol.icmpv6, header: UnsafeRawPointer(p), body: body)
                counters.icmpEchoReplies &+= 1
            } catch {}
        }
    }

    /// An error about a packet of ours: the quote is its IPv6 header and as much as fit; the
    /// extension headers in it are skipped to find the transport header (a non-first fragment
    /// has none).
    private func icmpv6ErrorInput(_ icmp: ICMPv6View) {
        let quote = icmp.body
        guard quote.count >= IPv6HeaderView.headerLength, let q = quote.baseAddress else { return }
        let origSrc = IPAddress(loadingFrom: q + 8), origDst = IPAddress(loadingFrom: q + 24)
        guard addressIndex6(origSrc) != nil else { return }
        if icmp.type == ICMPv6Type.packetTooBig {
            counters.packetTooBigReceived &+= 1
            pathMTUReported(to: origDst, mtu: icmp.rest)
            return
        }
        guard icmp.type == ICMPv6Type.destinationUnreachable else { return }
        var next = q.load(fromByteOffset: 6, as: UInt8.self)
        var off = IPv6HeaderView.headerLength
        while IPv6HeaderView.isExtension(next) {
            guard off &+ 8 <= quote.count else { return }
            if next == IPProtocol.fragment {
                guard wireLoad16(q, off &+ 2) & 0xFFF8 == 0 else { return }
                next = q.load(fromByteOffset: off, as: UInt8.self)
                off &+= IPv6FragmentView.length
            } else {
                next = q.load(fromByteOffset: off, as: UInt8.self)
                off &+= (Int(q.load(fromByteOffset: off &+ 1, as: UInt8.self)) &+ 1) &* 8
            }
        }
        guard off &+ 8 <= quote.count else { return }
        let e = SocketError(icmpv6UnreachableCode: icmp.code)
        let local = IPEndpoint(origSrc, wireLoad16(q, off)), remote = IPEndpoint(origDst, wireLoad16(q, off &+ 2))
        if next == IPProtocol.udp {
            udpUnreachable(error: e, local: local, remote: remote)
        } else if next == IPProtocol.tcp {
            tcp.destinationUnreachable(error: e, local: local, remote: remote, quotedSeq: wireLoad32(q, off &+ 4), now: now)
            tcpMayHaveEvents = true
        }
    }

    /// A packet too big said the path to `dst` takes `mtu` bytes: remembered for
    /// `pathMTUTimeout` (never below 1280, RFC 8201 §4), and TCP connections to it shrink their
    /// segments.
    func pathMTUReported(to dst: IPAddress, mtu reported: UInt32) {
        let m = max(Int(min(reported, 65535)), IPv6HeaderView.minimumMTU)
        guard m < pathMTU(dst), !dst.isMulticast else { return }
        if v6.pathMTU[dst] == nil && v6.pathMTU.count >= max(1, config.pathMTUMaxEntries) {
            // Full: the entry expiring first goes.
            if let oldest = v6.pathMTU.min(by: { $0.value.expires < $1.value.expires })?.key { v6.pathMTU[oldest] = nil }
        }
        v6.pathMTU[dst] = IPv6State.PathMTU(mtu: m, expires: now + config.pathMTUTimeout)
        tcp.pathMTUDecreased(to: dst, maxPayload: m &- IPv6HeaderView.headerLength, now: now)
    }

    /// Sends an ICMPv6 error about `quote` (the offending packet from its IPv6 header), following
    /// RFC 4443 §2.4: never about an ICMPv6 error, about a packet from an address that does not
    /// name one node (unspecified, multicast, ::/64, ours), or about a packet to a multicast
    /// address or in a link-layer multicast frame — except packet too big and parameter
    /// problems the option type asks for (`evenToMulticast`); rate limited by a token bucket.
    func sendICMPv6Error(type: UInt8, code: UInt8, quote: UnsafeRawBufferPointer, rest: UInt32 = 0,
                         evenToMulticast: Bool = false, linkMulticast: Bool = false) {
        guard quote.count >= IPv6HeaderView.headerLength, let q = quote.baseAddress else { return }
        let origSrc = IPAddress(loadingFrom: q + 8), origDst = IPAddress(loadingFrom: q + 24)
        guard origSrc.isUnicast, origSrc.hi != 0, addressIndex6(origSrc) == nil else { return }
        if (origDst.isMulticast || linkMulticast) && !(evenToMulticast || type == ICMPv6Type.packetTooBig) { return }
        if q.load(fromByteOffset: 6, as: UInt8.self) == IPProtocol.icmpv6, quote.count > IPv6HeaderView.headerLength,
           ICMPv6Type.isError(q.load(fromByteOffset: IPv6HeaderView.headerLength, as: UInt8.self)) { return }
        guard v6.icmpBucket.take(now: now) else { counters.icmpErrorsRateLimited &+= 1; return }
        guard let src = isLocal6(origDst) ? origDst : sourceAddress6(for: origSrc) else { return }
        let body = UnsafeRawBufferPointer(start: q, count: min(quote.count, Self.icmpv6ErrorQuote))
        var hdr: UInt64 = 0
        withUnsafeMutableBytes(of: &hdr) { h in
            let p = h.baseAddress.unsafelyUnwrapped
            p.storeBytes(of: type, as: UInt8.self)
            p.storeBytes(of: code, toByteOffset: 1, as: UInt8.self)
            wireStore16(p, 2, 0)
            wireStore32(p, 4, rest)
            var s = Checksum.pseudoHeader(src: src, dst: origSrc, proto: IPProtocol.icmpv6, length: 8 &+ body.count)
            s = Checksum.partial(UnsafeRawPointer(p), count: 8, initial: s)
            s = Checksum.partial(q, count: body.count, initial: s)
            wireStore16(p, 2, Checksum.finish(s))
            do {
                try outputDatagram6(src: src, dst: origSrc, proto: IPProtocol.icmpv6, header: UnsafeRawPointer(p), body: body)
                counters.icmpErrorsSent &+= 1
            } catch {}
        }
    }
}
