import Testing
@testable import NetStack

/// Urgent data (TCPUrgent.swift): where the peer's urgent byte lies in the received stream, and
/// URG with its pointer on what we send after the app's urgent byte, as Linux does.
@Suite struct TCPUrgentTests {
    /// Sends `payload` from the peer at its next sequence number (URG with `urgent` when given).
    private func peerSends(_ h: Harness, _ payload: [UInt8], urgent: UInt16? = nil) {
        h.inject(flags: urgent == nil ? [.ack, .psh] : [.ack, .psh, .urg], payload: payload,
                 urgentPointer: urgent ?? 0)
        h.peerSeq &+= UInt32(payload.count)
    }

    /// "ab", then "c" with the pointer one past it: the urgent byte is the third; reading moves
    /// the offset towards it and past it the mark is gone.
    @Test func theUrgentByteIsFoundBehindTheDataBeforeIt() {
        let h = Harness()
        let c = h.passiveEstablished()
        peerSends(h, Array("ab".utf8))
        #expect(h.layer.urgentOffset(c) == nil)
        peerSends(h, Array("c".utf8), urgent: 1)
        #expect(h.layer.urgentOffset(c) == 2)
        #expect(h.read(c, max: 2) == Array("ab".utf8))
        #expect(h.layer.urgentOffset(c) == 0)
        #expect(h.read(c, max: 1) == Array("c".utf8))
        #expect(h.layer.urgentOffset(c) == nil)
    }

    /// The pointer may run ahead of the data (Linux learns the mark before the byte comes); a
    /// pointer behind what was read, or one the peer sends again, changes nothing.
    @Test func aPointerAheadCountsAndAReplayedOneDoesNot() {
        let h = Harness()
        let c = h.passiveEstablished()
        peerSends(h, Array("ab".utf8), urgent: 5)   // the byte after 4 more: offset 4
        #expect(h.layer.urgentOffset(c) == 4)
        peerSends(h, Array("cde".utf8), urgent: 2)  // the same byte again ("e")
        #expect(h.layer.urgentOffset(c) == 4)
        #expect(h.read(c).count == 5)
        #expect(h.layer.urgentOffset(c) == nil)
        // A retransmission of the urgent segment after it was read.
        h.inject(seq: h.peerSeq &- 3, flags: [.ack, .psh, .urg], payload: Array("cde".utf8), urgentPointer: 2)
        #expect(h.layer.urgentOffset(c) == nil)
    }

    /// While an urgent byte is pending, in-order data goes through the ring (where the driver
    /// finds the mark), not to the direct receiver; once the app read past it, direct receive
    /// takes the next data again.
    @Test func dataWithAPendingMarkGoesThroughTheRing() {
        let h = Harness()
        let c = h.passiveEstablished()
        var direct: [[UInt8]] = []
        h.layer.directReceiver = { _, b in direct.append(Array(b)); return b.count }
        h.layer.setDirectReceive(c, true)
        peerSends(h, Array("ab".utf8))
        #expect(direct == [Array("ab".utf8)])
        peerSends(h, Array("cd".utf8), urgent: 1)
        #expect(direct.count == 1 && h.layer.urgentOffset(c) == 0)
        #expect(h.read(c) == Array("cd".utf8))
        peerSends(h, Array("e".utf8))   // nobody asked for the mark since: it is found passed
        #expect(direct == [Array("ab".utf8), Array("e".utf8)])
        #expect(h.layer.urgentOffset(c) == nil)
    }

    /// URG outside the states that take data (after the peer's FIN) is ignored.
    @Test func urgentAfterThePeersFinIsIgnored() {
        let h = Harness()
        let c = h.passiveEstablished()
        h.inject(flags: [.ack, .fin])
        h.peerSeq &+= 1
        h.inject(seq: h.peerSeq, flags: [.ack, .urg], urgentPointer: 3)
        #expect(h.layer.urgentOffset(c) == nil)
    }

    /// The app's urgent byte leaves at once with URG and the distance to the byte after it,
    /// Nagle notwithstanding; once it is acknowledged, segments carry no URG.
    @Test func theUrgentByteLeavesWithItsPointerPastNagle() {
        let h = Harness()
        let c = h.passiveEstablished()
        _ = h.write(c, [1, 2])
        h.poll()
        let first = h.sent()
        #expect(first.map(\.payload) == [[1, 2]] && first.allSatisfy { !$0.flags.contains(.urg) })
        h.layer.markUrgent(c, pending: 1)
        _ = h.write(c, [3])
        h.poll()
        let urgent = h.sent()
        #expect(urgent.count == 1, "Nagle held the urgent byte: \(urgent)")
        if let s = urgent.first {
            #expect(s.payload == [3] && s.flags.contains(.urg) && s.urgentPointer == 1)
        }
        // Everything acknowledged: urgent mode is over.
        h.inject(ack: h.peerAck &+ 3, flags: .ack)
        _ = h.write(c, [4])
        h.poll()
        let after = h.sent()
        #expect(after.map(\.payload) == [[4]] && after.allSatisfy { !$0.flags.contains(.urg) })
    }

    /// A pointer further than 65535 bytes reads 0xFFFF, and while in urgent mode data leaves in
    /// MSS-sized segments, each with its own pointer, not as one super-segment the link would
    /// cut (every piece would repeat the first one's pointer).
    @Test func urgentModeSendsPlainSegmentsWithTheirOwnPointers() {
        let h = Harness { $0.sendBufferSize = 256 << 10; $0.initialSendBuffer = 256 << 10 }
        h.tx.maxPayloadBytes = 65535
        h.tx.tsoLimit = 65535
        let c = h.passiveEstablished(options: Harness.peerOptions(mss: 1000, ws: 7))
        h.inject(flags: .ack, window: 2048)   // a window of 256 KiB (scale 7)
        _ = h.sent()
        // Without urgent mode the same connection sends super-segments.
        _ = h.write(c, bytes(5000))
        h.poll()
        #expect(h.sent().contains { $0.payload.count > 1000 })
        h.inject(ack: h.peerAck &+ 5000, flags: .ack, window: 2048)
        _ = h.sent()
        let data = bytes(100_000)
        h.layer.markUrgent(c, pending: data.count)
        #expect(h.write(c, data) == data.count)
        h.poll()
        let segs = h.sent()
        #expect(!segs.isEmpty)
        #expect(segs.allSatisfy { $0.payload.count <= 1000 }, "super-segment in urgent mode")
        let base = h.peerAck &+ 5000
        for s in segs {
            let distance = 100_000 - Int(s.seq &- base)
            #expect(s.flags.contains(.urg) && Int(s.urgentPointer) == min(distance, 0xFFFF), "\(s)")
        }
    }

}
