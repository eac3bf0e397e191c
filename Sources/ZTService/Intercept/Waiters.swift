import CShims
import NetStack
import SystemPackage

/// An RPC request whose answer waits for a connect outcome (blocking CONNECT, SO_ERROR on a
/// pending connect) or for the ~5 ms a non-blocking CONNECT may take.
final class Waiter {
    enum Kind: Equatable { case connect(nonblocking: Bool), soError }
    let socket: LoopSocket
    let header: RPCHeader
    let kind: Kind
    /// Non-blocking CONNECT: answer EINPROGRESS at this instant if still pending.
    let deadline: Instant?
    /// The connection whose outcome it waits for (the cycle ends when the waiter is answered).
    let connection: Connection

    init(socket: LoopSocket, header: RPCHeader, kind: Kind, deadline: Instant?, connection: Connection) {
        self.socket = socket
        self.header = header
        self.kind = kind
        self.deadline = deadline
        self.connection = connection
    }
}

/// The waiters with a deadline, earliest first (few at a time: non-blocking CONNECTs in their
/// first milliseconds).
struct WaiterDeadlines {
    private(set) var waiters: [Waiter] = []

    var isEmpty: Bool { waiters.isEmpty }
    var next: Instant? { waiters.lazy.compactMap(\.deadline).min() }

    mutating func add(_ w: Waiter) {
        guard w.deadline != nil else { return }
        waiters.append(w)
    }

    mutating func remove(_ w: Waiter) { waiters.removeAll { $0 === w } }

    /// Removes and returns the waiters due at `now`.
    mutating func takeDue(now: Instant) -> [Waiter] {
        guard waiters.contains(where: { $0.deadline! <= now }) else { return [] }
        let due = waiters.filter { $0.deadline! <= now }
        waiters.removeAll { $0.deadline! <= now }
        return due
    }
}
