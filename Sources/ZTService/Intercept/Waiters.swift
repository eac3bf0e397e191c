import CShims
import NetStack

/// A blocking CONNECT whose answer waits for the connect's outcome.
final class Waiter {
    let socket: LoopSocket
    let header: RPCHeader
    /// The connection whose outcome it waits for (the cycle ends when the waiter is answered).
    let connection: Connection
    /// The CONNECT created the socket (ZTRPC_F_NEW): on failure the app keeps its kernel socket.
    let newSocket: Bool

    init(socket: LoopSocket, header: RPCHeader, connection: Connection, newSocket: Bool) {
        self.socket = socket
        self.header = header
        self.connection = connection
        self.newSocket = newSocket
    }
}
