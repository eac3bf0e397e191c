#if canImport(Glibc)
import Glibc
#endif

/// Where ring memory comes from: whole pages, mapped, dropped and unmapped. `SystemPages` is the
/// kernel's (mmap/madvise/munmap); tests count calls with a fake.
public protocol PageSource: AnyObject {
    /// `bytes` (a multiple of the page size) of zeroed, private memory, or nil.
    func map(_ bytes: Int) -> UnsafeMutableRawPointer?
    func unmap(_ p: UnsafeMutableRawPointer, _ bytes: Int)
    /// The pages' contents are no longer needed: the kernel takes them back now (RSS drops), and
    /// a later touch gets zeroed pages.
    func discard(_ p: UnsafeMutableRawPointer, _ bytes: Int)
}

public final class SystemPages: PageSource {
    public init() {}
    public func map(_ bytes: Int) -> UnsafeMutableRawPointer? {
        #if canImport(Glibc)
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        return p == MAP_FAILED ? nil : p
        #else
        return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        #endif
    }
    public func unmap(_ p: UnsafeMutableRawPointer, _ bytes: Int) {
        #if canImport(Glibc)
        munmap(p, bytes)
        #else
        p.deallocate()
        #endif
    }
    public func discard(_ p: UnsafeMutableRawPointer, _ bytes: Int) {
        #if canImport(Glibc)
        madvise(p, bytes, MADV_DONTNEED)
        #endif
    }
}

/// Memory for the socket rings of one stack (one loop thread), so that the daemon's memory
/// follows its load: a ring holds memory only while it holds bytes (`RingBuffer` takes a chunk
/// on its first write and gives it back when its owner sees it drained), and memory given back
/// goes back to the kernel, apart from a small warm reserve that keeps short connections from
/// paying a page fault per ring.
///
/// - Chunks up to `smallLimit` are powers of two carved from 1 MiB slabs (one mapping for many
///   rings: 10k connections must not mean 20k kernel mappings). A freed one is kept warm while
///   the warm reserve is under `warmLimit`, else its pages are discarded (MADV_DONTNEED) and it
///   waits cold, costing address space only. Slabs stay mapped.
/// - Larger chunks (rings grown for bulk transfers) are mappings of their own, unmapped when
///   freed: their pages, touched or not, go back at once.
///
/// Not thread-safe; no per-packet work (a ring takes and gives chunks when it fills from empty
/// or drains, and grows by doubling).
public final class RingMemory {
    public static let pageSize = 4096
    public static let smallLimit = 64 << 10
    static let slabBytes = 1 << 20
    static let classes = 5   // 4, 8, 16, 32, 64 KiB

    let pages: any PageSource
    /// Bytes of freed small chunks kept with their pages (the rest are discarded).
    public var warmLimit: Int
    private var warm: [[UnsafeMutableRawPointer]]
    private var cold: [[UnsafeMutableRawPointer]]
    private var slabs: [UnsafeMutableRawPointer] = []
    /// Large chunks that mmap refused and the heap supplied (freed with `deallocate`).
    private var heapChunks: Set<UnsafeMutableRawPointer> = []

    /// Chunk bytes handed out and not given back.
    public private(set) var inUse = 0
    /// Bytes of freed small chunks whose pages are kept.
    public private(set) var warmBytes = 0
    /// Address space mapped: slabs and large chunks.
    public private(set) var mapped = 0

    public init(pages: any PageSource = SystemPages(), warmLimit: Int = 8 << 20) {
        self.pages = pages
        self.warmLimit = warmLimit
        warm = Array(repeating: [], count: Self.classes)
        cold = Array(repeating: [], count: Self.classes)
    }

    deinit {
        for s in slabs { pages.unmap(s, Self.slabBytes) }
    }

    /// Bytes of the chunk a ring of `capacity` gets: a power of two from one page up to
    /// `smallLimit`, page-rounded above.
    public static func chunkSize(for capacity: Int) -> Int {
        if capacity > smallLimit { return (capacity &+ pageSize &- 1) / pageSize &* pageSize }
        var c = pageSize
        while c < capacity { c &<<= 1 }
        return c
    }

    @inline(__always) static func classIndex(_ size: Int) -> Int {
        (Int.bitWidth &- 1 &- size.leadingZeroBitCount) &- 12   // log2(size / 4096)
    }

    /// A chunk of `chunkSize(for: capacity)` bytes (never fails: the heap stands in for mmap).
    public func allocate(capacity: Int) -> (UnsafeMutableRawPointer, Int) {
        let size = Self.chunkSize(for: capacity)
        inUse &+= size
        if size > Self.smallLimit {
            if let p = pages.map(size) {
                mapped &+= size
                return (p, size)
            }
            let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: Self.pageSize)
            heapChunks.insert(p)
            return (p, size)
        }
        let k = Self.classIndex(size)
        if let p = warm[k].popLast() {
            warmBytes &-= size
            return (p, size)
        }
        if let p = cold[k].popLast() { return (p, size) }
        guard let slab = pages.map(Self.slabBytes) else {
            // No address space left: a heap chunk, freed like a large one.
            let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: Self.pageSize)
            heapChunks.insert(p)
            return (p, size)
        }
        slabs.append(slab)
        mapped &+= Self.slabBytes
        let n = Self.slabBytes / size
        cold[k].reserveCapacity(cold[k].count &+ n)
        // Never touched: these pages cost nothing until a ring writes to them.
        var i = n &- 1
        while i > 0 {
            cold[k].append(slab + i &* size)
            i &-= 1
        }
        return (slab, size)
    }

    /// Gives back a chunk from `allocate` (`size` as it returned).
    public func free(_ p: UnsafeMutableRawPointer, size: Int) {
        inUse &-= size
        if heapChunks.remove(p) != nil {
            p.deallocate()
            return
        }
        if size > Self.smallLimit {
            pages.unmap(p, size)
            mapped &-= size
            return
        }
        let k = Self.classIndex(size)
        if warmBytes &+ size <= warmLimit {
            warm[k].append(p)
            warmBytes &+= size
        } else {
            pages.discard(p, size)
            cold[k].append(p)
        }
    }

    /// Discards the pages of every warm chunk (nothing in use is touched).
    public func trim() {
        for k in 0..<Self.classes {
            let size = Self.pageSize << k
            for p in warm[k] { pages.discard(p, size) }
            cold[k].append(contentsOf: warm[k])
            warm[k].removeAll()
        }
        warmBytes = 0
    }
}
