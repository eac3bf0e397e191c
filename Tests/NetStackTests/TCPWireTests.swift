import Testing
@testable import NetStack

@Suite struct TCPWireTests {
    let a = IPv4Endpoint(IPv4Address(10, 0, 0, 1), 1234)
    let b = IPv4Endpoint(IPv4Address(10, 0, 0, 2), 80)

    @Test func seqNumberWrapsAndCompares() {
        let x = SeqNumber(0xFFFF_FFF0)
        let y = x + 0x20
        #expect(y.rawValue == 0x10)
        #expect(x < y)
        #expect(!(y < x))
        #expect(y - x == 0x20)
        #expect(x - y == -0x20)
        #expect(SeqNumber.max(x, y) == y)
    }

    @Test func roundTripWithAllOptions() throws {
        var o = TCPSegmentOptions()
        o.maxSegmentSize = 1460
        o.windowScale = 7
        o.sackPermitted = true
        o.timestamp = (0x1122_3344, 0x5566_7788)
        let bytes = buildSegment(from: a, to: b, seq: 0xDEAD_BEEF, ack: 0x0102_0304, flags: [.syn, .ack],
                                 window: 29200, options: o, payload: [1, 2, 3])
        try bytes.withUnsafeBytes { raw in
            let v = try TCPHeaderView(raw)
            #expect(v.sourcePort == 1234)
            #expect(v.destinationPort == 80)
            #expect(v.sequenceNumber == SeqNumber(0xDEAD_BEEF))
            #expect(v.ackNumber == SeqNumber(0x0102_0304))
            #expect(v.flags == [.syn, .ack])
            #expect(v.window == 29200)
            #expect(v.headerLength == 20 + 20)
            #expect(Array(v.payload) == [1, 2, 3])
            #expect(v.segmentLength == 4)
            #expect(v.checksumValid(source: a.address, destination: b.address))
            #expect(!v.checksumValid(source: a.address, destination: IPv4Address(10, 0, 0, 3)))
            let repr = TCPHeaderRepr(v)
            #expect(repr.options == o)
            #expect(repr.headerLength == v.headerLength)
        }
    }

    @Test func sackBlocksRoundTrip() throws {
        var o = TCPSegmentOptions()
        o.timestamp = (1, 2)
        o.sackBlocks.append(start: SeqNumber(100), end: SeqNumber(200))
        o.sackBlocks.append(start: SeqNumber(300), end: SeqNumber(400))
        o.sackBlocks.append(start: SeqNumber(0xFFFF_FF00), end: SeqNumber(10))
        #expect(o.encodedLength == 12 + 4 + 24)
        let bytes = buildSegment(from: a, to: b, seq: 1, ack: 2, flags: .ack, options: o)
        try bytes.withUnsafeBytes { raw in
            let v = try TCPHeaderView(raw)
            let p = TCPSegmentOptions(parsing: v.optionsArea)
            #expect(p.sackBlocks.count == 3)
            #expect(p.sackBlocks[2].start == SeqNumber(0xFFFF_FF00))
            #expect(p == o)
        }
    }

    /// Regression (issue 12 review): options never exceed the 40 bytes a header holds. Four SACK
    /// blocks beside timestamps (48 bytes) are cut to the three that fit, the first kept.
    @Test func optionsAreCappedAtFortyBytes() throws {
        var o = TCPSegmentOptions()
        o.timestamp = (1, 2)
        for i in 0..<4 { o.sackBlocks.append(start: SeqNumber(UInt32(i * 100)), end: SeqNumber(UInt32(i * 100 + 50))) }
        #expect(o.encodedLength == TCPSegmentOptions.maxLength)
        var space = [UInt8](repeating: 0xEE, count: 64)
        let written = space.withUnsafeMutableBytes { o.emit(into: $0.baseAddress!) }
        #expect(written == 40)
        #expect(space[40] == 0xEE)
        let bytes = buildSegment(from: a, to: b, seq: 1, ack: 2, flags: .ack, options: o)
        try bytes.withUnsafeBytes { raw in
            let v = try TCPHeaderView(raw)
            #expect(v.headerLength == 60)
            let p = TCPSegmentOptions(parsing: v.optionsArea)
            #expect(p.sackBlocks.count == 3)
            #expect(p.sackBlocks[0].start == SeqNumber(0) && p.sackBlocks[2].start == SeqNumber(200))
        }
        // Without timestamps all four fit (36 bytes); with MSS + WS + TS + SACK-perm (a SYN)
        // nothing is cut either.
        var plain = TCPSegmentOptions()
        for i in 0..<4 { plain.sackBlocks.append(start: SeqNumber(UInt32(i * 100)), end: SeqNumber(UInt32(i * 100 + 50))) }
        #expect(plain.encodedLength == 36)
    }

