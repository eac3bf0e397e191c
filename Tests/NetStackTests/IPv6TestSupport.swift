import Testing
@testable import NetStack

let ourIP6 = IPAddress("fd00:1::1")!
let peerIP6 = IPAddress("fd00:1::2")!
let peerLL = IPAddress("fe80::2")!
/// The stack's EUI-64 link-local address for `ourMAC` (02:00:00:00:00:01).
let ourLL = IPAddress("fe80::ff:fe00:1")!

/// A stack with IPv4 `ourIP` and IPv6 `ourIP6`/64; `dad: 0` makes its addresses usable at once.
func makeStack6(mtu: Int = 1500, dad: Int = 0, services: Set<DiagnosticService> = [],
                configure: (inout StackConfig) -> Void = { _ in }) -> (NetStack, FrameRecorder) {
    makeStack(mtu: mtu, services: services) { c in
        c.addresses6 = [IPv6CIDR(address: ourIP6, prefixLength: 64)]
        c.dadTransmits = dad
        configure(&c)
    }
}

enum Build6 {
    static func ipv6(src: IPAddress = peerIP6, dst: IPAddress = ourIP6, next: UInt8, hopLimit: UInt8 = 64,
                     _ payload: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 40 + payload.count)
        b.withUnsafeMutableBytes {
            IPv6HeaderView.emit(into: $0.baseAddress!, source: src, destination: dst, nextHeader: next,
                                payloadLength: payload.count, hopLimit: hopLimit)
        }
        b.replaceSubrange(40..., with: payload)
        return b
    }

    /// An ICMPv6 message with its checksum for `src` -> `dst`.
    static func icmp(type: UInt8, code: UInt8 = 0, rest: UInt32 = 0, _ body: [UInt8], src: IPAddress = peerIP6,
                     dst: IPAddress = ourIP6) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8 + body.count)
        b[0] = type; b[1] = code
        b[4] = UInt8(rest >> 24); b[5] = UInt8(rest >> 16 & 0xFF); b[6] = UInt8(rest >> 8 & 0xFF); b[7] = UInt8(rest & 0xFF)
        b.replaceSubrange(8..., with: body)
        checksum(&b, at: 2, src: src, dst: dst, proto: IPProtocol.icmpv6)
        return b
    }

    static func checksum(_ b: inout [UInt8], at field: Int, src: IPAddress, dst: IPAddress, proto: UInt8) {
        b[field] = 0; b[field + 1] = 0
        let c = b.withUnsafeBytes {
            Checksum.finish(Checksum.partial($0.baseAddress!, count: $0.count,
                                             initial: Checksum.pseudoHeader(src: src, dst: dst, proto: proto, length: $0.count)))
        }
        b[field] = UInt8(c >> 8); b[field + 1] = UInt8(c & 0xFF)
    }

    static func udp(src: IPEndpoint, dst: IPEndpoint, _ payload: [UInt8], zeroChecksum: Bool = false) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8 + payload.count)
        b.replaceSubrange(8..., with: payload)
        b.withUnsafeMutableBytes {
            UDPHeaderView.emit(into: $0.baseAddress!, sourcePort: src.port, destinationPort: dst.port, payloadLength: payload.count)
        }
        if !zeroChecksum { checksum(&b, at: 6, src: src.address, dst: dst.address, proto: IPProtocol.udp) }
        return b
    }

    static func frame(dst: MACAddress = ourMAC, src: MACAddress = peerMAC, _ packet: [UInt8]) -> [UInt8] {
        Build.ethernet(dst: dst, src: src, type: EtherType.ipv6, packet)
    }

    static func echoRequest(_ data: [UInt8], id: UInt16 = 9, seq: UInt16 = 1, src: IPAddress = peerIP6,
                            dst: IPAddress = ourIP6) -> [UInt8] {
        ipv6(src: src, dst: dst, next: IPProtocol.icmpv6,
             icmp(type: ICMPv6Type.echoRequest, rest: UInt32(id) << 16 | UInt32(seq), data, src: src, dst: dst))
    }

    /// NS or NA body (target + optional link-layer option).
    static func nd(type: UInt8, flags: UInt32 = 0, target: IPAddress, mac: MACAddress?, src: IPAddress, dst: IPAddress,
                   hopLimit: UInt8 = 255) -> [UInt8] {
        var body = target.bytes
        if let mac {
            body += [type == ICMPv6Type.neighborSolicitation ? NDPOption.sourceLinkLayerAddress : NDPOption.targetLinkLayerAddress, 1]
            body += [mac.bytes.0, mac.bytes.1, mac.bytes.2, mac.bytes.3, mac.bytes.4, mac.bytes.5]
        }
        return ipv6(src: src, dst: dst, next: IPProtocol.icmpv6, hopLimit: hopLimit,
                    icmp(type: type, rest: flags, body, src: src, dst: dst))
    }

    /// Splits `upper` (the packet after the fixed header, starting with a header named `next`)
    /// into fragments of `size` bytes (a multiple of 8 but the last).
    static func fragments(next: UInt8, _ upper: [UInt8], size: Int, id: UInt32 = 0x1234,
                          src: IPAddress = peerIP6, dst: IPAddress = ourIP6) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var off = 0
        while off < upper.count {
            let n = min(size, upper.count - off)
            let more = off + n < upper.count
            out.append(fragment(next: next, Array(upper[off..<off + n]), offset: off, more: more, id: id, src: src, dst: dst))
            off += n
        }
        return out
    }

    static func fragment(next: UInt8, _ data: [UInt8], offset: Int, more: Bool, id: UInt32 = 0x1234,
                         src: IPAddress = peerIP6, dst: IPAddress = ourIP6) -> [UInt8] {
        var fh = [UInt8](repeating: 0, count: 8)
        fh.withUnsafeMutableBytes {
            IPv6FragmentView.emit(into: $0.baseAddress!, nextHeader: next, offset: offset, more: more, identification: id)
        }
        return ipv6(src: src, dst: dst, next: IPProtocol.fragment, fh + data)
    }
}

