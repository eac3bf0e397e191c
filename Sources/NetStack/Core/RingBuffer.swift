/// A bounded byte ring over one raw allocation: the socket rxbuf/txbuf.
///
/// Allocated once when the socket is created and never resized, so the data path does no heap
/// allocation. Readers and writers get at most two contiguous regions (for readv/writev-style
/// I/O straight between the ring and a file descriptor — no second copy). Bytes can also be
/// written past the tail without making them readable (`write(at:)`), which TCP's receive side
/// uses to place out-of-order segments before the hole is filled.
public final class RingBuffer {
    public let capacity: Int
    @usableFromInline let storage: UnsafeMutableRawPointer
    // Unchecked: a ring belongs to one loop thread and no ring call re-enters another; visible
    // to inlinable code in other modules, the counters could never be proven static, and the
    // checks cost 11% (TCP alone) / 7.7% (whole stack) of the instructions per MiB moved
    // (callgrind, `NetStackBench tcp` / `sim`).
    @exclusivity(unchecked) @usableFromInline var head = 0     // index of first readable byte
    @exclusivity(unchecked) @usableFromInline var length = 0   // readable bytes

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }
    deinit { storage.deallocate() }

    @inlinable public var count: Int { length }
    @inlinable public var free: Int { capacity &- length }
    @inlinable public var isEmpty: Bool { length == 0 }
    @inlinable public var isFull: Bool { length == capacity }

    @inlinable func index(_ offset: Int) -> Int {
        let i = head &+ offset
        return i >= capacity ? i &- capacity : i
    }

    /// Copies up to `count` bytes from `src` to the tail; returns bytes copied.
    @inlinable @discardableResult
    public func enqueue(_ src: UnsafeRawPointer, count: Int) -> Int {
        let n = Swift.min(count, free)
        if n == 0 { return 0 }
        copyIn(at: length, from: src, count: n)
        length &+= n
        return n
    }

    /// Copies `count` bytes to ring offset `offset` (relative to the first readable byte) without
    /// changing what is readable. Returns bytes written (clipped to the capacity).
    @inlinable @discardableResult
    public func write(at offset: Int, from src: UnsafeRawPointer, count: Int) -> Int {
        guard offset >= 0, offset < capacity else { return 0 }
        let n = Swift.min(count, capacity &- offset)
        if n > 0 { copyIn(at: offset, from: src, count: n) }
        return n
    }

    /// Marks `count` bytes after the readable region as readable (after `write(at:)` or after
    /// filling `withFreeRegions`). Clipped to the free space.
    @inlinable public func commit(_ count: Int) { length &+= Swift.min(count, free) }

    @usableFromInline func copyIn(at offset: Int, from src: UnsafeRawPointer, count n: Int) {
        let start = index(offset)
        let first = Swift.min(n, capacity &- start)
        (storage + start).copyMemory(from: src, byteCount: first)
        if first < n { storage.copyMemory(from: src + first, byteCount: n &- first) }
    }

    /// Copies up to `count` readable bytes starting at `offset` into `dst` without consuming them.
    @inlinable @discardableResult
    public func peek(at offset: Int = 0, into dst: UnsafeMutableRawPointer, count: Int) -> Int {
        guard offset >= 0, offset < length else { return 0 }
        let n = Swift.min(count, length &- offset)
        let start = index(offset)
        let first = Swift.min(n, capacity &- start)
        dst.copyMemory(from: storage + start, byteCount: first)
        if first < n { (dst + first).copyMemory(from: storage, byteCount: n &- first) }
        return n
    }

    /// Copies and consumes up to `count` bytes.
    @inlinable @discardableResult
    public func dequeue(into dst: UnsafeMutableRawPointer, count: Int) -> Int {
        let n = peek(into: dst, count: count)
        discard(n)
        return n
    }

    /// Drops up to `count` readable bytes from the head.
    @inlinable public func discard(_ count: Int) {
        let n = Swift.min(count, length)
        head = index(n)
        length &-= n
        // No rewind to 0 when empty: bytes parked past the tail with `write(at:)` (TCP
        // out-of-order data) must keep their position.
    }

    /// The readable bytes from `offset` as at most two regions (second may be empty).
    @inlinable
    public func readableRegions(from offset: Int = 0, max: Int = .max)
        -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
        guard offset >= 0, offset < length else { return (.init(start: nil, count: 0), .init(start: nil, count: 0)) }
        let n = Swift.min(max, length &- offset)
        let start = index(offset)
        let first = Swift.min(n, capacity &- start)
        return (UnsafeRawBufferPointer(start: storage + start, count: first),
                UnsafeRawBufferPointer(start: storage, count: n &- first))
    }

    /// The free space after the readable bytes as at most two regions; fill them, then `commit`.
    @inlinable
    public func freeRegions() -> (UnsafeMutableRawBufferPointer, UnsafeMutableRawBufferPointer) {
        let n = free
        if n == 0 { return (.init(start: nil, count: 0), .init(start: nil, count: 0)) }
        let start = index(length)
        let first = Swift.min(n, capacity &- start)
        return (UnsafeMutableRawBufferPointer(start: storage + start, count: first),
                UnsafeMutableRawBufferPointer(start: storage, count: n &- first))
    }
}
