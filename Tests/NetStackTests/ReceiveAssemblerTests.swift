import Testing
@testable import NetStack

@Suite struct ReceiveAssemblerTests {
    func s(_ v: UInt32) -> SeqNumber { SeqNumber(v) }
    func ranges(_ a: ReceiveAssembler) -> [[UInt32]] { a.ranges.map { [$0.start.rawValue, $0.end.rawValue] } }
    func blocks(_ b: TCPSackBlocks) -> [[UInt32]] { (0..<b.count).map { [b[$0].start.rawValue, b[$0].end.rawValue] } }

    @Test func disjointRangesStaySorted() {
        var a = ReceiveAssembler(capacity: 8)
        #expect(a.add(s(300), s(400)) == true)
        #expect(a.add(s(100), s(200)) == true)
        #expect(a.add(s(500), s(600)) == true)
        #expect(ranges(a) == [[100, 200], [300, 400], [500, 600]])
        #expect(a.latest == s(500))
    }

    @Test func overlappingAndTouchingRangesMerge() {
        var a = ReceiveAssembler(capacity: 8)
        a.add(s(100), s(200))
        a.add(s(300), s(400))
        a.add(s(500), s(600))
        a.add(s(200), s(300))        // touches both neighbours: one range
        #expect(ranges(a) == [[100, 400], [500, 600]])
        a.add(s(50), s(700))         // swallows everything
        #expect(ranges(a) == [[50, 700]])
        a.add(s(60), s(70))          // inside: nothing changes but the latest arrival
        #expect(ranges(a) == [[50, 700]])
        #expect(a.latest == s(60))
    }

    @Test func fullListRefusesANewHoleButStillMerges() {
        var a = ReceiveAssembler(capacity: 2)
        #expect(a.add(s(100), s(200)) == true)
        #expect(a.add(s(300), s(400)) == true)
        #expect(a.add(s(500), s(600)) == false)
        #expect(a.latest == s(300))
        #expect(a.add(s(400), s(450)) == true)   // extends an existing range: fine
        #expect(ranges(a) == [[100, 200], [300, 450]])
    }

    @Test func advanceTakesWhatBecameContiguous() {
        var a = ReceiveAssembler(capacity: 8)
        a.add(s(200), s(300))
        a.add(s(400), s(500))
        #expect(a.advance(from: s(150)) == s(150))   // still a hole before 200
        #expect(a.count == 2)
        #expect(a.advance(from: s(200)) == s(300))
        #expect(ranges(a) == [[400, 500]])
        // In-order data that overtook a range entirely drops it without moving backwards.
        #expect(a.advance(from: s(550)) == s(550))
        #expect(a.isEmpty)
    }

    @Test func worksAcrossSequenceWrap() {
        var a = ReceiveAssembler(capacity: 4)
        a.add(s(UInt32.max - 99), s(UInt32.max &- 49))
        a.add(s(10), s(20))
        #expect(a.count == 2)
        #expect(a.ranges[0].start == s(UInt32.max - 99))
        #expect(a.advance(from: s(UInt32.max - 99)) == s(UInt32.max &- 49))
        #expect(ranges(a) == [[10, 20]])
    }

    @Test func firstSackBlockIsTheLatestArrival() {
        var a = ReceiveAssembler(capacity: 8)
        a.add(s(500), s(600))
        a.add(s(100), s(200))
        a.add(s(300), s(400))
        a.add(s(700), s(800))
        a.add(s(350), s(400))   // latest arrival: inside [300, 400)
        // RFC 2018 §4: the block holding the latest segment first, then the others (highest first).
        #expect(blocks(a.sackBlocks(max: 4)) == [[300, 400], [700, 800], [500, 600], [100, 200]])
        // With timestamps only three fit.
        #expect(blocks(a.sackBlocks(max: 3)) == [[300, 400], [700, 800], [500, 600]])
        #expect(a.blockCount(max: 3) == 3)
        #expect(a.blockCount(max: 4) == 4)
    }

    @Test func noBlocksWhenNothingIsOutOfOrder() {
        var a = ReceiveAssembler(capacity: 8)
        #expect(a.sackBlocks(max: 4).count == 0)
        #expect(a.blockCount(max: 4) == 0)
        a.add(s(100), s(200))
        a.releaseStorage()
        #expect(a.isEmpty)
        #expect(a.sackBlocks(max: 4).count == 0)
    }
}
