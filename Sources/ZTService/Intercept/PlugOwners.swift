import CShims
import Glibc
import NetStack
import PhyLoop

/// Watches the owners of plugged connects (ztrpc.h, CONNECT's `filler`).
///
/// Why: until a connect's outcome ztapd holds a copy of the app end (to restore its SO_SNDBUF
/// then), so the app's close — or its death — does not show as a hangup on ztapd's end. Linux
/// drops a connecting socket as soon as its process closes it; without this a SIGKILLed client's
/// unanswered connect kept two fds and a connection for the whole SYN retry time (minutes).
///
/// Once a second while plugs are held, the owners of plugs older than `grace` are looked at
/// through a pidfd (one per process, not per socket: 10k pending connects of one program cost one
/// fd). The plugs of an owner that exited are returned to be let go; if nobody else holds the app
/// end (a child it forked could), ztapd's end then sees the hangup and the connect is aborted.
struct PlugOwners {
    /// How the daemon looks at a process; a fake in the tests.
    protocol Processes {
        /// A pidfd for `pid`, `.gone` when no such process exists, `.unknown` on any other error
        /// (looked at again next time).
        func open(_ pid: Int32) -> PidFD
        /// Whether the process behind `pidfd` has exited.
        func exited(_ pidfd: Int32) -> Bool
        func close(_ pidfd: Int32)
    }

    enum PidFD: Equatable { case fd(Int32), gone, unknown }

    struct Live: Processes {
        func open(_ pid: Int32) -> PidFD {
            let fd = cshim_pidfd_open(pid)
            if fd >= 0 { return .fd(fd) }
            return -fd == ESRCH ? .gone : .unknown
        }
        func exited(_ pidfd: Int32) -> Bool { cshim_pidfd_exited(pidfd) == 1 }
        func close(_ pidfd: Int32) { Sys.live.close(pidfd) }
    }

    static let grace = Duration.seconds(1)

    private let processes: any Processes
    private(set) var watched: [Connection] = []
    /// Open pidfds by pid, only for owners with a plug still held.
    private(set) var pidfds: [Int32: Int32] = [:]
    private(set) var nextCheck: Instant?

    init(processes: any Processes = Live()) { self.processes = processes }

    /// `c` was just plugged.
    mutating func add(_ c: Connection, now: Instant) {
        watched.append(c)
        if nextCheck == nil { nextCheck = now + Self.grace }
    }

    /// The connections (still plugged) whose owner has exited, when a check is due.
    mutating func check(now: Instant) -> [Connection] {
        guard let t = nextCheck, t <= now else { return [] }
        watched.removeAll { $0.plug == nil }
        var verdict: [Int32: Bool] = [:]
        var gone: [Connection] = []
        for c in watched {
            guard let p = c.plug, now - p.since >= Self.grace else { continue }
            if verdict[c.pid] == nil { verdict[c.pid] = ownerExited(c.pid) }
            if verdict[c.pid] == true { gone.append(c) }
        }
        if !gone.isEmpty { watched.removeAll { c in verdict[c.pid] == true } }
        // Keep a pidfd only while its process is alive and still owns a held plug.
        let owners = Set(watched.map(\.pid))
        for (pid, fd) in pidfds where !owners.contains(pid) || verdict[pid] == true {
            processes.close(fd)
            pidfds[pid] = nil
        }
        nextCheck = watched.isEmpty ? nil : now + Self.grace
        return gone
    }

    /// Every pidfd closed (the loop is shutting down).
    mutating func closeAll() {
        for fd in pidfds.values { processes.close(fd) }
        pidfds.removeAll()
        watched.removeAll()
        nextCheck = nil
    }

    private mutating func ownerExited(_ pid: Int32) -> Bool {
        if let fd = pidfds[pid] { return processes.exited(fd) }
        switch processes.open(pid) {
        case .fd(let fd):
            pidfds[pid] = fd
            return processes.exited(fd)
        case .gone: return true
        case .unknown: return false
        }
    }
}
