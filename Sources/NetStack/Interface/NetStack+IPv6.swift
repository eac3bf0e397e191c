/// IPv6 on the interface (placeholder until the IPv6 layer lands: no IPv6 address is ever
/// local or routable, so sockets of that family fail with `.networkUnreachable`).
extension NetStack {
    @inline(__always) func isLocal6(_ a: IPAddress) -> Bool { false }
    @inline(__always) func route6(_ dst: IPAddress) -> IPAddress? { nil }
    func sourceAddress6(for dst: IPAddress) -> IPAddress? { nil }
    func maxPayload6(to dst: IPAddress) -> Int { 1280 &- 40 }
    func transmit6(src: IPAddress, dst: IPAddress, proto: UInt8, capacity: Int,
                   _ fill: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        counters.noRoute &+= 1
        return false
    }
    func outputDatagram6(src: IPAddress, dst: IPAddress, proto: UInt8, header: UnsafeRawPointer,
                         body: UnsafeRawBufferPointer) throws(SocketError) {
        counters.noRoute &+= 1
        throw .networkUnreachable
    }
    func segmentationLimit6(to dst: IPAddress) -> Int { 0 }
    func transmitTCP6(src: IPAddress, dst: IPAddress, header: TCPHeaderRepr, payload: UnsafeRawBufferPointer,
                      _ more: UnsafeRawBufferPointer, segmentSize: Int) -> Bool {
        counters.noRoute &+= 1
        return false
    }
    func sendICMPv6Error(type: UInt8, code: UInt8, quote: UnsafeRawBufferPointer, rest: UInt32 = 0) {}
}
