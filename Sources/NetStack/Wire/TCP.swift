/// TCP wire format (RFC 9293 §3.1) with the options we speak: MSS, window scale and timestamps
/// (RFC 7323), SACK-permitted and SACK (RFC 2018).
///
/// `TCPHeaderView` is a non-owning view over a received segment: its checked initialiser
/// validates the data offset, after which no getter can trap. Options are read with
/// `TCPOptionIterator`, which never reads past the header, whatever the bytes say.
/// `TCPHeaderRepr` is the parsed/emittable form used when building outgoing segments straight into
/// a frame buffer. The checksum is not verified here (see `checksumValid`): the caller decides
/// when to pay for it.

/// The control bits (byte 13 of the header).
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40)
    public static let cwr = TCPFlags(rawValue: 0x80)
    public var description: String {
        let names: [(TCPFlags, String)] = [(.syn, "S"), (.fin, "F"), (.rst, "R"), (.psh, "P"), (.ack, ".")]
        let s = names.filter { contains($0.0) }.map(\.1).joined()
        return s.isEmpty ? "none" : s
    }
}

/// Up to four SACK blocks (RFC 2018 §3) stored inline, so parsing and emitting never allocates.
public struct TCPSackBlocks: Hashable, Sendable {
    public static let capacity = 4
    public private(set) var count = 0
    @usableFromInline var s0 = (UInt32(0), UInt32(0)), s1 = (UInt32(0), UInt32(0))
    @usableFromInline var s2 = (UInt32(0), UInt32(0)), s3 = (UInt32(0), UInt32(0))
    public init() {}

    /// Adds a block [start, end); ignored when full.
    public mutating func append(start: SeqNumber, end: SeqNumber) {
        let v = (start.rawValue, end.rawValue)
        switch count {
        case 0: s0 = v
        case 1: s1 = v
        case 2: s2 = v
        case 3: s3 = v
        default: return
        }
        count &+= 1
    }
    public subscript(i: Int) -> (start: SeqNumber, end: SeqNumber) {
        precondition(i >= 0 && i < count, "SACK block index \(i) out of range 0..<\(count)")
        let v: (UInt32, UInt32)
        switch i {
        case 0: v = s0
        case 1: v = s1
        case 2: v = s2
        default: v = s3
        }
        return (SeqNumber(v.0), SeqNumber(v.1))
    }
    public static func == (a: TCPSackBlocks, b: TCPSackBlocks) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i] != b[i] { return false }
        return true
    }
    public func hash(into h: inout Hasher) {
        h.combine(count)
        for i in 0..<count { h.combine(self[i].start); h.combine(self[i].end) }
    }
}

/// One option as read by `TCPOptionIterator`.
public enum TCPHeaderOption: Hashable, Sendable {
    case maxSegmentSize(UInt16)
    /// Shift count as sent; values above 14 are clamped to 14 (RFC 7323 §2.3).
    case windowScale(UInt8)
    case sackPermitted
    case sack(TCPSackBlocks)
    case timestamps(value: UInt32, echoReply: UInt32)
    /// An option we do not interpret, skipped by its length.
    case unknown(kind: UInt8, length: Int)
}

/// Walks the options area of a header. Stops at End-of-Option-List or at the end of the area;
/// a malformed option throws and ends the iteration (the remaining bytes cannot be framed).
public struct TCPOptionIterator {
    @usableFromInline let area: UnsafeRawBufferPointer
    @usableFromInline var offset = 0
    @usableFromInline var done = false
    @inlinable public init(_ area: UnsafeRawBufferPointer) { self.area = area }

