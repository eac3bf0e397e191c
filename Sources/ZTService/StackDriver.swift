import Logging
import NetStack
import ZTControl

/// Everything a network's stack needs to know, derived from its config; Sendable so the main
/// thread can hand it to the network thread.
struct StackSettings: Sendable, Equatable {
    var stackMAC: MACAddress
    var mtu: Int
    var addresses: [IPv4CIDR]
    var gateway: IPv4Address?
    var services: [String]
    var tcpReceiveBuffer: Int
    var tcpSendBuffer: Int
    var maxConnections: Int
}

struct NetworkStats: Sendable {
    var framesIn: UInt64 = 0
    var framesOut: UInt64 = 0
    var framesDropped: UInt64 = 0
    var connections: Int = 0
}

/// Writes frames to the TAP. A full TAP queue drops the frame, as a NIC would; TCP recovers.
final class TapSink {
    let fd: Int32
    var framesOut: UInt64 = 0
    var dropped: UInt64 = 0
    init(fd: Int32) { self.fd = fd }
    func sendFrame(_ frame: UnsafeRawBufferPointer) {
        let n = Glibc.write(fd, frame.baseAddress, frame.count)
        if n == frame.count { framesOut &+= 1 } else { dropped &+= 1 }
    }
}

/// The seam between a network loop (TAP fd, client sockets, timers) and the stack that answers
/// the frames. The loop owns the I/O; the driver owns protocol state.
protocol StackDriver: AnyObject {
    func start(now: Instant)
    func receive(frame: UnsafeRawBufferPointer, now: Instant)
    /// Runs due timers; returns the next deadline.
    func poll(now: Instant) -> Instant?
    func reconfigure(_ settings: StackSettings, now: Instant)
    var stats: NetworkStats { get }
    func connections(network: String) -> [ConnectionInfo]
}

#if canImport(Glibc)
import Glibc
#endif

/// A driver that answers nothing: frames are counted and dropped. Used until a stack is attached.
final class NullStackDriver: StackDriver {
    private var s = NetworkStats()
    func start(now: Instant) {}
    func receive(frame: UnsafeRawBufferPointer, now: Instant) { s.framesIn &+= 1 }
    func poll(now: Instant) -> Instant? { nil }
    func reconfigure(_ settings: StackSettings, now: Instant) {}
    var stats: NetworkStats { s }
    func connections(network: String) -> [ConnectionInfo] { [] }
}

func makeStackDriver(settings: StackSettings, tapFD: Int32, logger: Logger) -> StackDriver {
    NullStackDriver()
}
