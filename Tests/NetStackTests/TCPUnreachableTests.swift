import Testing
@testable import NetStack

/// A connect that cannot succeed fails fast with the errno Linux gives: ARP giving up on the
/// next hop (EHOSTUNREACH) and ICMP destination unreachable quoting our SYN.
@Suite struct TCPUnreachableTests {
    private func synFrame(_ rec: FrameRecorder) -> [UInt8]? {
        rec.take().first { f in parseIP(f).map { $0.proto == IPProtocol.tcp } ?? false }
    }

    private func unreachable(code: UInt8, quoting frame: [UInt8], seqDelta: UInt32 = 0) -> [UInt8] {
        var quote = Array(frame[14..<(14 + 28)])   // IPv4 header (20) + ports and sequence number
        if seqDelta != 0 {
            let seq = (UInt32(quote[24]) << 24 | UInt32(quote[25]) << 16 | UInt32(quote[26]) << 8 | UInt32(quote[27])) &+ seqDelta
            quote[24] = UInt8(seq >> 24); quote[25] = UInt8(truncatingIfNeeded: seq >> 16)
            quote[26] = UInt8(truncatingIfNeeded: seq >> 8); quote[27] = UInt8(truncatingIfNeeded: seq)
        }
        return Build.ethernet(type: EtherType.ipv4,
                              Build.ipv4(proto: IPProtocol.icmp, Build.icmp(type: ICMPv4Type.destinationUnreachable, code: code, quote)))
    }

    @Test func arpFailureFailsTheConnectWithHostUnreachable() throws {
        let (s, _) = makeStack()
        let h = try s.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(peerIP, 80), now: t0)
        var now = t0
        var failed: SocketError?
        var deadline = s.poll(now: now)
        while failed == nil, let d = deadline, d < t0 + .seconds(10) {
            now = d
            deadline = s.poll(now: now)
            for case let .failed(fh, e) in s.collectEvents() where fh == h { failed = e }
        }
        #expect(failed == .hostUnreachable)
        #expect(now == t0 + .seconds(3))   // three ARP tries, one second apart
    }

    @Test(arguments: [(UInt8(3), SocketError.connectionRefused), (2, .connectionRefused), (1, .hostUnreachable),
                      (0, .networkUnreachable), (10, .hostUnreachable)])
    func icmpUnreachableFailsTheConnect(code: UInt8, expected: SocketError) throws {
        let (s, rec) = makeStack()
        s.learnPeer()
        _ = rec.take()
        let h = try s.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(peerIP, 80), now: t0)
        _ = s.poll(now: t0)
        let syn = try #require(synFrame(rec))
        _ = s.collectEvents()
        s.receive(unreachable(code: code, quoting: syn))
        let events = s.collectEvents()
        #expect(events.contains { if case let .failed(fh, e) = $0 { fh == h && e == expected } else { false } })
    }

    @Test func icmpWithAnotherSequenceNumberOrFragNeededIsIgnored() throws {
        let (s, rec) = makeStack()
        s.learnPeer()
        _ = rec.take()
        let h = try s.tcpConnect(local: IPEndpoint(.any, 0), remote: IPEndpoint(peerIP, 80), now: t0)
        _ = s.poll(now: t0)
        let syn = try #require(synFrame(rec))
        _ = s.collectEvents()
        s.receive(unreachable(code: 3, quoting: syn, seqDelta: 12345))   // blind attack: wrong seq
        s.receive(unreachable(code: 4, quoting: syn))                     // fragmentation needed
        #expect(s.collectEvents().isEmpty)
        #expect(s.tcp.info(h)?.state == .synSent)
    }
}

/// ICMP errors for UDP: like Linux without IP_RECVERR, only a connected socket hears of them.
@Suite struct UDPUnreachableTests {
    private func sendOne(_ s: NetStack, _ rec: FrameRecorder, _ h: SocketHandle) throws -> [UInt8] {
        try ([1, 2, 3] as [UInt8]).withUnsafeBytes { try s.udpSend(h, to: IPEndpoint(peerIP, 53), $0, now: t0) }
        return try #require(rec.take().first { parseIP($0)?.proto == IPProtocol.udp })
    }

    private func portUnreachable(quoting frame: [UInt8]) -> [UInt8] {
        Build.ethernet(type: EtherType.ipv4, Build.ipv4(proto: IPProtocol.icmp,
            Build.icmp(type: ICMPv4Type.destinationUnreachable, code: 3, Array(frame[14..<(14 + 28)]))))
    }

    @Test func connectedSocketGetsConnectionRefusedOnce() throws {
        let (s, rec) = makeStack()
        s.learnPeer()
        _ = rec.take()
        let h = try s.udpOpen(local: IPEndpoint(.any, 0))
        try s.udpConnect(h, remote: IPEndpoint(peerIP, 53))
        let sent = try sendOne(s, rec, h)
        _ = s.collectEvents()
        s.receive(portUnreachable(quoting: sent))
        #expect(s.collectEvents().contains { if case .readable(let r) = $0 { r == h } else { false } })
        #expect(s.udpTakeError(h) == .connectionRefused)
        #expect(s.udpTakeError(h) == nil)
    }

    @Test func unconnectedSocketIsNotTold() throws {
        let (s, rec) = makeStack()
        s.learnPeer()
        _ = rec.take()
        let h = try s.udpOpen(local: IPEndpoint(.any, 0))
        let sent = try sendOne(s, rec, h)
        _ = s.collectEvents()
        s.receive(portUnreachable(quoting: sent))
        #expect(s.collectEvents().isEmpty)
        #expect(s.udpTakeError(h) == nil)
    }
}
