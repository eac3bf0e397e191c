import Logging
import PhyLoop
import Synchronization
import SystemPackage
import ZTConfig
#if canImport(Glibc)
import Glibc
#endif

/// The intercept's per-uid budgets ([Limits] in ztapd.conf), shared by every network loop: the
/// counts are per uid over all networks. Taken once when a socket is created and given back
/// once when it goes; the data path never touches the lock.
final class UserBudgets: Sendable {
    struct Limits: Sendable, Equatable {
        var tcpSockets: Int
        var udpSockets: Int
        var bufferBytes: Int
        /// Per network (the hub counts its own RPC connections).
        var pendingRequests: Int

        init(tcpSockets: Int = 1024, udpSockets: Int = 1024, bufferBytes: Int = UserBudgets.autoBufferBytes,
             pendingRequests: Int = 512) {
            self.tcpSockets = tcpSockets
            self.udpSockets = udpSockets
            self.bufferBytes = bufferBytes
            self.pendingRequests = pendingRequests
        }

        init(_ l: DaemonLimits) {
            self.init(tcpSockets: l.tcpSocketsPerUser, udpSockets: l.udpSocketsPerUser,
                      bufferBytes: l.bufferMemoryPerUser ?? UserBudgets.autoBufferBytes,
                      pendingRequests: l.pendingRequestsPerUser)
        }
    }

    struct Usage: Sendable, Equatable {
        var tcpSockets = 0
        var udpSockets = 0
        var bufferBytes = 0
    }

    enum Kind: Sendable { case tcp, udp }

    /// Why a charge was refused, with the errno Linux gives for that kind of exhaustion.
    enum Refusal: Error, Equatable {
        case sockets(Kind, limit: Int)
        case memory(limit: Int)

        var errno: Int32 {
            switch self {
            case .sockets: return EMFILE
            case .memory: return ENOBUFS
            }
        }

        var key: String {
            switch self {
            case .sockets(.tcp, _): return "TCPSocketsPerUser"
            case .sockets(.udp, _): return "UDPSocketsPerUser"
            case .memory: return "BufferMemoryPerUser"
            }
        }

        var limit: Int {
            switch self {
            case .sockets(_, let l), .memory(let l): return l
            }
        }
    }

    /// `BufferMemoryPerUser=auto`: half of the physical memory.
    static var autoBufferBytes: Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return 1 << 30 }
        return pages.multipliedReportingOverflow(by: size).partialValue / 2
    }

    private let state: Mutex<(limits: Limits, usage: [UInt32: Usage])>

    init(_ limits: Limits = Limits()) {
        state = Mutex((limits, [:]))
    }

    var limits: Limits { state.withLock { $0.limits } }

    /// New limits (reload): sockets already open stay; new ones are checked against these.
    func setLimits(_ l: Limits) { state.withLock { $0.limits = l } }

    func usage(of uid: UInt32) -> Usage { state.withLock { $0.usage[uid] ?? Usage() } }

    /// Charges one new socket of `kind` holding `bytes` of buffers to `uid`, or refuses.
    func take(uid: UInt32, kind: Kind, bytes: Int) -> Refusal? {
        state.withLock { s in
            var u = s.usage[uid] ?? Usage()
            switch kind {
            case .tcp:
                guard u.tcpSockets < s.limits.tcpSockets else { return .sockets(.tcp, limit: s.limits.tcpSockets) }
            case .udp:
                guard u.udpSockets < s.limits.udpSockets else { return .sockets(.udp, limit: s.limits.udpSockets) }
            }
            guard u.bufferBytes + bytes <= s.limits.bufferBytes else { return .memory(limit: s.limits.bufferBytes) }
            switch kind {
            case .tcp: u.tcpSockets += 1
            case .udp: u.udpSockets += 1
            }
            u.bufferBytes += bytes
            s.usage[uid] = u
            return nil
        }
    }

    /// More buffer bytes for a socket already charged (a bound socket that connects).
    func grow(uid: UInt32, bytes: Int) -> Refusal? {
        state.withLock { s in
            var u = s.usage[uid] ?? Usage()
            guard u.bufferBytes + bytes <= s.limits.bufferBytes else { return .memory(limit: s.limits.bufferBytes) }
            u.bufferBytes += bytes
            s.usage[uid] = u
            return nil
        }
    }

    /// Gives back `bytes` of buffer memory a socket no longer holds (it stays charged as a socket).
    func shrink(uid: UInt32, bytes: Int) {
        state.withLock { s in
            guard var u = s.usage[uid] else { return }
            u.bufferBytes = max(0, u.bufferBytes - bytes)
            s.usage[uid] = u == Usage() ? nil : u
        }
    }

    /// Gives back what `take` (and `grow`) charged.
    func give(uid: UInt32, kind: Kind, bytes: Int) {
        state.withLock { s in
            guard var u = s.usage[uid] else { return }
            switch kind {
            case .tcp: u.tcpSockets = max(0, u.tcpSockets - 1)
            case .udp: u.udpSockets = max(0, u.udpSockets - 1)
            }
            u.bufferBytes = max(0, u.bufferBytes - bytes)
            s.usage[uid] = u == Usage() ? nil : u
        }
    }
}

/// What one socket holds of its owner's budget; given back exactly once.
struct BudgetCharge {
    let uid: UInt32
    let kind: UserBudgets.Kind
    var bytes: Int
}

/// A loop's door to the shared budgets: charges and refunds sockets, and logs refusals at most
/// once per 10 s per uid and budget. Loop thread only.
final class BudgetGate {
    let budgets: UserBudgets
    let logger: Logger
    let network: String
    private var throttle = LogThrottle()

    init(budgets: UserBudgets, logger: Logger, network: String) {
        self.budgets = budgets
        self.logger = logger
        self.network = network
    }

    /// A charge for a new socket, or the errno to fail with (logged).
    func take(uid: UInt32, pid: Int32, kind: UserBudgets.Kind, bytes: Int) -> Result<BudgetCharge, Errno> {
        if let r = budgets.take(uid: uid, kind: kind, bytes: bytes) {
            refused(r, uid: uid, pid: pid)
            return .failure(Errno(rawValue: r.errno))
        }
        return .success(BudgetCharge(uid: uid, kind: kind, bytes: bytes))
    }

    /// Adds `bytes` to an existing charge; the errno if over the memory budget (logged).
    func grow(_ charge: inout BudgetCharge, bytes: Int, pid: Int32) -> Int32? {
        guard bytes > 0 else { return nil }
        if let r = budgets.grow(uid: charge.uid, bytes: bytes) {
            refused(r, uid: charge.uid, pid: pid)
            return r.errno
        }
        charge.bytes += bytes
        return nil
    }

    func give(_ charge: BudgetCharge?) {
        guard let c = charge else { return }
        budgets.give(uid: c.uid, kind: c.kind, bytes: c.bytes)
    }

    /// nil: stay quiet; else log now (the value: lines suppressed since the last one). For other
    /// lines a client can provoke at will, too (fd exhaustion while accepting).
    func admitLog(_ key: String) -> UInt64? { throttle.admit(key) }

    func refused(_ r: UserBudgets.Refusal, uid: UInt32, pid: Int32) {
        guard let suppressed = throttle.admit("\(r.key)-\(uid)") else { return }
        logger.warning("uid \(uid) is over its budget \(r.key)=\(r.limit): refusing with errno \(r.errno)",
                       metadata: ["network": "\(network)", "pid": "\(pid)", "suppressed": "\(suppressed)"])
    }
}