/// A parsed IPv6 frame the stack sent.
struct Sent6 {
    var ethDst: MACAddress
    var src: IPAddress, dst: IPAddress
    var next: UInt8, hopLimit: UInt8
    var payload: [UInt8]
    /// ICMPv6 type, when `next` is ICMPv6.
    var icmpType: UInt8? { next == IPProtocol.icmpv6 && !payload.isEmpty ? payload[0] : nil }
}

func parseIP6(_ f: [UInt8]) -> Sent6? {
    f.withUnsafeBytes { raw -> Sent6? in
        guard let eth = try? EthernetHeaderView(raw), eth.etherType == EtherType.ipv6,
              let ip = try? IPv6HeaderView(eth.payload) else { return nil }
        return Sent6(ethDst: eth.destination, src: ip.source, dst: ip.destination, next: ip.nextHeader,
                     hopLimit: ip.hopLimit, payload: Array(ip.payload))
    }
}

extension FrameRecorder {
    /// The IPv6 frames sent since the last `take`.
    func take6() -> [Sent6] { take().compactMap(parseIP6) }
}

extension NetStack {
    /// Teaches the stack the peer's MAC for `ip` (an NS from the peer with its link-layer address).
    func learnPeer6(_ ip: IPAddress = peerIP6, mac: MACAddress = peerMAC, now: Instant = t0) {
        receive(Build6.frame(Build6.nd(type: ICMPv6Type.neighborSolicitation, target: ourIP6, mac: mac, src: ip,
                                       dst: ourIP6.solicitedNode)), now: now)
    }
}

extension [UInt8] {
    /// Big-endian 16/32-bit reads for assertions.
    func u16(_ i: Int) -> UInt16 { UInt16(self[i]) << 8 | UInt16(self[i + 1]) }
    func u32(_ i: Int) -> UInt32 { UInt32(u16(i)) << 16 | UInt32(u16(i + 2)) }
}
