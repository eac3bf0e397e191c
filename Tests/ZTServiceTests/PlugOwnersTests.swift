import Glibc
import NetStack
import Testing
@testable import ZTService

/// PlugOwners with a fake process table and a virtual clock.
@Suite struct PlugOwnersTests {
    final class FakeProcesses: PlugOwners.Processes, @unchecked Sendable {
        var alive: Set<Int32> = []
        var opened: [Int32: Int32] = [:]   // pidfd -> pid
        var closed: [Int32] = []
        var opens = 0
        var failOpen = false
        private var nextFD: Int32 = 100
        func open(_ pid: Int32) -> PlugOwners.PidFD {
            opens += 1
            if failOpen { return .unknown }
            guard alive.contains(pid) else { return .gone }
            nextFD += 1
            opened[nextFD] = pid
            return .fd(nextFD)
        }
        func exited(_ pidfd: Int32) -> Bool { !alive.contains(opened[pidfd]!) }
        func close(_ pidfd: Int32) { closed.append(pidfd) }
    }

    static let t0 = Instant.milliseconds(10_000)

    func plugged(pid: Int32, at t: Instant) -> Connection {
        let c = Connection(key: FDKey(dev: 1, ino: UInt64(pid) << 8 | UInt64.random(in: 0..<256)), pid: pid, uid: 1000)
        c.plug = Plug(appEnd: -1, filler: 1, sndbuf: 0, since: t)
        return c
    }

    @Test func anOwnerThatExitedLosesItsPlugsOnlyAfterTheGraceTime() {
        let procs = FakeProcesses()
        procs.alive = [10, 20]
        var owners = PlugOwners(processes: procs)
        let a1 = plugged(pid: 10, at: Self.t0), a2 = plugged(pid: 10, at: Self.t0), b = plugged(pid: 20, at: Self.t0)
        for c in [a1, a2, b] { owners.add(c, now: Self.t0) }
        #expect(owners.nextCheck == Self.t0 + PlugOwners.grace)
        #expect(owners.check(now: Self.t0 + .milliseconds(500)).isEmpty)   // not due
        #expect(procs.opens == 0)
        // Due, both alive: one pidfd per process, not per plug.
        #expect(owners.check(now: Self.t0 + PlugOwners.grace).isEmpty)
        #expect(procs.opens == 2 && owners.pidfds.count == 2)
        procs.alive.remove(10)
        let gone = owners.check(now: Self.t0 + .seconds(2))
        #expect(Set(gone.map(\.pid)) == [10] && gone.count == 2)
        #expect(owners.pidfds.keys.sorted() == [20] && procs.closed.count == 1)
        #expect(procs.opens == 2)   // the pidfd is reused, not reopened
        // The survivor connects: its plug goes, and with it the last pidfd and the timer.
        b.plug = nil
        #expect(owners.check(now: Self.t0 + .seconds(3)).isEmpty)
        #expect(owners.pidfds.isEmpty && procs.closed.count == 2 && owners.nextCheck == nil)
    }

    @Test func aYoungPlugIsNotLookedAtAndAVanishedPidCountsAsExited() {
        let procs = FakeProcesses()
        var owners = PlugOwners(processes: procs)
        let old = plugged(pid: 30, at: Self.t0)
        let young = plugged(pid: 31, at: Self.t0 + .milliseconds(900))
        owners.add(old, now: Self.t0)
        owners.add(young, now: Self.t0 + .milliseconds(900))
        let gone = owners.check(now: Self.t0 + PlugOwners.grace)
        #expect(gone.map(\.pid) == [30])         // pid 30 no longer exists (open: ESRCH)
        #expect(procs.opens == 1)                // 31 is too young to look at
        #expect(owners.nextCheck == Self.t0 + PlugOwners.grace + PlugOwners.grace)
        #expect(owners.check(now: Self.t0 + .seconds(2)).map(\.pid) == [31])
        #expect(owners.nextCheck == nil && owners.watched.isEmpty)
    }

    @Test func anOpenErrorIsRetriedAndCloseAllClosesEveryPidfd() {
        let procs = FakeProcesses()
        procs.alive = [40, 41]
        procs.failOpen = true
        var owners = PlugOwners(processes: procs)
        owners.add(plugged(pid: 40, at: Self.t0), now: Self.t0)
        owners.add(plugged(pid: 41, at: Self.t0), now: Self.t0)
        #expect(owners.check(now: Self.t0 + PlugOwners.grace).isEmpty)   // EMFILE, say: not a death
        procs.failOpen = false
        #expect(owners.check(now: Self.t0 + .seconds(2)).isEmpty)
        #expect(owners.pidfds.count == 2)
        owners.closeAll()
        #expect(procs.closed.count == 2 && owners.pidfds.isEmpty && owners.nextCheck == nil)
    }
}
