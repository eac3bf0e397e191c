import CShims
import CZTRPC
import NetStack
import PhyLoop
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

typealias LoopSocket = PhySocket<LoopContext>

/// Identity of an intercepted socket: (st_dev, st_ino) of the app's end (ztrpc.h "Identity").
struct FDKey: Hashable, CustomStringConvertible {
    var dev: UInt64
    var ino: UInt64
    var description: String { "\(dev):\(ino)" }

    /// fstat of `fd`; nil if it is not an open fd.
    static func of(_ fd: Int32) -> FDKey? {
        var d: UInt64 = 0, i: UInt64 = 0
        guard cshim_fd_identity(fd, &d, &i) == 0 else { return nil }
        return FDKey(dev: d, ino: i)
    }
}

/// One intercepted TCP socket: the app's fd (identified by its inode) on one side, a NetStack
/// TCP socket (connection or listener) on the other. `TCPBridge` moves its bytes.
final class Connection {
    /// Where the socket is in its life.
    enum Phase: Equatable {
        case unbound
        case bound
        /// SYN sent; RPCs asking for the outcome wait in `waiters`.
        case connecting
        /// Established (stack handle live).
        case connected
        case listening
        /// The app closed its end: what it wrote goes on to the stack, then the FIN. No app can
        /// name it any more (its inode may be reused); it is found through its stack handle.
        case draining
        /// The stack finished (FIN both ways, or TIME-WAIT) while its receive ring still holds
        /// bytes for the app: the handle stays until they are delivered.
        case closing
        /// Over: the app reads EOF; `pendingError` says why (SO_ERROR).
        case closed
    }

    /// App → network half.
    enum Outbound: Equatable {
        case open
        /// The app shut down writing: FIN queued, its end is not read any more.
        case finQueued
    }

    /// Network → app half.
    enum Inbound: Equatable {
        case open
        /// The stack's FIN was passed on (our end shut down for writing: the app reads EOF).
        case eofDelivered
        /// The app no longer reads (SHUT_RD or closed): received bytes are dropped.
        case discarding
    }

