import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Unguessable non-zero 64-bit values: the secret of each TCP socket (ztrpc.h "References"),
/// which lets a one-way SETSOCKOPT name its socket without passing the fd. Drawn from
/// getrandom(2) 4 KiB at a time, so a connection's setup does not pay a system call for it.
enum Secrets {
    private struct Pool: ~Copyable {
        var words = [UInt64](repeating: 0, count: 512)
        var next = 512
    }

    private static let pool = Mutex(Pool())

    static func next() -> UInt64 {
        pool.withLock { p in
            if p.next == p.words.count {
                let n = p.words.count * 8
                let got = p.words.withUnsafeMutableBytes { cshim_getrandom($0.baseAddress, UInt(n)) }
                if got != n {
                    // Not expected after boot; the system generator blocks or traps instead.
                    var g = SystemRandomNumberGenerator()
                    for i in p.words.indices { p.words[i] = g.next() }
                }
                p.next = 0
            }
            let v = p.words[p.next]
            p.next += 1
            return v == 0 ? 1 : v   // 0 means "none" on the wire
        }
    }
}
