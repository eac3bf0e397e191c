/// UDP socket table (RFC 768, socket semantics after Linux): demultiplexing by local port and
/// address, connect as an input filter and default destination, and per-socket bounded receive
/// queues. Which ports may be bound (EADDRINUSE, ephemeral ports) is the interface's
/// `PortTable`'s business: every socket here holds a binding from it. Each socket's queue is one byte ring (`udpQueueBytes`) plus a fixed ring of datagram
/// records (`udpQueueDatagrams`), both allocated at open, so input never allocates.
///
/// Handles: UDP handles have `SocketHandle.udpFlag` set in `index`; TCPLayer's never do (see
/// Core/Socket.swift), so one handle space serves the driver for both protocols.
final class UDPSocket {
    var generation: UInt32
    let binding: PortTable.Binding
    var local: IPEndpoint { binding.local }
    var remote: IPEndpoint?
    /// Internal diagnostic-service socket: input is answered inline, never queued or reported.
    let isService: Bool
    let data: RingBuffer
    var metaFrom: [IPEndpoint]
    var metaLength: [Int]
    var metaHead = 0
    var metaCount = 0
    /// An ICMP error for a connected socket (Linux's sk_err), reported once by the next receive.
    var pendingError: SocketError?
    /// IP_TTL / IP_TOS of the datagrams it sends.
    var ipOptions = IPSendOptions.standard

    init(generation: UInt32, binding: PortTable.Binding, isService: Bool, queueDatagrams: Int, queueBytes: Int) {
        self.generation = generation
        self.binding = binding
        self.isService = isService
        let d = isService ? 1 : max(1, queueDatagrams)
        data = RingBuffer(capacity: isService ? 1 : max(1, queueBytes))
        metaFrom = Array(repeating: IPEndpoint(IPAddress.v4Any, 0), count: d)
        metaLength = Array(repeating: 0, count: d)
    }

    /// Queues one datagram; false if either bound would be exceeded.
    func push(_ payload: UnsafeRawBufferPointer, from: IPEndpoint) -> Bool {
        guard metaCount < metaFrom.count, payload.count <= data.free else { return false }
        if let p = payload.baseAddress { data.enqueue(p, count: payload.count) }
        var i = metaHead &+ metaCount
        if i >= metaFrom.count { i &-= metaFrom.count }
        metaFrom[i] = from
        metaLength[i] = payload.count
        metaCount &+= 1
        return true
    }

    /// Copies the oldest datagram into `into` (truncating like recvfrom) and drops it.
    func pop(into: UnsafeMutableRawBufferPointer) -> (count: Int, length: Int, from: IPEndpoint)? {
        guard metaCount > 0 else { return nil }
        let len = metaLength[metaHead], from = metaFrom[metaHead]
        let n = min(len, into.count)
        if n > 0, let dst = into.baseAddress { data.peek(into: dst, count: n) }
        data.discard(len)
        metaHead &+= 1
        if metaHead == metaFrom.count { metaHead = 0 }
        metaCount &-= 1
        return (n, len, from)
    }

    var nextLength: Int? { metaCount > 0 ? metaLength[metaHead] : nil }
}

final class UDPSocketTable {
    private(set) var slots: [UDPSocket?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int] = []
    /// port -> slots bound to it (usually one).
    private var byPort: [UInt16: [Int]] = [:]
    let maxSockets = 1 << 16

    func socket(_ h: SocketHandle) -> UDPSocket? {
        guard h.isUDP else { return nil }
        let i = Int(h.index & ~SocketHandle.udpFlag)
        guard i < slots.count, let s = slots[i], s.generation == h.generation else { return nil }
        return s
    }

    /// A socket on `binding` (already taken in the port table; the caller releases it when the
    /// socket closes, or when this throws).
    func open(binding: PortTable.Binding, isService: Bool, queueDatagrams: Int, queueBytes: Int) throws(SocketError)
        -> SocketHandle {
        let local = binding.local
        let i: Int
        if let f = freeSlots.popLast() {
            i = f
        } else {
            guard slots.count < maxSockets else { throw .noBufferSpace }
            slots.append(nil)
            generations.append(0)
            i = slots.count &- 1
        }
        generations[i] &+= 1
        let s = UDPSocket(generation: generations[i], binding: binding, isService: isService,
                          queueDatagrams: queueDatagrams, queueBytes: queueBytes)
        slots[i] = s
        byPort[local.port, default: []].append(i)
        return SocketHandle(index: UInt32(i) | SocketHandle.udpFlag, generation: s.generation)
    }

    func close(_ h: SocketHandle) -> UDPSocket? {
        guard let s = socket(h) else { return nil }
        let i = Int(h.index & ~SocketHandle.udpFlag)
        slots[i] = nil
        freeSlots.append(i)
        if var list = byPort[s.local.port] {
            list.removeAll { $0 == i }
            byPort[s.local.port] = list.isEmpty ? nil : list
        }
        return s
    }

    /// Best socket for a datagram: exact local address beats wildcard, connected beats
    /// unconnected; connected sockets only accept their peer. A wildcard takes its own family
    /// (`::` IPv4 too unless IPV6_V6ONLY, see `PortTable.Binding.accepts`). Among equals the
    /// last bound wins, as on Linux (SO_REUSEADDR: udp_lib_get_port adds at the chain's head).
    @inline(__always)
    func lookup(dst: IPEndpoint, src: IPEndpoint) -> (UDPSocket, SocketHandle)? {
        guard let list = byPort[dst.port] else { return nil }
        var best: (UDPSocket, SocketHandle)?
        var bestScore = -1
        for i in list {
            guard let s = slots[i] else { continue }
            var score = 0
            if !s.local.address.isUnspecified {
                guard s.local.address == dst.address else { continue }
                score &+= 2
            } else if !s.binding.accepts(dst.address) {
                continue
            }
            if let r = s.remote {
                guard r == src else { continue }
                score &+= 1
            }
            if score >= bestScore {
                bestScore = score
                best = (s, SocketHandle(index: UInt32(i) | SocketHandle.udpFlag, generation: s.generation))
            }
        }
        return best
    }

    func forEach(_ body: (SocketHandle, UDPSocket) -> Void) {
        for (i, s) in slots.enumerated() {
            if let s { body(SocketHandle(index: UInt32(i) | SocketHandle.udpFlag, generation: s.generation), s) }
        }
    }
}

extension SocketHandle {
    /// Set in `index` for UDP sockets of NetStack; TCPLayer handles never use this bit.
    public static let udpFlag: UInt32 = 0x8000_0000
    @inlinable public var isUDP: Bool { index & Self.udpFlag != 0 }
}