    public mutating func next() throws(WireError) -> TCPHeaderOption? {
        while !done, offset < area.count {
            let kind = area[offset]
            if kind == 0 { done = true; return nil }        // End of option list
            if kind == 1 { offset &+= 1; continue }         // NOP
            guard offset &+ 1 < area.count else { done = true; throw .badOption(kind: kind, offset: offset) }
            let len = Int(area[offset &+ 1])
            guard len >= 2, offset &+ len <= area.count else {
                done = true
                throw .badOption(kind: kind, offset: offset)
            }
            let at = offset
            offset &+= len
            let p = area.baseAddress.unsafelyUnwrapped + at
            switch kind {
            case 2:
                guard len == 4 else { done = true; throw .badOption(kind: kind, offset: at) }
                return .maxSegmentSize(wireLoad16(p, 2))
            case 3:
                guard len == 3 else { done = true; throw .badOption(kind: kind, offset: at) }
                return .windowScale(Swift.min(p.load(fromByteOffset: 2, as: UInt8.self), 14))
            case 4:
                guard len == 2 else { done = true; throw .badOption(kind: kind, offset: at) }
                return .sackPermitted
            case 5:
                guard (len &- 2) % 8 == 0, len >= 10 else { done = true; throw .badOption(kind: kind, offset: at) }
                var blocks = TCPSackBlocks()
                var i = 2
                while i &+ 8 <= len, blocks.count < TCPSackBlocks.capacity {
                    blocks.append(start: SeqNumber(wireLoad32(p, i)), end: SeqNumber(wireLoad32(p, i &+ 4)))
                    i &+= 8
                }
                return .sack(blocks)
            case 8:
                guard len == 10 else { done = true; throw .badOption(kind: kind, offset: at) }
                return .timestamps(value: wireLoad32(p, 2), echoReply: wireLoad32(p, 6))
            default:
                return .unknown(kind: kind, length: len)
            }
        }
        return nil
    }
}

/// The options of one segment, summarised. Parsing is lenient like common stacks: a malformed
/// option ends parsing but keeps what was read before it.
public struct TCPSegmentOptions: Hashable, Sendable {
    public var maxSegmentSize: UInt16?
    public var windowScale: UInt8?
    public var sackPermitted = false
    public var timestamp: (value: UInt32, echoReply: UInt32)? {
        get { hasTimestamp ? (tsVal, tsEcr) : nil }
        set {
            if let v = newValue { hasTimestamp = true; tsVal = v.value; tsEcr = v.echoReply } else { hasTimestamp = false }
        }
    }
    public var sackBlocks = TCPSackBlocks()
    /// Set when parsing met a malformed option.
    public var malformed = false
    @usableFromInline var hasTimestamp = false
    @usableFromInline var tsVal: UInt32 = 0
    @usableFromInline var tsEcr: UInt32 = 0
    public init() {}

    public init(parsing area: UnsafeRawBufferPointer) {
        var it = TCPOptionIterator(area)
        do {
            while let o = try it.next() {
                switch o {
                case .maxSegmentSize(let m): maxSegmentSize = m
                case .windowScale(let s): windowScale = s
                case .sackPermitted: sackPermitted = true
                case .sack(let b): sackBlocks = b
                case .timestamps(let v, let e): hasTimestamp = true; tsVal = v; tsEcr = e
                case .unknown: break
                }
            }
        } catch {
            malformed = true
        }
    }

    /// Bytes these options take on the wire, padded to a multiple of 4 (layout of `emit`).
    @inlinable public var encodedLength: Int {
        let n = fixedLength
        let k = sackBlocksFitting(after: n)
        return k > 0 ? n &+ 4 &+ 8 &* k : n
    }

    /// The most option bytes a TCP header holds (data offset 15 words minus the 20-byte header).
    public static let maxLength = 40

    /// Bytes of every option but SACK blocks.
    @inlinable var fixedLength: Int {
        var n = 0
        if maxSegmentSize != nil { n &+= 4 }
        if hasTimestamp || sackPermitted { n &+= hasTimestamp ? 12 : 4 }   // SACK-perm rides in TS padding
        if windowScale != nil { n &+= 4 }
        return n
    }

    /// SACK blocks that fit in what `used` bytes leave of the 40 (RFC 2018: 3 beside timestamps):
    /// the first ones, the most recent, are kept.
    @inlinable func sackBlocksFitting(after used: Int) -> Int {
        let room = Self.maxLength &- used &- 4
        return room < 8 ? 0 : min(sackBlocks.count, room / 8)
    }