    @Test func truncatedHeaderIsRejected() {
        let bytes = buildSegment(from: a, to: b, seq: 1, flags: .syn)
        for n in 0..<20 {
            _ = bytes.withUnsafeBytes { raw in
                #expect(throws: WireError.truncated(needed: 20, available: n)) {
                    _ = try TCPHeaderView(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
                }
            }
        }
    }

    @Test func dataOffsetOutOfRangeIsRejected() {
        var bytes = buildSegment(from: a, to: b, seq: 1, flags: .syn)
        for off in [0, 4] {   // < 5 words
            bytes[12] = UInt8(off << 4)
            _ = bytes.withUnsafeBytes { raw in
                #expect(throws: WireError.badHeaderLength(off * 4)) {
                    _ = try TCPHeaderView(raw)
                }
            }
        }
        bytes[12] = 6 << 4   // 24 bytes claimed, 20 present
        _ = bytes.withUnsafeBytes { raw in
            #expect(throws: WireError.badHeaderLength(24)) { _ = try TCPHeaderView(raw) }
        }
        bytes[12] = 15 << 4
        _ = bytes.withUnsafeBytes { raw in
            #expect(throws: WireError.badHeaderLength(60)) { _ = try TCPHeaderView(raw) }
        }
    }

    /// Runs the option iterator over raw option bytes and returns what it produced.
    func parse(_ opts: [UInt8]) -> (options: [TCPHeaderOption], error: WireError?) {
        opts.withUnsafeBytes { raw in
            var it = TCPOptionIterator(raw)
            var out: [TCPHeaderOption] = []
            do {
                while let o = try it.next() { out.append(o) }
                return (out, nil)
            } catch let e as WireError {
                return (out, e)
            } catch {
                return (out, nil)
            }
        }
    }

    @Test func evilOptionLengths() {
        // Length 0 and 1 cannot frame an option.
        #expect(parse([2, 0, 5, 0]).error == .badOption(kind: 2, offset: 0))
        #expect(parse([1, 8, 1, 0]).error == .badOption(kind: 8, offset: 1))
        // Runs past the end of the header.
        #expect(parse([1, 1, 8, 10, 0, 0]).error == .badOption(kind: 8, offset: 2))
        // Kind byte at the very end without a length byte.
        #expect(parse([1, 1, 1, 2]).error == .badOption(kind: 2, offset: 3))
        // MSS with the wrong length.
        #expect(parse([2, 3, 5, 1]).error == .badOption(kind: 2, offset: 0))
        #expect(parse([2, 6, 5, 180, 0, 0]).error == .badOption(kind: 2, offset: 0))
        // SACK with bad lengths (not 2 + 8n, or no block).
        #expect(parse([5, 2]).error == .badOption(kind: 5, offset: 0))
        #expect(parse([5, 7, 0, 0, 0, 0, 0]).error == .badOption(kind: 5, offset: 0))
        // Timestamps with the wrong length.
        #expect(parse([8, 6, 0, 0, 0, 0]).error == .badOption(kind: 8, offset: 0))
        // Unknown options are skipped by their length; EOL ends the list.
        let r = parse([30, 4, 9, 9, 2, 4, 5, 180, 0, 2, 0])
        #expect(r.error == nil)
        #expect(r.options == [.unknown(kind: 30, length: 4), .maxSegmentSize(1460)])
    }

    @Test func windowScaleIsClampedTo14() {
        #expect(parse([3, 3, 15]).options == [.windowScale(14)])
        #expect(parse([3, 3, 255]).options == [.windowScale(14)])
        #expect(parse([3, 3, 9]).options == [.windowScale(9)])
    }

    @Test func lenientSummaryKeepsOptionsBeforeMalformedOne() {
        let opts: [UInt8] = [2, 4, 5, 180, 4, 2, 3, 1, 1, 1]   // MSS, SACK-perm, then WS with len 1
        opts.withUnsafeBytes { raw in
            let s = TCPSegmentOptions(parsing: raw)
            #expect(s.maxSegmentSize == 1460)
            #expect(s.sackPermitted)
            #expect(s.windowScale == nil)
            #expect(s.malformed)
        }
    }

    @Test func optionsInsideHeaderOnly() throws {
        // An option claiming to run into the payload must not be read from it.
        var bytes = buildSegment(from: a, to: b, seq: 1, flags: .ack, payload: [8, 10, 1, 2, 3, 4, 5, 6, 7, 8])
        // Grow the header by 4 bytes of options: [1, 1, 8, 10] where 8/10 would need 8 more bytes.
        bytes.insert(contentsOf: [1, 1, 8, 10], at: 20)
        bytes[12] = 6 << 4
        try bytes.withUnsafeBytes { raw in
            let v = try TCPHeaderView(raw)
            #expect(v.optionsArea.count == 4)
            var it = v.options
            #expect(throws: WireError.badOption(kind: 8, offset: 2)) { _ = try it.next() }
            #expect(v.payload.count == 10)
        }
    }
}
