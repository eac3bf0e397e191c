/// IPv6 input (RFC 8200 §4): header checks, the extension header walk, fragment reassembly, and
/// delivery to TCP, UDP and ICMPv6. No forwarding: a packet is either for one of our addresses or
/// groups, or dropped.
///
/// The walk: Hop-by-Hop only right after the fixed header; Hop-by-Hop and Destination Options
/// TLVs checked (Pad1/PadN/Router Alert known, the rest by the two high bits of their type:
/// skip, discard, or discard and report with a parameter problem — the last kind not to a
/// multicast destination); a Routing header with segments left is refused with a parameter
/// problem (RFC 5095 for type 0, and we route none of the others either); a Fragment header
/// goes to reassembly (RFC 8200 §4.5, overlaps drop the datagram per RFC 5722, atomic fragments
/// per RFC 6946); an unknown next header gets a parameter problem pointing at the field that
/// named it.
extension NetStack {
    func ipv6Input(_ payload: UnsafeRawBufferPointer, source mac: MACAddress, linkMulticast: Bool, offload: FrameOffload) {
        let ip: IPv6HeaderView
        do { ip = try IPv6HeaderView(payload) } catch { counters.droppedMalformed &+= 1; return }
        counters.ipv6PacketsIn &+= 1
        let src = ip.source, dst = ip.destination
        // For us: a preferred address, or a group we are in: all-nodes, or the solicited-node
        // group of any address of ours (tentative ones too: DAD listens there).
        if dst.isMulticast {
            guard dst == .allNodes || isOurSolicitedNodeGroup(dst) else { counters.droppedNotForUs &+= 1; return }
        } else if !isLocal6(dst) {
            counters.droppedNotForUs &+= 1
            return
        }
        // Never from a multicast address, from ::/64 other than :: (mapped and compatible
        // addresses do not appear on the wire, RFC 4291 §2.5.5), or from ourselves.
        guard !src.isMulticast, src.hi != 0 || src.lo == 0, !isLocal6(src) else {
            counters.droppedMartian &+= 1
            return
        }
        var verified = false
        var pieces = 0
        if !offload.isNone {
            let l4 = linkOffload6(ip, offload)
            guard l4.usable else { counters.droppedMalformed &+= 1; return }
            verified = l4.verified
            pieces = l4.segmentSize
        }
        let context = IPv6InputContext(src: src, dst: dst, hopLimit: ip.hopLimit, linkMulticast: linkMulticast,
                                       linkSource: mac, verified: verified, segmentSize: pieces)
        ipv6Walk(ip.bytes, next: ip.nextHeader, nextField: 6, offset: IPv6HeaderView.headerLength,
                 hopByHopAllowed: true, context)
    }

    /// Whether `g` is the solicited-node group of an address of ours.
    @inline(__always) func isOurSolicitedNodeGroup(_ g: IPAddress) -> Bool {
        guard g.isSolicitedNode else { return false }
        for e in v6.entries where e.state != .duplicate && e.cidr.address.solicitedNode == g { return true }
        return false
    }

    /// Walks `packet` (a whole IPv6 packet: received, or reassembled) from the header `next`
    /// at `offset`, which the byte at `nextField` named.
    func ipv6Walk(_ packet: UnsafeRawBufferPointer, next first: UInt8, nextField firstField: Int, offset start: Int,
                  hopByHopAllowed: Bool, _ cx: IPv6InputContext) {
        guard let p = packet.baseAddress else { return }
        var next = first, field = firstField, off = start
        while true {
            let rest = UnsafeRawBufferPointer(start: p + off, count: packet.count &- off)
            switch next {
            case IPProtocol.tcp, IPProtocol.udp, IPProtocol.icmpv6:
                deliver6(proto: next, packet: packet, payload: rest, cx)
                return
            case IPProtocol.hopByHop, IPProtocol.destinationOptions:
                if next == IPProtocol.hopByHop && !(hopByHopAllowed && off == IPv6HeaderView.headerLength) {
                    parameterProblem(code: ICMPv6ParameterProblemCode.unrecognizedNextHeader, pointer: field, packet, cx)
                    return
                }
                guard let ext = try? IPv6ExtensionView(rest) else { counters.droppedMalformed &+= 1; return }
                guard ipv6Options(packet, from: off &+ 2, to: off &+ ext.length, cx) else { return }
                field = off
                next = ext.nextHeader
                off &+= ext.length
            case IPProtocol.routing:
                guard let ext = try? IPv6ExtensionView(rest) else { counters.droppedMalformed &+= 1; return }
                // Segments left means forwarding, which we never do (RFC 5095 refuses type 0
                // in any case; RFC 8200 §4.4 wants the same answer for types we do not route).
                if ext.segmentsLeft != 0 {
                    parameterProblem(code: ICMPv6ParameterProblemCode.erroneousHeader, pointer: off &+ 2, packet, cx)
                    return
                }
                field = off
                next = ext.nextHeader
                off &+= ext.length
            case IPProtocol.fragment:
                fragmentInput6(packet, at: off, cx)
                return
            case IPProtocol.noNextHeader:
                return
            default:
                counters.droppedUnsupported &+= 1
                parameterProblem(code: ICMPv6ParameterProblemCode.unrecognizedNextHeader, pointer: field, packet, cx)
                return
            }
        }
    }

