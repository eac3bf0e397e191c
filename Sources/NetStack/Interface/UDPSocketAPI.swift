/// The UDP socket API of a NetStack interface (sockets in `UDPSocketTable`, ports in the
/// interface's `PortTable`): open/close, connect as a filter and default destination, send
/// (fragmented above the MTU) and receive with recvfrom's truncation, and the ICMP errors a
/// connected socket learns.
extension NetStack {
    /// Largest UDP payload (65535 - 20 - 8); bigger sends fail with `.messageTooLong`. Sends
    /// bigger than the MTU are fragmented (not EMSGSIZE), like Linux without IP_PMTUDISC_DO.
    public static let udpMaxPayload = 65507

    /// ICMP destination unreachable about a datagram we sent: like Linux without IP_RECVERR,
    /// only a socket connected to that destination learns it (ECONNREFUSED for port
    /// unreachable), once, on its next receive.
    func udpUnreachable(code: UInt8, local: IPv4Endpoint, remote: IPv4Endpoint) {
        guard let e = SocketError(unreachableCode: code), let (s, h) = udp.lookup(dst: local, src: remote),
              !s.isService, s.remote == remote else { return }
        s.pendingError = e
        events.append(.readable(h))
    }

    /// The error an ICMP message left on a connected UDP socket, cleared as it is read.
    public func udpTakeError(_ h: SocketHandle) -> SocketError? {
        guard let s = udp.socket(h), let e = s.pendingError else { return nil }
        s.pendingError = nil
        return e
    }

    /// Opens a UDP socket bound to `local` (address `.any` or one of ours; port 0 = ephemeral)
    /// in the port table, with the sharing rules of `options` (see `PortTable`). Throws
    /// `.addressInUse` when the port is taken or no ephemeral port is free.
    public func udpOpen(local: IPv4Endpoint, options: PortTable.Options = .init()) throws(SocketError) -> SocketHandle {
        try openUDP(local: local, options: options, isService: false)
    }

    func openUDP(local: IPv4Endpoint, options: PortTable.Options = .init(), isService: Bool) throws(SocketError)
        -> SocketHandle {
        guard local.address.isUnspecified || isLocal(local.address) else { throw .addressNotAvailable }
        let b = try ports.bind(.udp, local, options: options)
        do throws(SocketError) {
            return try udp.open(binding: b, isService: isService, queueDatagrams: config.udpQueueDatagrams,
                                queueBytes: config.udpQueueBytes)
        } catch {
            ports.release(b)
            throw error
        }
    }

    /// Sets (or with nil clears) the default destination; a connected socket only receives from
    /// its peer.
    public func udpConnect(_ h: SocketHandle, remote: IPv4Endpoint?) throws(SocketError) {
        guard let s = udp.socket(h) else { throw .invalidHandle }
        guard let r = remote else { s.remote = nil; return }
        guard !r.address.isUnspecified, r.port != 0 else { throw .invalidState }
        guard route(r.address) != nil else { throw .networkUnreachable }
        s.remote = r
    }

    /// Sends one datagram to `to` (or the connected peer). Throws `.notConnected` without a
    /// destination, `.messageTooLong` above 65507 bytes, `.networkUnreachable` without a route.
    /// A datagram waiting for ARP that cannot be queued is dropped silently (counted), as in Linux.
    public func udpSend(_ h: SocketHandle, to: IPv4Endpoint?, _ payload: UnsafeRawBufferPointer, now: Instant) throws(SocketError) {
        self.now = now
        guard let s = udp.socket(h) else { throw .invalidHandle }
        guard let dst = to ?? s.remote else { throw .notConnected }
        guard dst.port != 0, !dst.address.isUnspecified else { throw .invalidState }
        guard payload.count <= Self.udpMaxPayload else { throw .messageTooLong }
        let src: IPv4Address
        if s.local.address.isUnspecified {
            guard let a = sourceAddress(for: dst.address) else { throw .networkUnreachable }
            src = a
        } else {
            src = s.local.address
        }
        try sendUDP(src: IPv4Endpoint(src, s.local.port), dst: dst, payload, ip: s.ipOptions)
    }

    /// IP_TTL / IP_TOS for the datagrams `h` sends.
    public func udpSetIPOptions(_ h: SocketHandle, _ o: IPv4SendOptions) throws(SocketError) {
        guard let s = udp.socket(h) else { throw .invalidHandle }
        s.ipOptions = o
    }

    func sendUDP(src: IPv4Endpoint, dst: IPv4Endpoint, _ payload: UnsafeRawBufferPointer,
                 ip: IPv4SendOptions = .standard) throws(SocketError) {
        var hdr: UInt64 = 0
        var result: SocketError?
        withUnsafeMutableBytes(of: &hdr) { h in
            let p = h.baseAddress.unsafelyUnwrapped
            UDPHeaderView.emit(into: p, sourcePort: src.port, destinationPort: dst.port, payloadLength: payload.count)
            let c = UDPHeaderView.checksum(source: src.address, destination: dst.address, header: UnsafeRawPointer(p), payload: payload)
            wireStore16(p, 6, c)
            do throws(SocketError) {
                try outputDatagram(src: src.address, dst: dst.address, proto: IPProtocol.udp, header: UnsafeRawPointer(p),
                                   body: payload, ip: ip)
                counters.udpDatagramsOut &+= 1
            } catch { result = error }
        }
        if let e = result { throw e }
    }

    func udpEchoReply(local: IPv4Endpoint, to: IPv4Endpoint, _ payload: UnsafeRawBufferPointer) {
        try? sendUDP(src: local, dst: to, payload)
    }

    /// Dequeues the oldest datagram into `into`, truncating like recvfrom; nil when the queue is empty.
    public func udpReceive(_ h: SocketHandle, into: UnsafeMutableRawBufferPointer) throws(SocketError) -> (count: Int, from: IPv4Endpoint)? {
        guard let s = udp.socket(h) else { throw .invalidHandle }
        guard let r = s.pop(into: into) else { return nil }
        return (r.count, r.from)
    }

    /// Like `udpReceive`, also returning the datagram's full length (> count when truncated).
    public func udpReceiveDatagram(_ h: SocketHandle, into: UnsafeMutableRawBufferPointer) throws(SocketError)
        -> (count: Int, length: Int, from: IPv4Endpoint)? {
        guard let s = udp.socket(h) else { throw .invalidHandle }
        return s.pop(into: into)
    }

    /// Size of the next queued datagram (FIONREAD for UDP), nil when empty or unknown handle.
    public func udpNextDatagramSize(_ h: SocketHandle) -> Int? { udp.socket(h)?.nextLength }

    public func udpClose(_ h: SocketHandle) {
        if let s = udp.close(h) { ports.release(s.binding) }
    }

    public func udpLocalEndpoint(_ h: SocketHandle) -> IPv4Endpoint? { udp.socket(h)?.local }
    public func udpRemoteEndpoint(_ h: SocketHandle) -> IPv4Endpoint? { udp.socket(h)?.remote }
}