    /// Received bytes were dropped unread (the app shut down reading or closed its end): its
    /// close is then answered with a reset, as Linux's close with unread data is.
    var droppedInput = false
    var key: FDKey
    let pid: Int32
    let uid: UInt32
    /// The app shut down reading (the library says so before its native shutdown, ZTRPC_ZT_SHUTDOWN):
    /// a hang-up of our end may then be its shutdown(SHUT_RDWR) rather than its close, so the
    /// socket keeps its name (retired, not forgotten) when the connection ends.
    var appShutRead = false
    /// The app's socket family (AF_INET or AF_INET6) and its IPV6_V6ONLY: what the addresses it
    /// may use are, and how the library shows them.
    var family: Int32 = AF_INET
    var v6Only = false
    var phase: Phase = .unbound
    /// Linux's SS_CONNECTED: a CONNECT was answered 0 (a blocking one's success, or the repeated
    /// one after a non-blocking connect succeeded) or the socket was accepted. Such a socket
    /// answers every later CONNECT EISCONN, even once its connection is over; one never reported
    /// connected answers with the connection's error (or ECONNABORTED) and is unconnected again.
    var reportedConnected = false
    var outbound: Outbound = .open
    var inbound: Inbound = .open
    var handle: SocketHandle?
    var local: IPEndpoint?
    var remote: IPEndpoint?
    /// Daemon end of the data socketpair, or of the accept channel once listening.
    var data: LoopSocket?
    /// The port this socket holds in the stack's port table (bound or listening sockets).
    var binding: PortTable.Binding?
    /// An explicit bind given up while the socket has no pair (a lingering name, whose close
    /// cannot be seen): a RENEW takes the address again.
    var parkedBind: IPEndpoint?
    /// errno for SO_ERROR (0 = none); cleared when reported.
    var pendingError: Int32 = 0
    /// The connection as it was when its stack handle went while the socket stays nameable
    /// (state CLOSED): TCP_INFO and the options go on showing its MSS, scaling and options, as
    /// Linux's socket in CLOSE does.
    var closedInfo: TCPSocketInfo?
    var waiters: [Waiter] = []
    var options = SocketOptions()
    var backlog: Int32 = 0
    /// A non-blocking connect's app end, held unwritable until the outcome (ztrpc.h, CONNECT).
    var plug: Plug?
    /// Accepted connections whose app end could not be sent yet (the app is not accepting).
    var undelivered: [(conn: Connection, appEnd: Int32)] = []
    /// Listener: at least as many accept messages as wait in its channel (AcceptChannel's
    /// `unaccepted`): the count when last measured plus those sent since.
    var channelBound = 0
    /// Listener: connections sent over the accept channel lately (bounded), which may still sit
    /// unaccepted in the channel when the listener closes.
    var recentlyDelivered: [Connection] = []
    /// Its listener closed while it may not have been accepted yet: a close of its app end before
    /// this instant, with nothing written, is that (Linux resets such connections).
    var orphanedUntil: Instant?
    /// The listener whose accept channel carried it (a hang-up of both at once: never accepted).
    weak var deliveredBy: Connection?
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0
    /// The one-way batch (`TCPBridge.oneWayBatch`) in which a toggle last read what the app had
    /// written: one read per batch takes all that came before any toggle in it.
    var pumpedInBatch: UInt64 = 0
    /// Our end's send buffer grew once for the peer's urgent byte (`TCPBridge.sendUrgent`).
    var urgentRoomGiven = false
    /// Reads after a short read that found the app's socket empty (`TCPBridge.readOnLimit`).
    var emptyReadOns: UInt8 = 0
    /// `SocketLoop.polls` when reads last emptied the app's socket: a readiness reported by
    /// that same epoll_wait is stale (`TCPBridge.readable`).
    var drainedInPoll: UInt64 = 0
    /// Made by ztctl run's seccomp supervisor (ZTRPC_F_SECCOMP) rather than the LD_PRELOAD library.
    var seccomp = false
    /// What it holds of its owner's budgets (UserBudgets); given back by `TCPBridge.remove`.
    var charge: BudgetCharge?
    /// The part of `charge` the stack's autotuning added to the rings (TCPBudget.swift).
    var tunedRingBytes = 0

    /// Names it in a one-way SETSOCKOPT instead of its fd (ztrpc.h "References").
    let secret = Secrets.next()

    init(key: FDKey, pid: Int32, uid: UInt32) {
        self.key = key
        self.pid = pid
        self.uid = uid
    }

    var isConnected: Bool { if case .connected = phase { return true } else { return false } }

    /// What the port table needs to know about sharing this socket's port.
    var portOptions: PortTable.Options {
        PortTable.Options(reuseAddress: options.reuseAddr, reusePort: options.reusePort, uid: uid, v6Only: v6Only)
    }

    /// Shown while the stack has no socket for it (or none yet).
    var displayState: String {
        switch phase {
        case .unbound: "UNBOUND"
        case .bound: "BOUND"
        case .connecting: "SYN-SENT"
        case .connected, .draining: "ESTABLISHED"
        case .listening: "LISTEN"
        case .closing, .closed: "CLOSED"
        }
    }

    var wireState: UInt8 {
        switch phase {
        case .unbound: ZTRPC_STATE_UNBOUND
        case .bound: ZTRPC_STATE_BOUND
        case .connecting: ZTRPC_STATE_CONNECTING
        case .connected, .draining: ZTRPC_STATE_CONNECTED
        case .listening: ZTRPC_STATE_LISTENING
        case .closing, .closed: ZTRPC_STATE_CLOSED
        }
    }

