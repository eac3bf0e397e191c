/// Fragment reassembly with bounded memory, for IPv4 (RFC 791 §3.2, RFC 815 spirit) and IPv6
/// (RFC 8200 §4.5); each family has its own instance.
///
/// At most `maxDatagrams` datagrams are in progress; each owns a lazily allocated buffer of
/// 60 + 65535 bytes (kept for reuse), so the worst case is fixed. The first fragment's header is
/// stored right in front of the payload, so a finished datagram is one contiguous packet (useful
/// for quoting in ICMP errors; IPv6 stores a fixed header that names the fragment's next
/// header). Any fragment that overlaps another one without being an exact duplicate kills the
/// whole datagram (RFC 5722: overlaps are only ever attacks).
final class Reassembler {
    static let headerRoom = 60
    static let maxPayload = 65535

    /// IPv4: addresses, protocol and the 16-bit id; IPv6: addresses and the 32-bit id (proto 0).
    struct Key: Hashable { var src: IPAddress; var dst: IPAddress; var proto: UInt8; var id: UInt32 }

    final class Slot {
        var key = Key(src: .v4Any, dst: .v4Any, proto: 0, id: 0)
        var inUse = false
        var buffer: UnsafeMutableRawPointer?
        var ranges: [Range<Int>] = []
        var received = 0
        var totalLength = -1        // payload length, known once the last fragment arrived
        var headerLength = 0        // of the offset-0 fragment, 0 until it arrived
        var deadline = Instant.zero
        deinit { buffer?.deallocate() }
    }

    let maxDatagrams: Int
    let maxFragments: Int
    let timeout: Duration
    private(set) var slots: [Slot] = []

    init(maxDatagrams: Int, maxFragments: Int, timeout: Duration) {
        self.maxDatagrams = max(1, maxDatagrams)
        self.maxFragments = max(2, maxFragments)
        self.timeout = timeout
    }

    var inProgress: Int { slots.reduce(0) { $0 + ($1.inUse ? 1 : 0) } }

    enum Outcome {
        case incomplete
        case duplicate
        /// Whole datagram: `packet` is the IPv4 header of the first fragment followed by the full
        /// payload (`headerLength` bytes then `payload`). Valid until the next call.
        case complete(packet: UnsafeRawBufferPointer, headerLength: Int, payload: UnsafeRawBufferPointer)
        case dropped(overlap: Bool)
    }

    /// Adds one fragment (a validated header view with `isFragment`).
    func add(_ ip: IPv4HeaderView, now: Instant) -> Outcome {
        let key = Key(src: IPAddress(ip.source), dst: IPAddress(ip.destination), proto: ip.protocolNumber,
                      id: UInt32(ip.identification))
        let first = UnsafeRawBufferPointer(start: ip.bytes.baseAddress, count: ip.headerLength)
        return add(key: key, offset: ip.fragmentOffset, more: ip.moreFragments, data: ip.payload, header: first,
                   limit: Self.maxPayload &- ip.headerLength, now: now)
    }

