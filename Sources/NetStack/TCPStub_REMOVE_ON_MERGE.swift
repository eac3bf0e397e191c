// Temporary stand-in for wt-nstcp's TCPLayer (API text from the task); deleted when merging.
public enum CongestionControl: Sendable { case newReno, cubic }
public struct TCPConfig: Sendable {
    public var receiveBufferSize = 4 << 20, sendBufferSize = 4 << 20, mssDefault = 536
    public var congestionControl: CongestionControl = .cubic
    public var noDelay = false
    public init() {}
}
public enum TCPState: String, Sendable { case closed, listen, synSent, synReceived, established, finWait1, finWait2, closeWait, closing, lastAck, timeWait }
public final class TCPLayer {
    public init(config: TCPConfig, random: some RandomSource) {}
    public func receive(src: IPv4Address, dst: IPv4Address, segment: UnsafeRawBufferPointer, now: Instant, tx: some IPv4Transmitter) {}
    public func poll(now: Instant, tx: some IPv4Transmitter) -> Instant? { nil }
    public func drainEvents(_ body: (SocketEvent) -> Void) {}
    public func listen(local: IPv4Endpoint, backlog: Int) throws(SocketError) -> SocketHandle { SocketHandle(index: 0, generation: 0) }
    public func connect(local: IPv4Endpoint, remote: IPv4Endpoint, now: Instant) throws(SocketError) -> SocketHandle { SocketHandle(index: 0, generation: 0) }
    public func accept(_ listener: SocketHandle) throws(SocketError) -> SocketHandle? { nil }
    public func send(_ h: SocketHandle, _ bytes: UnsafeRawBufferPointer) throws(SocketError) -> Int { 0 }
    public func receive(_ h: SocketHandle, into: UnsafeMutableRawBufferPointer) throws(SocketError) -> Int { 0 }
    public func sendBuffer(_ h: SocketHandle) -> RingBuffer? { nil }
    public func commitSend(_ h: SocketHandle, _ n: Int) {}
    public func receiveBuffer(_ h: SocketHandle) -> RingBuffer? { nil }
    public func consume(_ h: SocketHandle, _ n: Int) {}
    public func isPeerClosed(_ h: SocketHandle) -> Bool { false }
    public func shutdownWrite(_ h: SocketHandle) throws(SocketError) {}
    public func close(_ h: SocketHandle) {}
    public func abort(_ h: SocketHandle) {}
    public func release(_ h: SocketHandle) {}
}
