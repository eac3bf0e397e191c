import CZTRPC
import NetStack
import PhyLoop

typealias LoopSocket = PhySocket<NetworkLoop.Context>

/// An RPC request whose answer waits for a connect outcome (blocking CONNECT, SO_ERROR on a
/// pending connect) or for the ~5 ms a non-blocking CONNECT may take.
final class Waiter {
    enum Kind { case connect(nonblocking: Bool), soError }
    let socket: LoopSocket
    let op: UInt16
    let id: UInt32
    let kind: Kind
    /// Non-blocking CONNECT: answer EINPROGRESS at this instant if still pending.
    let deadline: Instant?
    init(socket: LoopSocket, op: UInt16, id: UInt32, kind: Kind, deadline: Instant?) {
        self.socket = socket; self.op = op; self.id = id; self.kind = kind; self.deadline = deadline
    }
}

/// One intercepted TCP socket: the app's fd (identified by its inode) on one side, a NetStack
/// TCP socket (connection or listener) on the other. Bytes are moved by `InterceptHub`.
final class Connection {
    enum State: Equatable {
        case unbound, bound, connecting, connected, listening, closed

        /// Shown while the stack has no socket for it (or none yet).
        var displayName: String {
            switch self {
            case .unbound: "UNBOUND"
            case .bound: "BOUND"
            case .connecting: "SYN-SENT"
            case .connected: "ESTABLISHED"
            case .listening: "LISTEN"
            case .closed: "CLOSED"
            }
        }
    }

    var key: FDKey
    let pid: Int32
    let uid: UInt32
    var state: State = .unbound
    var handle: SocketHandle?
    var local: IPv4Endpoint?
    var remote: IPv4Endpoint?
    /// Daemon end of the data socketpair, or of the accept channel once listening.
    var data: LoopSocket?
    /// The port this socket holds in the hub's bind table (bound or listening sockets).
    var reservation: IPv4Endpoint?
    /// errno for SO_ERROR (0 = none); cleared when reported.
    var pendingError: Int32 = 0
    var waiters: [Waiter] = []
    /// A successful connect already answered 0 once: later CONNECTs get EISCONN.
    var connectReported = false
    var options = SocketOptions()
    var backlog: Int32 = 0
    /// The app shut down its write side: FIN queued, its end is not read any more.
    var appEOF = false
    /// The stack's FIN was passed on (our end shut down for writing).
    var finDelivered = false
    /// The app no longer reads (SHUT_RD or closed): received bytes are dropped.
    var appReadClosed = false
    /// Reads from the app are paused because the stack's send buffer is full.
    var readPaused = false
    /// Writes to the app blocked: waiting for the app end to drain.
    var writeBlocked = false
    /// The TCP connection closed while its receive ring still held bytes for the app.
    var closingWithInput = false
    /// Accepted connections whose app end could not be sent yet (the app is not accepting).
    var undelivered: [(conn: Connection, appEnd: Int32)] = []
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0

    init(key: FDKey, pid: Int32, uid: UInt32) {
        self.key = key
        self.pid = pid
        self.uid = uid
    }

    var wireState: UInt8 {
        switch state {
        case .unbound: return ZTRPC_STATE_UNBOUND
        case .bound: return ZTRPC_STATE_BOUND
        case .connecting: return ZTRPC_STATE_CONNECTING
        case .connected: return ZTRPC_STATE_CONNECTED
        case .listening: return ZTRPC_STATE_LISTENING
        case .closed: return ZTRPC_STATE_CLOSED
        }
    }

    var info: ztrpc_sockinfo {
        ztrpc_sockinfo(proto: IPProtocol.tcp, state: wireState, reserved0: 0,
                       backlog: state == .listening ? backlog : 0, local: Wire.addr(local),
                       peer: state == .connected || state == .closed ? Wire.addr(remote) : ztrpc_addr())
    }
}

/// One intercepted UDP socket: a NetStack UDP socket and the daemon end of a SEQPACKET pair
/// carrying `ztrpc_dgram` + payload per message.
final class UDPConnection {
    var key: FDKey
    let pid: Int32
    let uid: UInt32
    let handle: SocketHandle
    var data: LoopSocket?
    var options = SocketOptions()
    /// The app's end stopped reading (EPIPE): datagrams for it are dropped, the socket stays.
    var appReadClosed = false
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0
    var dropped: UInt64 = 0

    init(key: FDKey, pid: Int32, uid: UInt32, handle: SocketHandle) {
        self.key = key
        self.pid = pid
        self.uid = uid
        self.handle = handle
    }
}
