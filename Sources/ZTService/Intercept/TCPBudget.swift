import NetStack

// The TCP side of the per-uid budgets (UserBudgets.swift): a socket is charged when it is
// created (accepted ones to the listener's owner), its rings when it gets them, and everything
// is given back when the bridge forgets it (`remove`).
extension TCPBridge {
    /// Ring bytes a connection with `options` holds: the stack's sizes, or SO_RCVBUF/SO_SNDBUF's.
    func ringBytes(_ options: SocketOptions) -> Int {
        let cfg = stack?.tcp.config
        let rx = options.rcvbuf.map(SocketOptions.ringSize) ?? cfg?.receiveBufferSize ?? 0
        let tx = options.sndbuf.map(SocketOptions.ringSize) ?? cfg?.sendBufferSize ?? 0
        return rx + tx
    }

    /// Charges new socket `c` with `bytes`; the errno (EMFILE/ENOBUFS) when over a budget.
    func chargeNew(_ c: Connection, bytes: Int) -> Int32? {
        switch gate.take(uid: c.uid, pid: c.pid, kind: .tcp, bytes: bytes) {
        case .success(let charge):
            c.charge = charge
            return nil
        case .failure(let e):
            return e.rawValue
        }
    }

    /// Grows `c`'s charge to the rings it holds (or is about to get); ENOBUFS when over budget.
    func chargeRings(_ c: Connection) -> Int32? {
        guard var charge = c.charge else { return nil }
        let want = ringBytes(c.options)
        if want <= charge.bytes { return nil }
        if let e = gate.grow(&charge, bytes: want - charge.bytes, pid: c.pid) { return e }
        c.charge = charge
        return nil
    }

    /// Gives back what `c` holds (idempotent).
    func refund(_ c: Connection) {
        gate.give(c.charge)
        c.charge = nil
    }
}
