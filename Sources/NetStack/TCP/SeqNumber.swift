/// A TCP sequence number: 32 bits that wrap, compared by the sign of the wrapped difference
/// (RFC 9293 §3.4). Only meaningful for numbers less than 2^31 apart, which TCP guarantees
/// for in-window values; so `<` is not a total order and must not be used to sort.
public struct SeqNumber: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// `a` advanced by `n` bytes (n may be negative), wrapping.
    @inlinable public static func + (a: SeqNumber, n: Int) -> SeqNumber {
        SeqNumber(a.rawValue &+ UInt32(truncatingIfNeeded: n))
    }
    @inlinable public static func += (a: inout SeqNumber, n: Int) { a = a + n }
    @inlinable public static func - (a: SeqNumber, n: Int) -> SeqNumber {
        SeqNumber(a.rawValue &- UInt32(truncatingIfNeeded: n))
    }
    /// Signed distance from `b` to `a` (positive when `a` is after `b`).
    @inlinable public static func - (a: SeqNumber, b: SeqNumber) -> Int {
        Int(Int32(bitPattern: a.rawValue &- b.rawValue))
    }
    @inlinable public static func < (a: SeqNumber, b: SeqNumber) -> Bool {
        Int32(bitPattern: a.rawValue &- b.rawValue) < 0
    }
    @inlinable public static func max(_ a: SeqNumber, _ b: SeqNumber) -> SeqNumber { a < b ? b : a }
    @inlinable public static func min(_ a: SeqNumber, _ b: SeqNumber) -> SeqNumber { a < b ? a : b }
    public var description: String { String(rawValue) }
}
