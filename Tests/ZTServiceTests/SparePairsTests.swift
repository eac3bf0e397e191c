import Glibc
import NetStack
import PhyLoop
import SystemPackage
import Testing
@testable import ZTService

/// SparePairs with real socketpairs and a virtual clock.
@Suite struct SparePairsTests {
    static let t0 = Instant.milliseconds(10_000)

    /// Still this file (tests run in parallel: a closed number may already name another's).
    func isOpen(_ fd: Int32, _ key: FDKey) -> Bool { FDKey.of(fd) == key }

    /// A pair as an accepted connection needs it: connected, both ends non-blocking, the key the
    /// app end's identity.
    func expectUsable(_ p: SparePairs.Pair) {
        #expect(FDKey.of(p.appEnd) == p.key)
        #expect(fcntl(p.appEnd, F_GETFL) & O_NONBLOCK != 0 && fcntl(p.ours, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(p.appEnd, F_GETFD) & FD_CLOEXEC != 0 && fcntl(p.ours, F_GETFD) & FD_CLOEXEC != 0)
        #expect(write(p.appEnd, "x", 1) == 1)
        var b: UInt8 = 0
        #expect(read(p.ours, &b, 1) == 1 && b == UInt8(ascii: "x"))
    }

    @Test func itMakesWhatWasTakenAndNothingBeforeTheFirstAccept() throws {
        let sys = Sys.live
        var spares = SparePairs(limit: 4)
        #expect(!spares.wantsMore && spares.expiry == nil)   // a network that never accepted
        // The first accept makes its pair now and owes one.
        let first = try spares.take(sys: sys, now: Self.t0)
        expectUsable(first)
        #expect(spares.pairs.isEmpty && spares.owed == 1 && spares.wantsMore)
        let madeOne = spares.makeOne(sys: sys), madeTwo = spares.makeOne(sys: sys)
        #expect(madeOne && !madeTwo)
        #expect(spares.pairs.count == 1 && spares.owed == 0)
        // A burst of three: the spare first, two made at once; three owed back.
        let made = spares.pairs[0]
        let burst = try (0..<3).map { _ in try spares.take(sys: sys, now: Self.t0) }
        #expect(burst[0] == made)
        #expect(spares.pairs.isEmpty && spares.owed == 3)
        while spares.makeOne(sys: sys) {}
        #expect(spares.pairs.count == 3 && spares.owed == 0)
        for p in burst + [first] { expectUsable(p); close(p.appEnd); close(p.ours) }
        spares.closeAll(sys: sys)
    }

    @Test func theSpareTakenIsOneMadeAheadAndThePoolNeverPassesItsLimit() throws {
        let sys = Sys.live
        var spares = SparePairs(limit: 2)
        var taken = try (0..<5).map { _ in try spares.take(sys: sys, now: Self.t0) }
        #expect(spares.owed == 2)   // a burst of 5 owes only the limit
        while spares.makeOne(sys: sys) {}
        #expect(spares.pairs.count == 2)
        let ahead = spares.pairs
        let p = try spares.take(sys: sys, now: Self.t0)
        #expect(ahead.contains(p))
        expectUsable(p)
        taken.append(p)
        #expect(spares.pairs.count == 1 && spares.owed == 1)
        for t in taken { close(t.appEnd); close(t.ours) }
        spares.closeAll(sys: sys)
    }

    @Test func sparesCloseOnceNoAcceptCameForTheKeepTime() throws {
        let sys = Sys.live
        var spares = SparePairs(limit: 4, keepFor: .seconds(2))
        let p = try spares.take(sys: sys, now: Self.t0)
        close(p.appEnd); close(p.ours)
        let made = spares.makeOne(sys: sys)
        #expect(made)
        let held = spares.pairs
        #expect(spares.expiry == Self.t0 + .seconds(2))
        spares.expire(sys: sys, now: Self.t0 + .milliseconds(1999))
        let ourKeys = held.map { FDKey.of($0.ours) }
        #expect(spares.pairs == held && held.allSatisfy { isOpen($0.appEnd, $0.key) } && !ourKeys.contains(nil))
        spares.expire(sys: sys, now: Self.t0 + .seconds(2))
        #expect(spares.pairs.isEmpty && spares.expiry == nil && !spares.wantsMore)
        #expect(held.allSatisfy { !isOpen($0.appEnd, $0.key) })
        #expect(zip(held, ourKeys).allSatisfy { !isOpen($0.ours, $1!) })
    }

    /// Out of fds: the accept fails (the caller resets that connection) and idle moments do not
    /// retry until the next accept.
    @Test func aFailedSocketpairOwesNothingSoIdleMomentsDoNotRetryIt() throws {
        let faults = FaultSys()
        let sys = Sys(backend: faults)
        var spares = SparePairs(limit: 4)
        faults.inject(Fault(call: .socketpair, effect: .errno(EMFILE)))
        var failure: Errno?
        do { _ = try spares.take(sys: sys, now: Self.t0) } catch { failure = error }
        #expect(failure == Errno(rawValue: EMFILE))
        #expect(spares.owed == 1)
        faults.inject(Fault(call: .socketpair, effect: .errno(EMFILE)))
        let made = spares.makeOne(sys: sys)
        #expect(!made)
        #expect(spares.owed == 0 && !spares.wantsMore && spares.pairs.isEmpty)
        #expect(faults.pending == 0)
    }
}