    /// Checks the TLV options in `packet[from..<to]`; false when the packet must be dropped
    /// (malformed, or an unrecognized option whose type says so, reported as it asks).
    func ipv6Options(_ packet: UnsafeRawBufferPointer, from: Int, to: Int, _ cx: IPv6InputContext) -> Bool {
        guard let p = packet.baseAddress else { return false }
        var i = from
        while i < to {
            let t = p.load(fromByteOffset: i, as: UInt8.self)
            if t == IPv6Option.pad1 { i &+= 1; continue }
            guard i &+ 2 <= to else { counters.droppedMalformed &+= 1; return false }
            let len = Int(p.load(fromByteOffset: i &+ 1, as: UInt8.self))
            guard i &+ 2 &+ len <= to else { counters.droppedMalformed &+= 1; return false }
            if t != IPv6Option.padN && t != IPv6Option.routerAlert {
                switch IPv6Option.action(t) {
                case .skip:
                    break
                case .discard:
                    counters.droppedUnsupported &+= 1
                    return false
                case .discardAndReport:
                    counters.droppedUnsupported &+= 1
                    parameterProblem(code: ICMPv6ParameterProblemCode.unrecognizedOption, pointer: i, packet, cx,
                                     evenToMulticast: true)
                    return false
                case .discardAndReportUnlessMulticast:
                    counters.droppedUnsupported &+= 1
                    parameterProblem(code: ICMPv6ParameterProblemCode.unrecognizedOption, pointer: i, packet, cx)
                    return false
                }
            }
            i &+= 2 &+ len
        }
        return true
    }

    /// A parameter problem about `packet` (RFC 4443 §3.4), `pointer` bytes into it.
    func parameterProblem(code: UInt8, pointer: Int, _ packet: UnsafeRawBufferPointer, _ cx: IPv6InputContext,
                          evenToMulticast: Bool = false) {
        counters.ipv6ParameterProblems &+= 1
        sendICMPv6Error(type: ICMPv6Type.parameterProblem, code: code, quote: packet, rest: UInt32(truncatingIfNeeded: pointer),
                        evenToMulticast: evenToMulticast, linkMulticast: cx.linkMulticast)
    }