    /// Writes the options at `p` (exactly `encodedLength` bytes, NOP-padded, 4-byte aligned).
    @inlinable public func emit(into p: UnsafeMutableRawPointer) -> Int {
        var o = 0
        @inline(__always) func b(_ v: UInt8) { p.storeBytes(of: v, toByteOffset: o, as: UInt8.self); o &+= 1 }
        if let m = maxSegmentSize { b(2); b(4); wireStore16(p, o, m); o &+= 2 }
        if hasTimestamp {
            if sackPermitted { b(4); b(2) } else { b(1); b(1) }
            b(8); b(10); wireStore32(p, o, tsVal); wireStore32(p, o &+ 4, tsEcr); o &+= 8
        } else if sackPermitted {
            b(1); b(1); b(4); b(2)
        }
        if let s = windowScale { b(1); b(3); b(3); b(s) }
        let k = sackBlocksFitting(after: o)
        if k > 0 {
            b(1); b(1); b(5); b(UInt8(truncatingIfNeeded: 2 &+ 8 &* k))
            for i in 0..<k {
                let blk = sackBlocks[i]
                wireStore32(p, o, blk.start.rawValue); wireStore32(p, o &+ 4, blk.end.rawValue); o &+= 8
            }
        }
        return o
    }

    public static func == (a: TCPSegmentOptions, b: TCPSegmentOptions) -> Bool {
        a.maxSegmentSize == b.maxSegmentSize && a.windowScale == b.windowScale && a.sackPermitted == b.sackPermitted
            && a.hasTimestamp == b.hasTimestamp && (!a.hasTimestamp || (a.tsVal == b.tsVal && a.tsEcr == b.tsEcr))
            && a.sackBlocks == b.sackBlocks && a.malformed == b.malformed
    }
    public func hash(into h: inout Hasher) {
        h.combine(maxSegmentSize); h.combine(windowScale); h.combine(sackPermitted); h.combine(hasTimestamp)
        h.combine(tsVal); h.combine(tsEcr); h.combine(sackBlocks)
    }
}

/// A non-owning view of a TCP segment (header, options, payload).
public struct TCPHeaderView {
    public static let minimumHeaderLength = 20
    public let bytes: UnsafeRawBufferPointer
    /// Data offset in bytes (20...60), validated against the buffer.
    public let headerLength: Int

    @inlinable public init(_ buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= Self.minimumHeaderLength, let p = buffer.baseAddress else {
            throw .truncated(needed: Self.minimumHeaderLength, available: buffer.count)
        }
        let hl = Int(p.load(fromByteOffset: 12, as: UInt8.self) >> 4) &* 4
        guard hl >= Self.minimumHeaderLength, hl <= buffer.count else {
            throw .badHeaderLength(hl)
        }
        bytes = buffer
        headerLength = hl
    }

    @inlinable var base: UnsafeRawPointer { bytes.baseAddress.unsafelyUnwrapped }
    @inlinable public var sourcePort: UInt16 { wireLoad16(base, 0) }
    @inlinable public var destinationPort: UInt16 { wireLoad16(base, 2) }
    @inlinable public var sequenceNumber: SeqNumber { SeqNumber(wireLoad32(base, 4)) }
    @inlinable public var ackNumber: SeqNumber { SeqNumber(wireLoad32(base, 8)) }
    @inlinable public var flags: TCPFlags { TCPFlags(rawValue: base.load(fromByteOffset: 13, as: UInt8.self)) }
    @inlinable public var window: UInt16 { wireLoad16(base, 14) }
    @inlinable public var checksum: UInt16 { wireLoad16(base, 16) }
    @inlinable public var urgentPointer: UInt16 { wireLoad16(base, 18) }
    @inlinable public var optionsArea: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + Self.minimumHeaderLength, count: headerLength &- Self.minimumHeaderLength)
    }
    @inlinable public var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + headerLength, count: bytes.count &- headerLength)
    }
    @inlinable public var options: TCPOptionIterator { TCPOptionIterator(optionsArea) }
    /// Sequence space the segment occupies: payload plus one each for SYN and FIN.
    @inlinable public var segmentLength: Int {
        let f = flags
        return bytes.count &- headerLength &+ (f.contains(.syn) ? 1 : 0) &+ (f.contains(.fin) ? 1 : 0)
    }

    /// True if the checksum verifies over the pseudo-header and the whole segment.
    @inlinable public func checksumValid(source: IPv4Address, destination: IPv4Address) -> Bool {
        let s = Checksum.pseudoHeader(src: source, dst: destination, proto: IPProtocol.tcp, length: bytes.count)
        return Checksum.finish(Checksum.partial(base, count: bytes.count, initial: s)) == 0
    }
}