    /// Adds one fragment: `data` at byte `offset` of the datagram, `more` unless it is the last;
    /// `header` is what goes in front of the whole (kept from the offset-0 fragment, at most
    /// `headerRoom` bytes); no byte may lie at or past `limit`.
    func add(key: Key, offset start: Int, more: Bool, data: UnsafeRawBufferPointer, header: UnsafeRawBufferPointer,
             limit: Int, now: Instant) -> Outcome {
        let end = start &+ data.count
        // Non-final fragments must carry multiples of 8 bytes; nothing may pass the limit
        // (IPv4: 65535 - IHL).
        let invalid = (more && (data.count == 0 || data.count & 7 != 0)) || end > min(limit, Self.maxPayload)
            || header.count > Self.headerRoom

        var slot = slots.first { $0.inUse && $0.key == key }
        if invalid {
            if let s = slot { s.inUse = false }
            return .dropped(overlap: false)
        }
        if slot == nil { slot = claim(key, now: now) }
        guard let s = slot, let buf = s.buffer else { return .dropped(overlap: false) }

        // Exact duplicates (a duplicating link) are ignored; any other overlap drops the datagram.
        for r in s.ranges where r.lowerBound < end && start < r.upperBound {
            if r.lowerBound == start && r.upperBound == end, data.count > 0,
               memcmpEqual(buf + Self.headerRoom + start, data.baseAddress.unsafelyUnwrapped, data.count) {
                return .duplicate
            }
            s.inUse = false
            return .dropped(overlap: true)
        }
        if !more {
            if s.totalLength >= 0 && s.totalLength != end { s.inUse = false; return .dropped(overlap: true) }
            if s.ranges.contains(where: { $0.upperBound > end }) { s.inUse = false; return .dropped(overlap: false) }
            s.totalLength = end
        } else if s.totalLength >= 0 && end > s.totalLength {
            s.inUse = false
            return .dropped(overlap: false)
        }
        if s.ranges.count >= maxFragments { s.inUse = false; return .dropped(overlap: false) }
        if data.count > 0 {
            (buf + Self.headerRoom + start).copyMemory(from: data.baseAddress.unsafelyUnwrapped, byteCount: data.count)
        }
        s.ranges.append(start..<end)
        s.received &+= data.count
        if start == 0, let h = header.baseAddress {
            let hl = header.count
            (buf + Self.headerRoom - hl).copyMemory(from: h, byteCount: hl)
            s.headerLength = hl
        }
        guard s.totalLength >= 0, s.received == s.totalLength, s.headerLength > 0 else { return .incomplete }
        s.inUse = false   // the buffer stays valid until the slot is claimed again
        let hl = s.headerLength
        let packet = UnsafeRawBufferPointer(start: buf + Self.headerRoom - hl, count: hl &+ s.totalLength)
        return .complete(packet: packet, headerLength: hl,
                          payload: UnsafeRawBufferPointer(start: buf + Self.headerRoom, count: s.totalLength))
    }

    private func claim(_ key: Key, now: Instant) -> Slot? {
        var s = slots.first { !$0.inUse }
        if s == nil {
            if slots.count < maxDatagrams {
                let n = Slot()
                n.ranges.reserveCapacity(maxFragments)
                slots.append(n)
                s = n
            } else {
                // All busy: evict the one closest to expiry (the oldest) so fresh traffic wins.
                s = slots.min { $0.deadline < $1.deadline }
            }
        }
        guard let slot = s else { return nil }
        if slot.buffer == nil {
            slot.buffer = .allocate(byteCount: Self.headerRoom &+ Self.maxPayload, alignment: 16)
        }
        slot.key = key
        slot.inUse = true
        slot.ranges.removeAll(keepingCapacity: true)
        slot.received = 0
        slot.totalLength = -1
        slot.headerLength = 0
        slot.deadline = now + timeout
        return slot
    }

    /// Expires datagrams past their deadline. `expired` gets the first fragment's header + the
    /// start of its payload (for an ICMP time-exceeded) when the offset-0 fragment had arrived.
    func poll(now: Instant, _ expired: (UnsafeRawBufferPointer?) -> Void) -> Instant? {
        var next: Instant?
        for s in slots where s.inUse {
            if now >= s.deadline {
                s.inUse = false
                if s.headerLength > 0, let buf = s.buffer {
                    let firstLen = s.ranges.first { $0.lowerBound == 0 }?.upperBound ?? 0
                    expired(UnsafeRawBufferPointer(start: buf + Self.headerRoom - s.headerLength,
                                                   count: s.headerLength &+ firstLen))
                } else {
                    expired(nil)
                }
            } else {
                next = earliest(next, s.deadline)
            }
        }
        return next
    }
}

@inline(__always)
func memcmpEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    var i = 0
    while i &+ 8 <= n {
        if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) {
            return false
        }
        i &+= 8
    }
    while i < n {
        if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
        i &+= 1
    }
    return true
}
