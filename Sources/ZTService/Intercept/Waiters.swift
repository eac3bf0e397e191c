import CShims
import NetStack

/// A blocking CONNECT whose answer waits for the connect's outcome.
final class Waiter {
    let socket: LoopSocket
    let header: RPCHeader
    /// The connection whose outcome it waits for (the cycle ends when the waiter is answered).
    let connection: Connection

    init(socket: LoopSocket, header: RPCHeader, connection: Connection) {
        self.socket = socket
        self.header = header
        self.connection = connection
    }
}
