import Testing
@testable import NetStack

@Suite struct AckPolicyTests {
    let buffer = 4 << 20

    @Test func quickAcksGoOutOneByOne() {
        var a = AckPolicy(quickAcks: 2)
        #expect(a.dataArrived(1000, receiveBuffer: buffer) == .now)
        #expect(a.immediate)
        a.ackSent()
        #expect(!a.immediate && !a.pending && a.unackedBytes == 0)
        #expect(a.dataArrived(1000, receiveBuffer: buffer) == .now)
        a.ackSent()
        // Quick acks used up: a lone small segment waits for the delayed-ACK timer.
        #expect(a.dataArrived(100, receiveBuffer: buffer) == .delayed)
        #expect(!a.immediate && a.pending)
    }

    /// A super-segment (64 KiB of 1448-byte pieces) teaches the piece size, not its own, and
    /// is acknowledged at the poll like the 45 segments it stands for.
    @Test func superSegmentsCountAsTheirPieces() {
        var a = AckPolicy(quickAcks: 0)
        #expect(a.dataArrived(45 * 1448, receiveBuffer: buffer, segmentSize: 1448) == .atPoll)
        #expect(a.mssEstimate == 1448)
        // A window update is due after one piece's worth, not a super-segment's.
        #expect(a.windowUpdateNeeded(advertised: 2000, space: 4000, receiveBuffer: buffer))
        // Without the hint the estimate would be the whole super-segment.
        var b = AckPolicy(quickAcks: 0)
        _ = b.dataArrived(45 * 1448, receiveBuffer: buffer)
        #expect(b.mssEstimate == 45 * 1448)
    }

    @Test func twoFullSegmentsAreAcknowledgedAtThePoll() {
        var a = AckPolicy(quickAcks: 0)
        #expect(a.dataArrived(1448, receiveBuffer: buffer) == .delayed)
        #expect(a.mssEstimate == 1448)
        #expect(a.dataArrived(1448, receiveBuffer: buffer) == .atPoll)
        // Only the first request makes the layer visit the connection.
        #expect(a.dataArrived(1448, receiveBuffer: buffer) == .scheduled)
        #expect(!a.immediate)
        a.pollReached()
        #expect(a.immediate)
        a.ackSent()
        a.pollReached()
        #expect(!a.immediate)
    }

    @Test func stretchLimitForcesAnImmediateAck() {
        var a = AckPolicy(quickAcks: 0)
        // 4 MiB buffer: the limit is min(64 KiB, buffer/8) = 64 KiB.
        #expect(a.stretchLimit(receiveBuffer: buffer) == 64 << 10)
        var d = AckPolicy.Decision.delayed
        var total = 0
        while total < 64 << 10 {
            d = a.dataArrived(1448, receiveBuffer: buffer)
            total += 1448
        }
        #expect(d == .now)
        #expect(a.immediate)
        // A small buffer: never less than two segments.
        let b = AckPolicy(quickAcks: 0)
        #expect(b.stretchLimit(receiveBuffer: 4096) == 2 * 536)
    }

    @Test func delayedAckTimerOnlyAcksWhatIsPending() {
        var a = AckPolicy(quickAcks: 0)
        a.delayedAckExpired()
        #expect(!a.immediate)
        _ = a.dataArrived(10, receiveBuffer: buffer)
        a.delayedAckExpired()
        #expect(a.immediate)
    }

    @Test func windowUpdateFollowsReceiverSWSAvoidance() {
        let a = AckPolicy(quickAcks: 0)   // MSS estimate 536
        // Grows by less than min(MSS, buffer/2): no update.
        #expect(!a.windowUpdateNeeded(advertised: 0, space: 500, receiveBuffer: 65536))
        // Grows by a segment from a closed window: update.
        #expect(a.windowUpdateNeeded(advertised: 0, space: 536, receiveBuffer: 65536))
        // Grows by a segment but does not double: no update.
        #expect(!a.windowUpdateNeeded(advertised: 10_000, space: 12_000, receiveBuffer: 65536))
        #expect(a.windowUpdateNeeded(advertised: 10_000, space: 20_000, receiveBuffer: 65536))
        // A tiny buffer: half of it is enough of a step.
        #expect(a.windowUpdateNeeded(advertised: 0, space: 300, receiveBuffer: 600))
        // A negative advertised window (edge behind RCV.NXT) counts as closed.
        #expect(a.windowUpdateNeeded(advertised: -5, space: 1000, receiveBuffer: 65536))
    }
}
