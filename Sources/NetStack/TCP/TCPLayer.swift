/// TCP layer skeleton (API only; implementation follows).
public final class TCPLayer {
    public let config: TCPConfig
    var random: any RandomSource
    var events: [SocketEvent] = []

    public init(config: TCPConfig, random: some RandomSource) {
        self.config = config
        self.random = random
        events.reserveCapacity(256)
    }

    public func receive(src: IPv4Address, dst: IPv4Address, segment: UnsafeRawBufferPointer, now: Instant,
                        tx: some IPv4Transmitter) {}
    public func poll(now: Instant, tx: some IPv4Transmitter) -> Instant? { nil }
    public func drainEvents(_ body: (SocketEvent) -> Void) {
        for e in events { body(e) }
        events.removeAll(keepingCapacity: true)
    }
    public func listen(local: IPv4Endpoint, backlog: Int) throws(SocketError) -> SocketHandle { throw .invalidState }
    public func connect(local: IPv4Endpoint, remote: IPv4Endpoint, now: Instant) throws(SocketError) -> SocketHandle {
        throw .invalidState
    }
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
    public func setOption(_ h: SocketHandle, _ o: TCPOption) throws(SocketError) {}
    public func info(_ h: SocketHandle) -> TCPSocketInfo? { nil }
    public func localEndpoint(_ h: SocketHandle) -> IPv4Endpoint? { nil }
    public func remoteEndpoint(_ h: SocketHandle) -> IPv4Endpoint? { nil }
    public var connectionCount: Int { 0 }
    public func forEachConnection(_ body: (SocketHandle?, TCPSocketInfo) -> Void) {}
}
