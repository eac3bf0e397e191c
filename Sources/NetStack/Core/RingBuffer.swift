/// A bounded byte ring over one raw allocation: the socket rxbuf/txbuf.
///
/// The data path does no heap allocation. Readers and writers get at most two contiguous regions
/// (for readv/writev-style I/O straight between the ring and a file descriptor — no second copy).
/// Bytes can also be written past the tail without making them readable (`write(at:)`), which
/// TCP's receive side uses to place out-of-order segments before the hole is filled.
///
/// Memory: `init(capacity:)` allocates at once and keeps it (UDP queues, tests). A ring made
/// with a `RingMemory` holds memory only while its owner needs it: a chunk is taken on the first
/// write (`ensureStorage`), given back by `releaseStorage` once the owner knows nothing is
/// stored (not even past the tail), and `resize` changes the capacity keeping what is stored.
/// Invariant: `length > 0` (or bytes parked past the tail) implies `hasStorage`.
public final class RingBuffer {
    public private(set) var capacity: Int
    @usableFromInline var storage: UnsafeMutableRawPointer
    @usableFromInline var hasStorage: Bool
    // Unchecked: a ring belongs to one loop thread and no ring call re-enters another; visible
    // to inlinable code in other modules, the counters could never be proven static, and the
    // checks cost 11% (TCP alone) / 7.7% (whole stack) of the instructions per MiB moved
    // (callgrind, `NetStackBench tcp` / `sim`).
    @exclusivity(unchecked) @usableFromInline var head = 0     // index of first readable byte
    @exclusivity(unchecked) @usableFromInline var length = 0   // readable bytes
    /// Where chunks come from; nil: allocated once at init, freed at deinit.
    let memory: RingMemory?
    /// Bytes of the chunk held (0 without storage).
    public private(set) var storageBytes = 0

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        memory = nil
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        hasStorage = true
        storageBytes = capacity
    }

    /// A ring without memory yet: `memory` supplies it on the first write.
    public init(capacity: Int, memory: RingMemory) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.memory = memory
        storage = UnsafeMutableRawPointer(bitPattern: 16)!   // never dereferenced without storage
        hasStorage = false
    }

    deinit { dropStorage() }

    private func dropStorage() {
        guard hasStorage else { return }
        if let memory { memory.free(storage, size: storageBytes) } else { storage.deallocate() }
        hasStorage = false
        storageBytes = 0
    }

    /// Makes sure there is memory to write to (a no-op for rings that always have it).
    @inlinable @inline(__always) public func ensureStorage() {
        if _slowPath(!hasStorage) { attachStorage() }
    }

    @usableFromInline func attachStorage() {
        guard let memory else { return }
        let (p, n) = memory.allocate(capacity: capacity)
        storage = p
        storageBytes = n
        hasStorage = true
        head = 0
    }

    /// Gives the memory back. Only for a ring that stores nothing, not even past its tail (the
    /// owner knows); does nothing for a ring without a `RingMemory`.
    public func releaseStorage() {
        guard memory != nil, hasStorage else { return }
        precondition(length == 0, "releasing a ring that holds bytes")
        dropStorage()
        head = 0
    }

    /// Changes the capacity, keeping the first `extent` bytes from the head (readable bytes and
    /// any parked past the tail; the rest is dropped). `extent` must not exceed the old or the
    /// new capacity nor be below `count`. A ring with storage gets a new chunk (one copy); one
    /// without, or keeping nothing, just remembers the capacity. For rings with a `RingMemory`.
    public func resize(to newCapacity: Int, keeping extent: Int) {
        precondition(newCapacity > 0 && extent >= length && extent <= capacity && extent <= newCapacity)
        guard let memory else { return }
        guard hasStorage, extent > 0 else {
            if hasStorage { releaseStorage() }
            capacity = newCapacity
            head = 0
            return
        }
        let (p, n) = memory.allocate(capacity: newCapacity)
        let first = Swift.min(extent, capacity &- head)
        p.copyMemory(from: storage + head, byteCount: first)
        if first < extent { (p + first).copyMemory(from: storage, byteCount: extent &- first) }
        memory.free(storage, size: storageBytes)
        storage = p
        storageBytes = n
        head = 0
        capacity = newCapacity
    }

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
        ensureStorage()
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
        if n > 0 { ensureStorage(); copyIn(at: offset, from: src, count: n) }
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
        ensureStorage()
        let start = index(length)
        let first = Swift.min(n, capacity &- start)
        return (UnsafeMutableRawBufferPointer(start: storage + start, count: first),
                UnsafeMutableRawBufferPointer(start: storage, count: n &- first))
    }
}
