/// What the kernel does with an offloaded frame before it goes on a wire (its software GSO and
/// checksum help): completes a partial checksum and cuts a super-frame into the plain frames it
/// stands for — TCP segments with their sequence numbers, FIN/PSH on the last piece and CWR on
/// the first only; UDP datagrams with their own lengths; IPv4 identifications counting up (IPv6
/// payload lengths fixed), every checksum complete. For NetSim links to nodes without offloads and for tests that
/// check a super-segment's shape; it allocates, so it is not for the data path.
public enum SoftwareSegmentation {
    /// Calls `body` with each plain frame `frame` with `offload` stands for (`frame` itself
    /// when nothing is offloaded). Nothing for a frame whose headers do not parse.
    public static func segment(_ frame: UnsafeRawBufferPointer, offload: FrameOffload,
                               _ body: (UnsafeRawBufferPointer) -> Void) {
        if offload.segmentation == .none {
            guard offload.checksum == .partial else { body(frame); return }
            var bytes = [UInt8](frame)
            let start = offload.checksumStart, field = start &+ offload.checksumOffset
            guard start >= 0, field >= start, field &+ 2 <= bytes.count else { return }
            bytes.withUnsafeMutableBytes { b in
                let p = b.baseAddress!
                // The field holds the pseudo-header sum: summing over it completes the checksum.
                wireStore16(p, field, Checksum.finish(Checksum.partial(p + start, count: b.count &- start)))
            }
            bytes.withUnsafeBytes(body)
            return
        }
        let eth = EthernetHeaderView.headerLength
        guard frame.count > eth &+ IPv4HeaderView.minHeaderLength, let f = frame.baseAddress else { return }
        // The IP header: IPv4 (options allowed), or IPv6 without extension headers (what the
        // stack builds).
        let isV6 = wireLoad16(f, 12) == EtherType.ipv6
        let ipHeaderLength: Int, ipTotal: Int, id: UInt16
        let src: IPAddress, dst: IPAddress
        if isV6 {
            guard let ip = try? IPv6HeaderView(UnsafeRawBufferPointer(start: f + eth, count: frame.count &- eth)),
                  ip.nextHeader == IPProtocol.tcp || ip.nextHeader == IPProtocol.udp else { return }
            ipHeaderLength = IPv6HeaderView.headerLength
            ipTotal = ip.bytes.count
            src = ip.source; dst = ip.destination
            id = 0
        } else {
            guard let ip = try? IPv4HeaderView(UnsafeRawBufferPointer(start: f + eth, count: frame.count &- eth),
                                               verifyChecksum: false) else { return }
            ipHeaderLength = ip.headerLength
            ipTotal = ip.totalLength
            src = IPAddress(ip.source); dst = IPAddress(ip.destination)
            id = ip.identification
        }
        let l4 = eth &+ ipHeaderLength
        let isTCP = offload.segmentation == .tcp4 || offload.segmentation == .tcp6
        let l4Header: Int
        if isTCP {
            guard let t = try? TCPHeaderView(UnsafeRawBufferPointer(start: f + l4, count: ipTotal &- ipHeaderLength)) else { return }
            l4Header = t.headerLength
        } else {
            l4Header = UDPHeaderView.headerLength
            guard ipTotal >= ipHeaderLength &+ l4Header else { return }
        }
        let headers = l4 &+ l4Header
        let payload = eth &+ ipTotal &- headers
        let size = max(offload.segmentSize, 1)
        var piece = [UInt8](repeating: 0, count: headers &+ min(size, max(payload, 0)))
        var off = 0
        var index: UInt16 = 0
        repeat {
            let n = min(size, payload &- off)
            let last = off &+ n >= payload
            piece.withUnsafeMutableBytes { b in
                let p = b.baseAddress!
                p.copyMemory(from: f, byteCount: headers)
                if n > 0 { (p + headers).copyMemory(from: f + (headers &+ off), byteCount: n) }
                let ipp = p + eth
                if isV6 {
                    wireStore16(ipp, 4, UInt16(truncatingIfNeeded: l4Header &+ n))
                } else {
                    wireStore16(ipp, 2, UInt16(truncatingIfNeeded: ipHeaderLength &+ l4Header &+ n))
                    wireStore16(ipp, 4, id &+ index)
                    wireStore16(ipp, 10, 0)
                    wireStore16(ipp, 10, Checksum.compute(UnsafeRawPointer(ipp), count: ipHeaderLength))
                }
                let t = p + l4
                let length = l4Header &+ n
                var s: UInt64
                if isTCP {
                    wireStore32(t, 4, wireLoad32(t, 4) &+ UInt32(truncatingIfNeeded: off))
                    var flags = t.load(fromByteOffset: 13, as: UInt8.self)
                    if !last { flags &= ~(TCPFlags.fin.rawValue | TCPFlags.psh.rawValue) }
                    if off > 0 { flags &= ~0x80 }   // CWR only on the first piece
                    t.storeBytes(of: flags, toByteOffset: 13, as: UInt8.self)
                    wireStore16(t, 16, 0)
                    s = Checksum.pseudoHeader(src: src, dst: dst, proto: IPProtocol.tcp, length: length)
                } else {
                    wireStore16(t, 4, UInt16(truncatingIfNeeded: length))
                    wireStore16(t, 6, 0)
                    s = Checksum.pseudoHeader(src: src, dst: dst, proto: IPProtocol.udp, length: length)
                }
                var c = Checksum.finish(Checksum.partial(t, count: length, initial: s))
                if !isTCP && c == 0 { c = 0xFFFF }
                wireStore16(t, isTCP ? 16 : 6, c)
                body(UnsafeRawBufferPointer(start: p, count: headers &+ n))
            }
            off &+= n
            index &+= 1
        } while off < payload
    }
}
