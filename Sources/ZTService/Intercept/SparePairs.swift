import CShims
import NetStack
import PhyLoop
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Socketpairs made ahead, in the loop's idle moments, for the connections listeners accept.
///
/// Each accepted connection needs a new pair (one end for the app, sent over the accept channel,
/// one for ztapd) and the app end's identity (an fstat): ~9% of ztapd's work per nginx
/// `Connection: close` request, on the path between the client's SYN and the server's answer.
/// Made while the loop would otherwise wait (`PhySocketHandler.phyOnIdle`), that work leaves the
/// path. The pool follows demand: every pair taken (or made inline because none was left) is
/// owed back, so it grows to the largest burst accepted between two idle moments, never past
/// `limit`; and it is emptied `keepFor` after the last accept, so a network that stopped
/// accepting holds no fds for it.
struct SparePairs {
    struct Pair: Equatable {
        let appEnd: Int32
        let ours: Int32
        let key: FDKey
    }

    /// At most this many pairs wait (2 fds each).
    let limit: Int
    /// How long spares are kept after the last accept.
    let keepFor: Duration
    private(set) var pairs: [Pair] = []
    /// Pairs to make in idle moments: what was taken since, up to `limit` in all.
    private(set) var owed = 0
    /// When the pool empties itself (no accept since `keepFor`); nil while it holds nothing.
    private(set) var expiry: Instant?

    init(limit: Int = 16, keepFor: Duration = .seconds(2)) {
        self.limit = limit
        self.keepFor = keepFor
        pairs.reserveCapacity(limit)
    }

    /// Whether an idle moment has work here.
    var wantsMore: Bool { owed > 0 }

    /// A pair for a connection being accepted: a spare, or one made now (throws: socketpair failed).
    /// Either way one is owed back, for the next idle moment.
    mutating func take(sys: Sys, now: Instant) throws(Errno) -> Pair {
        expiry = now + keepFor
        if let p = pairs.popLast() {
            owed += 1
            return p
        }
        if pairs.count + owed < limit { owed += 1 }
        return try Self.make(sys: sys)
    }

    /// Makes one owed pair (an idle moment's unit of work). False when nothing is owed or the
    /// socketpair failed (then nothing is owed until the next accept: no retry loop on EMFILE).
    mutating func makeOne(sys: Sys) -> Bool {
        guard owed > 0 else { return false }
        owed -= 1
        guard pairs.count < limit, let p = try? Self.make(sys: sys) else {
            owed = 0
            return false
        }
        pairs.append(p)
        return true
    }

    /// Timer: empties the pool once no accept came for `keepFor`.
    mutating func expire(sys: Sys, now: Instant) {
        guard let e = expiry, e <= now else { return }
        closeAll(sys: sys)
    }

    mutating func closeAll(sys: Sys) {
        for p in pairs {
            sys.close(p.appEnd)
            sys.close(p.ours)
        }
        pairs.removeAll(keepingCapacity: true)
        owed = 0
        expiry = nil
    }

    /// Both ends non-blocking: ours must be, and an app that accepts with SOCK_NONBLOCK (event
    /// loops do) then needs no fcntl (ZTRPC_AM_NONBLOCK).
    static func make(sys: Sys) throws(Errno) -> Pair {
        let (appEnd, ours) = try sys.socketpair(type: Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
        sys.keepOutOfBandInline(ours)   // the app's urgent bytes reach us (TCPPump.findUrgent)
        guard let key = FDKey.of(appEnd) else {
            sys.close(appEnd)
            sys.close(ours)
            throw Errno(rawValue: EBADF)
        }
        return Pair(appEnd: appEnd, ours: ours, key: key)
    }
}