/// The fields of a header to emit. `emit` writes the header and options; the checksum is filled
/// by `TCPHeaderRepr.fillChecksum` once the payload is in place.
public struct TCPHeaderRepr: Hashable, Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequenceNumber: SeqNumber
    public var ackNumber: SeqNumber
    public var flags: TCPFlags
    public var window: UInt16
    public var urgentPointer: UInt16 = 0
    public var options = TCPSegmentOptions()

    public init(sourcePort: UInt16, destinationPort: UInt16, sequenceNumber: SeqNumber, ackNumber: SeqNumber,
                flags: TCPFlags, window: UInt16, options: TCPSegmentOptions = TCPSegmentOptions()) {
        self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber; self.ackNumber = ackNumber
        self.flags = flags; self.window = window; self.options = options
    }

    /// Reads the fixed fields and options of a view.
    public init(_ v: TCPHeaderView) {
        self.init(sourcePort: v.sourcePort, destinationPort: v.destinationPort, sequenceNumber: v.sequenceNumber,
                  ackNumber: v.ackNumber, flags: v.flags, window: v.window,
                  options: TCPSegmentOptions(parsing: v.optionsArea))
        urgentPointer = v.urgentPointer
    }

    @inlinable public var headerLength: Int { TCPHeaderView.minimumHeaderLength &+ options.encodedLength }

    /// Writes `headerLength` bytes at `p`, checksum field zero.
    @inlinable public func emit(into p: UnsafeMutableRawPointer) {
        let hl = headerLength
        wireStore16(p, 0, sourcePort)
        wireStore16(p, 2, destinationPort)
        wireStore32(p, 4, sequenceNumber.rawValue)
        wireStore32(p, 8, ackNumber.rawValue)
        p.storeBytes(of: UInt8(truncatingIfNeeded: (hl / 4) << 4), toByteOffset: 12, as: UInt8.self)
        p.storeBytes(of: flags.rawValue, toByteOffset: 13, as: UInt8.self)
        wireStore16(p, 14, window)
        wireStore16(p, 16, 0)
        wireStore16(p, 18, urgentPointer)
        _ = options.emit(into: p + TCPHeaderView.minimumHeaderLength)
    }

    /// Stores the checksum of the segment whose `headerLength`-byte header is at `p` and whose
    /// payload is `payload` then `more`; with `copy`, the payload is copied to follow the header
    /// in the same pass.
    @inlinable public static func fillChecksum(_ p: UnsafeMutableRawPointer, headerLength hl: Int,
                                               payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                                               copy: Bool, source: IPv4Address, destination: IPv4Address) {
        let length = hl &+ payload.count &+ more.count
        wireStore16(p, 16, 0)
        var s = Checksum.pseudoHeader(src: source, dst: destination, proto: IPProtocol.tcp, length: length)
        s = Checksum.partial(p, count: hl, initial: s)
        s = Checksum.partial(payload, more, initial: s, copyTo: copy ? p + hl : nil)
        wireStore16(p, 16, Checksum.finish(s))
    }

    /// The pseudo-header sum a segment of `length` bytes carries in its checksum field when the
    /// rest is left to the kernel (CHECKSUM_PARTIAL: folded, not complemented).
    @inlinable public static func partialChecksum(length: Int, source: IPv4Address, destination: IPv4Address) -> UInt16 {
        ~Checksum.finish(Checksum.pseudoHeader(src: source, dst: destination, proto: IPProtocol.tcp, length: length))
    }

    /// Computes and stores the checksum of the `length`-byte segment at `p`.
    @inlinable public static func fillChecksum(_ p: UnsafeMutableRawPointer, length: Int,
                                               source: IPv4Address, destination: IPv4Address) {
        wireStore16(p, 16, 0)
        let s = Checksum.pseudoHeader(src: source, dst: destination, proto: IPProtocol.tcp, length: length)
        wireStore16(p, 16, Checksum.finish(Checksum.partial(p, count: length, initial: s)))
    }
}