    /// A Fragment header at `off` (RFC 8200 §4.5): an atomic fragment goes on as it is, the rest
    /// into reassembly; a whole datagram is walked again from the fragment's next header.
    func fragmentInput6(_ packet: UnsafeRawBufferPointer, at off: Int, _ cx: IPv6InputContext) {
        guard let p = packet.baseAddress,
              let f = try? IPv6FragmentView(UnsafeRawBufferPointer(start: p + off, count: packet.count &- off)) else {
            counters.droppedMalformed &+= 1
            return
        }
        counters.fragmentsIn &+= 1
        let dataStart = off &+ IPv6FragmentView.length
        let data = UnsafeRawBufferPointer(start: p + dataStart, count: packet.count &- dataStart)
        if f.fragmentOffset == 0 && !f.moreFragments {
            // RFC 6946: processed on its own, never mixed with other fragments.
            ipv6Walk(packet, next: f.nextHeader, nextField: off, offset: dataStart, hopByHopAllowed: false, cx)
            return
        }
        if f.moreFragments && (data.count == 0 || data.count & 7 != 0) {
            counters.reassemblyDrops &+= 1
            parameterProblem(code: ICMPv6ParameterProblemCode.erroneousHeader, pointer: 4, packet, cx)
            return
        }
        // The extension headers in front of this one are each fragment's own (and were just
        // processed); what is reassembled is the rest, which must fit a 65535-byte payload.
        let limit = 65535 &- (off &- IPv6HeaderView.headerLength) &- IPv6FragmentView.length
        if f.fragmentOffset &+ data.count > limit {
            counters.reassemblyDrops &+= 1
            parameterProblem(code: ICMPv6ParameterProblemCode.erroneousHeader, pointer: off &+ 2, packet, cx)
            return
        }
        // What goes in front of the whole: this packet's fixed header, naming the fragment's
        // next header (payload length set once the length is known).
        var header = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let outcome = withUnsafeMutableBytes(of: &header) { h -> Reassembler.Outcome in
            let hp = h.baseAddress.unsafelyUnwrapped
            hp.copyMemory(from: p, byteCount: IPv6HeaderView.headerLength)
            hp.storeBytes(of: f.nextHeader, toByteOffset: 6, as: UInt8.self)
            let key = Reassembler.Key(src: cx.src, dst: cx.dst, proto: 0, id: f.identification)
            return reassembler6.add(key: key, offset: f.fragmentOffset, more: f.moreFragments, data: data,
                                    header: UnsafeRawBufferPointer(h), limit: limit, now: now)
        }
        switch outcome {
        case let .complete(whole, _, body):
            counters.reassembled &+= 1
            guard let w = whole.baseAddress else { return }
            wireStore16(UnsafeMutableRawPointer(mutating: w), 4, UInt16(truncatingIfNeeded: body.count))
            ipv6Walk(whole, next: w.load(fromByteOffset: 6, as: UInt8.self), nextField: 6,
                     offset: IPv6HeaderView.headerLength, hopByHopAllowed: false, cx)
        case let .dropped(overlap):
            if overlap { counters.reassemblyOverlaps &+= 1 } else { counters.reassemblyDrops &+= 1 }
        case .incomplete, .duplicate:
            break
        }
    }

    /// The upper-layer packet `payload` of `packet`.
    @inline(__always)
    func deliver6(proto: UInt8, packet: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ cx: IPv6InputContext) {
        let multicast = cx.dst.isMulticast || cx.linkMulticast
        // :: is a source only for duplicate address detection and MLD (RFC 4862, RFC 3590).
        if cx.src.lo == 0 && cx.src.hi == 0 && proto != IPProtocol.icmpv6 { counters.droppedMartian &+= 1; return }
        switch proto {
        case IPProtocol.tcp:
            guard !multicast else { counters.droppedNotForUs &+= 1; return }
            counters.tcpSegmentsIn &+= 1
            tcp.receive(src: cx.src, dst: cx.dst, segment: payload, checksumVerified: cx.verified,
                        segmentSize: cx.segmentSize, now: now, tx: self)
            tcpMayHaveEvents = true
        case IPProtocol.udp:
            udpInput(src: cx.src, dst: cx.dst, payload: payload, quote: packet, broadcast: multicast,
                     checksumVerified: cx.verified, segmentSize: cx.segmentSize)
        default:
            icmpv6Input(payload, packet: packet, cx)
        }
    }

    /// What the link's offload state means for an IPv6 packet: whether its L4 checksum needs no
    /// verifying (a partial checksum vouches only when it starts right behind the fixed header
    /// at TCP's or UDP's checksum field) and the piece size of a super-frame.
    func linkOffload6(_ ip: IPv6HeaderView, _ o: FrameOffload) -> (usable: Bool, verified: Bool, segmentSize: Int) {
        let proto = ip.nextHeader
        var verified = false
        switch o.checksum {
        case .valid:
            verified = true
        case .partial:
            let field = proto == IPProtocol.tcp ? 16 : proto == IPProtocol.udp ? 6 : -1
            verified = o.checksumStart == EthernetHeaderView.headerLength &+ IPv6HeaderView.headerLength
                && o.checksumOffset == field
        case .unverified:
            break
        }
        switch o.segmentation {
        case .none:
            return (true, verified, 0)
        case .tcp6:
            guard proto == IPProtocol.tcp else { return (false, false, 0) }
        case .udp4:
            guard proto == IPProtocol.udp else { return (false, false, 0) }
        case .tcp4:
            return (false, false, 0)
        }
        counters.superFramesIn &+= 1
        return (true, verified, o.segmentSize)
    }
}

/// What the input knows about a packet while walking it.
struct IPv6InputContext {
    var src: IPAddress
    var dst: IPAddress
    var hopLimit: UInt8
    /// Arrived in a link-layer multicast (or broadcast) frame.
    var linkMulticast: Bool
    var linkSource: MACAddress
    var verified: Bool
    var segmentSize: Int
}
