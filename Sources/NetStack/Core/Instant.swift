/// A point on the stack's monotonic clock, in nanoseconds.
///
/// NetStack never reads a clock itself: every entry point takes `now` from its caller, so tests
/// drive time by hand and every timer is deterministic.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    @inlinable public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }
    @inlinable public static func milliseconds(_ ms: UInt64) -> Instant { Instant(nanoseconds: ms &* 1_000_000) }
    public static let zero = Instant(nanoseconds: 0)

    @inlinable public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }
    @inlinable public static func + (a: Instant, d: Duration) -> Instant {
        Instant(nanoseconds: a.nanoseconds &+ d.nanoseconds)
    }
    /// Time elapsed from `b` to `a`, zero if `b` is later.
    @inlinable public static func - (a: Instant, b: Instant) -> Duration {
        Duration(nanoseconds: a.nanoseconds >= b.nanoseconds ? a.nanoseconds - b.nanoseconds : 0)
    }
    public var description: String { "\(nanoseconds / 1_000_000)ms" }
}

/// A non-negative span of stack time in nanoseconds (deliberately not Swift.Duration: integer
/// arithmetic only, no Int128 on the hot path).
public struct Duration: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64
    @inlinable public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }
    @inlinable public static func milliseconds(_ ms: UInt64) -> Duration { Duration(nanoseconds: ms &* 1_000_000) }
    @inlinable public static func microseconds(_ us: UInt64) -> Duration { Duration(nanoseconds: us &* 1_000) }
    @inlinable public static func seconds(_ s: UInt64) -> Duration { Duration(nanoseconds: s &* 1_000_000_000) }
    public static let zero = Duration(nanoseconds: 0)
    @inlinable public var milliseconds: UInt64 { nanoseconds / 1_000_000 }
    @inlinable public static func < (a: Duration, b: Duration) -> Bool { a.nanoseconds < b.nanoseconds }
    @inlinable public static func + (a: Duration, b: Duration) -> Duration { Duration(nanoseconds: a.nanoseconds &+ b.nanoseconds) }
    @inlinable public static func * (a: Duration, k: UInt64) -> Duration { Duration(nanoseconds: a.nanoseconds &* k) }
    public var description: String { "\(nanoseconds / 1_000_000)ms" }
}

/// Earliest of two optional deadlines (nil = no deadline).
@inlinable public func earliest(_ a: Instant?, _ b: Instant?) -> Instant? {
    switch (a, b) {
    case (nil, let x), (let x, nil): return x
    case let (x?, y?): return min(x, y)
    }
}
