/// ICMPv4 (RFC 792, RFC 1122 §3.2.2): echo answered, a destination unreachable handed to the TCP
/// connection or connected UDP socket it quotes, and the errors we send (never about an ICMP
/// error, a broadcast or a fragment other than the first), rate-limited by a token bucket.
extension NetStack {
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
                    try outputDatagram4(src: dst, dst: src, proto: IPProtocol.icmp, header: UnsafeRawPointer(p), body: body)
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
        let local = IPEndpoint(src, wireLoad16(q, ihl)), remote = IPEndpoint(dst, wireLoad16(q, ihl &+ 2))
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
                try outputDatagram4(src: src, dst: origSrc, proto: IPProtocol.icmp, header: UnsafeRawPointer(p), body: body)
                counters.icmpErrorsSent &+= 1
            } catch {}
        }
    }
}
