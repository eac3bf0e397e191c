/// Identity of a stack socket handed to the driver. `index` addresses the socket table slot;
/// `generation` makes a stale handle (slot reused after close) detectable.
///
/// One handle space for both protocols: NetStack's UDP sockets set the top bit of `index`
/// (`SocketHandle.udpFlag`, `isUDP`); TCPLayer only hands out indices below 2^31.
public struct SocketHandle: Hashable, Sendable, CustomStringConvertible {
    public var index: UInt32
    public var generation: UInt32
    @inlinable public init(index: UInt32, generation: UInt32) { self.index = index; self.generation = generation }
    public var description: String { "sock#\(index).\(generation)" }
}

/// Why a socket operation failed or a connection ended; mirrors the errno an app should see.
public enum SocketError: Error, Hashable, Sendable {
    case connectionRefused      // ECONNREFUSED: RST in answer to our SYN
    case connectionReset        // ECONNRESET
    case timedOut               // ETIMEDOUT: retransmissions or keepalive exhausted
    case hostUnreachable        // EHOSTUNREACH: ARP never resolved
    case networkUnreachable     // ENETUNREACH: no route/interface address
    case addressInUse           // EADDRINUSE
    case addressNotAvailable    // EADDRNOTAVAIL
    case invalidState           // EINVAL / ENOTCONN / EISCONN as fits the call
    case notConnected           // ENOTCONN
    case messageTooLong         // EMSGSIZE
    case noBufferSpace          // ENOBUFS
    case wouldBlock             // EAGAIN
    case invalidHandle          // EBADF: stale or unknown handle
}

extension SocketError {
    /// The error an ICMP destination unreachable (RFC 792/1122 codes) means for a socket, as
    /// Linux maps it; nil for "fragmentation needed" (4), which is no reason to fail.
    init?(unreachableCode code: UInt8) {
        switch code {
        case 2, 3: self = .connectionRefused          // protocol / port unreachable
        case 0, 6, 9, 11: self = .networkUnreachable  // net unreachable / unknown / prohibited / TOS
        case 4: return nil
        default: self = .hostUnreachable
        }
    }
}

/// What the stack tells its driver about a socket. Drained by the driver after `receive`/`poll`.
public enum SocketEvent: Hashable, Sendable {
    /// New bytes (or a datagram, or the peer's FIN) are waiting in the receive buffer.
    case readable(SocketHandle)
    /// Send-buffer space became available after being full.
    case writable(SocketHandle)
    /// An active open completed (SYN-SENT -> ESTABLISHED).
    case connected(SocketHandle)
    /// A listener has at least one established connection waiting to be accepted.
    case acceptable(SocketHandle)
    /// The connection ended with an error (refused, reset, timed out, unreachable).
    case failed(SocketHandle, SocketError)
    /// The socket reached CLOSED (or TIME-WAIT handed off) and its handle may be released.
    case closed(SocketHandle)
}

/// Sends a finished L4 packet as an IPv4 datagram. Implemented by the interface (which adds the
/// IPv4 and Ethernet headers, resolves the next hop by ARP and hands the frame to the link), and
/// by fakes in tests.
public protocol IPv4Transmitter {
    /// Largest L4 packet (bytes after the IPv4 header) that fits the link MTU towards `dst`.
    func maxPayload(to dst: IPv4Address) -> Int
    /// Lets `fill` write up to `capacity` bytes of L4 packet into a buffer inside the outgoing
    /// frame (no copy), then sends it from `src` to `dst` with IP protocol `proto`. `fill`
    /// returns the number of bytes written (0 = send nothing). Returns false when nothing
    /// could be sent (no route, neighbor unresolved and queue full).
    @discardableResult
    func transmit(src: IPv4Address, dst: IPv4Address, proto: UInt8, capacity: Int,
                  _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool
    /// Largest TCP super-segment (header + payload) `transmitTCP` may be given towards `dst`
    /// for the link to cut into `segmentSize` pieces (TSO); 0 when it cannot (the default).
    func segmentationLimit(to dst: IPv4Address) -> Int
    /// Sends one TCP segment: `header` (checksum left to the transmitter) and the payload in
    /// up to two pieces, e.g. regions of a send ring, which a transmitter that can gather never
    /// copies. The checksum is computed here, in the copy if there is one, or left to the
    /// kernel. A segment longer than `maxPayload` needs `segmentSize` (payload bytes per wire
    /// segment) and a `segmentationLimit` that holds it. Returns like `transmit`.
    @discardableResult
    func transmitTCP(src: IPv4Address, dst: IPv4Address, header: TCPHeaderRepr, payload: UnsafeRawBufferPointer,
                     _ more: UnsafeRawBufferPointer, segmentSize: Int, options: IPv4SendOptions) -> Bool
    /// `transmit` with the IPv4 header fields a socket chose (IP_TTL, IP_TOS). Transmitters that
    /// do not build the IPv4 header (test fakes) get the default, which ignores them.
    @discardableResult
    func transmit(src: IPv4Address, dst: IPv4Address, proto: UInt8, capacity: Int, options: IPv4SendOptions,
                  _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool
}

extension IPv4Transmitter {
    public func segmentationLimit(to dst: IPv4Address) -> Int { 0 }

    /// Copies header and payload into the frame `transmit` offers, summing as it copies.
    @discardableResult
    public func transmitTCP(src: IPv4Address, dst: IPv4Address, header: TCPHeaderRepr, payload: UnsafeRawBufferPointer,
                            _ more: UnsafeRawBufferPointer, segmentSize: Int, options: IPv4SendOptions) -> Bool {
        let hl = header.headerLength
        let total = hl &+ payload.count &+ more.count
        return transmit(src: src, dst: dst, proto: IPProtocol.tcp, capacity: total, options: options) { buf in
            guard buf.count >= total, let p = buf.baseAddress else { return 0 }
            header.emit(into: p)
            TCPHeaderRepr.fillChecksum(p, headerLength: hl, payload: payload, more, copy: true,
                                       source: src, destination: dst)
            return total
        }
    }

    @discardableResult
    public func transmit(src: IPv4Address, dst: IPv4Address, proto: UInt8, capacity: Int, options: IPv4SendOptions,
                         _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        transmit(src: src, dst: dst, proto: proto, capacity: capacity, fill)
    }
}

/// Per-socket IPv4 header fields of outgoing datagrams.
public struct IPv4SendOptions: Sendable, Hashable {
    public var timeToLive: UInt8
    /// The whole TOS byte (DSCP and ECN bits).
    public var typeOfService: UInt8
    public init(timeToLive: UInt8 = 64, typeOfService: UInt8 = 0) {
        self.timeToLive = timeToLive
        self.typeOfService = typeOfService
    }
    public static let standard = IPv4SendOptions()
}

/// Deterministic randomness source (initial sequence numbers, ephemeral ports, SYN cookie
/// secrets, CUBIC jitter...). Tests inject a seeded one.
public protocol RandomSource {
    mutating func next() -> UInt64
}

/// xorshift64* — a small, fast, seedable generator. Seed it from the OS in the daemon.
public struct XorShiftRandom: RandomSource, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    public mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

public enum IPProtocol {
    public static let icmp: UInt8 = 1
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
}
