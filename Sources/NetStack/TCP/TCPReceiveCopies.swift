/// Fewer passes over received bytes, for the two kinds of in-order data:
///
/// - Direct receive: data that arrives while a connection's receive ring is empty goes from the
///   frame straight to the driver (ztapd: into the app's socket) instead of through the ring,
///   one copy less per byte. What the driver does not take (its socket is full) is queued in the
///   ring as usual, and the ring then keeps the order until it is empty again. The window is
///   unaffected: bytes taken never occupied the ring.
/// - Checksum while copying: a segment whose checksum still needs verifying (no offload vouched
///   for it) and whose payload is bound for the ring's tail is copied there as it is summed
///   (`copyToRing`), instead of summed in one pass and copied in another. Until it is found
///   valid and accepted, the bytes sit past the tail where nothing reads them; nothing else is
///   parked there (only with an empty reassembly list), so a bad segment overwrites nothing.
extension TCPLayer {
    /// Lets `directReceiver` take `h`'s in-order data (`on`), or stops it.
    public func setDirectReceive(_ h: SocketHandle, _ on: Bool) {
        connection(h)?.directReceive = on
    }
}

extension TCPConnection {
    /// If `payload` (at `seq`) will be appended to the receive ring — the next bytes expected,
    /// nothing out of order parked, room for all of it, no direct receive waiting for it —
    /// copies it to the ring's free space (not yet readable) and returns its partial checksum;
    /// nil when it does not qualify (the caller sums it in place).
    func copyToRing(_ payload: UnsafeRawBufferPointer, seq: SeqNumber) -> UInt64? {
        guard let src = payload.baseAddress, payload.count > 0, seq == rcvNxt, let rx, payload.count <= rx.free,
              reassembly.isEmpty, !(directReceive && rx.isEmpty) else { return nil }
        switch state {
        case .established, .finWait1, .finWait2: break
        default: return nil
        }
        let (a, b) = rx.freeRegions()
        let n = payload.count
        let k = min(n, a.count)
        var s = Checksum.copyPartial(from: src, to: a.baseAddress!, count: k)
        if k < n {
            let t = Checksum.copyPartial(from: src + k, to: b.baseAddress!, count: n &- k)
            s &+= k & 1 == 0 ? t : Checksum.atOddOffset(t)
        }
        return s
    }
}