    var info: ztrpc_sockinfo {
        let showsPeer: Bool
        switch phase {
        case .connected, .draining, .closing, .closed: showsPeer = true
        default: showsPeer = false
        }
        return ztrpc_sockinfo(proto: IPProtocol.tcp, state: wireState, shut: 0, family: UInt8(family),
                              backlog: phase == .listening ? backlog : 0, local: Wire.addr(local),
                              peer: showsPeer ? Wire.addr(remote) : ztrpc_addr(), flags: v6Only ? ZTRPC_SI_V6ONLY : 0,
                              secret: Wire.secret(secret), reserved: 0, dev: key.dev, ino: key.ino)
    }
}

/// The app end of a connecting socket, made unwritable by the library: `filler` bytes wait in
/// our end, and the app end's SO_SNDBUF is to be restored to `sndbuf` (setsockopt's value).
struct Plug {
    var appEnd: Int32
    var filler: Int
    var sndbuf: Int32
    /// When the plug was taken (PlugOwners looks at the owner only after a grace time).
    var since: Instant
}

/// One intercepted UDP socket: a NetStack UDP socket and the daemon end of a SEQPACKET pair
/// carrying `ztrpc_dgram` + payload per message.
final class UDPConnection {
    var key: FDKey
    let pid: Int32
    let uid: UInt32
    /// nil after connect(AF_UNSPEC) released an automatically chosen port (Linux unhashes the
    /// socket: it shows port 0 and receives nothing); the next send or connect takes a new one.
    var handle: SocketHandle?
    /// The address the socket was bound to (the wildcard unless the app bound one), kept when the
    /// port is released; and whether the app chose the port (then it is never released).
    var boundAddress: IPAddress = .v4Any
    var portChosen = false
    var family: Int32 = AF_INET
    var v6Only = false
    var data: LoopSocket?
    var options = SocketOptions()
    /// The app's end stopped reading (EPIPE): datagrams for it are dropped, the socket stays.
    var appReadClosed = false
    /// ZTRPC_SHUT_* bits of the app's shutdown() calls (the library enforces them).
    var shut: UInt8 = 0
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0
    var dropped: UInt64 = 0
    /// Made by ztctl run's seccomp supervisor (ZTRPC_F_SECCOMP) rather than the LD_PRELOAD library.
    var seccomp = false
    /// Oversized datagrams from the app (longer than a UDP datagram can be), dropped whole.
    var oversized: UInt64 = 0
    /// What it holds of its owner's budgets; given back by `UDPBridge.remove`.
    var charge: BudgetCharge?

    init(key: FDKey, pid: Int32, uid: UInt32, handle: SocketHandle) {
        self.key = key
        self.pid = pid
        self.uid = uid
        self.handle = handle
    }
}

extension ztrpc_sock_req {
    /// Made by the seccomp supervisor on behalf of a traced process (ZTRPC_F_SECCOMP).
    var fromSeccomp: Bool { flags & ZTRPC_F_SECCOMP != 0 }
    /// An AF_INET6 socket with IPV6_V6ONLY (ZTRPC_F_V6ONLY).
    var v6Only: Bool { flags & ZTRPC_F_V6ONLY != 0 && Wire.family(self) == AF_INET6 }
    /// The wildcard of the socket's family: 0.0.0.0, or :: (both families unless `v6Only`).
    var wildcard: IPEndpoint { IPEndpoint(Wire.family(self) == AF_INET6 ? IPAddress.v6Any : IPAddress.v4Any, 0) }

    /// Why a socket of this family cannot use `a` (the errno Linux gives), or nil: an AF_INET
    /// socket takes only IPv4 (EAFNOSUPPORT); an IPV6_V6ONLY one no IPv4 (`mapped`: the errno
    /// for a v4-mapped address in that call).
    func familyError(_ a: IPAddress, mapped: Int32) -> Int32? {
        if Wire.family(self) == AF_INET { return a.isV4 ? nil : EAFNOSUPPORT }
        return v6Only && a.isV4 ? mapped : nil
    }
    /// The pid to show for a new socket: the traced process's (informational) or the RPC peer's.
    func ownerPID(peer: Int32) -> Int32 { fromSeccomp && pid > 0 ? pid : peer }
}
