/// Direct receive: in-order data that arrives while a connection's receive ring is empty goes
/// from the frame straight to the driver (ztapd: into the app's socket) instead of through the
/// ring, one copy less per byte. What the driver does not take (its socket is full) is queued in
/// the ring as usual, and the ring then keeps the order until it is empty again. The window is
/// unaffected: bytes taken never occupied the ring.
extension TCPLayer {
    /// Lets `directReceiver` take `h`'s in-order data (`on`), or stops it.
    public func setDirectReceive(_ h: SocketHandle, _ on: Bool) {
        connection(h)?.directReceive = on
    }
}
