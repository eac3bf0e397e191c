import NetStack

// The TCP side of the per-uid budgets (UserBudgets.swift): a socket is charged when it is
// created (accepted ones to the listener's owner), its rings when it gets them, what the
// stack's autotuning adds to them while it holds it (`RingBudget`), and everything is given
// back when the bridge forgets it (`remove`). The charge is the rings' capacity (what they may
// come to hold), not the memory they hold at the moment.
extension TCPBridge {
    /// Ring bytes a connection with `options` starts with: the stack's initial sizes (its rings
    /// grow from there with the load, asking `ringsMayGrow`), or SO_RCVBUF/SO_SNDBUF's.
    func ringBytes(_ options: SocketOptions) -> Int {
        guard let cfg = stack?.tcp.config else { return 0 }
        let rx = options.rcvbuf.map(SocketOptions.ringSize)
            ?? min(cfg.receiveBufferSize, cfg.initialReceiveBuffer)
        let tx = options.sndbuf.map(SocketOptions.ringSize) ?? min(cfg.sendBufferSize, cfg.initialSendBuffer)
        return rx + tx
    }

    /// The stack asks this bridge before it grows a connection's rings.
    func attachRingBudget(_ stack: NetStack) {
        if stack.tcp.ringBudget !== self { stack.tcp.ringBudget = self }
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
    /// (Autotuning's growth is apart: fixing a size gives it back through `ringsShrank`.)
    func chargeRings(_ c: Connection) -> Int32? {
        guard var charge = c.charge else { return nil }
        let want = ringBytes(c.options), base = charge.bytes - c.tunedRingBytes
        if want <= base { return nil }
        if let e = gate.grow(&charge, bytes: want - base, pid: c.pid) { return e }
        c.charge = charge
        return nil
    }

    /// Gives back what `c` holds (idempotent).
    func refund(_ c: Connection) {
        gate.give(c.charge)
        c.charge = nil
        c.tunedRingBytes = 0
    }

    /// `c`'s stack connection went while `c` stays (connect(AF_UNSPEC)): what autotuning added
    /// goes back with its rings.
    func refundTuned(_ c: Connection) {
        guard var charge = c.charge, c.tunedRingBytes > 0 else { return }
        gate.budgets.shrink(uid: charge.uid, bytes: c.tunedRingBytes)
        charge.bytes -= c.tunedRingBytes
        c.charge = charge
        c.tunedRingBytes = 0
    }
}

extension TCPBridge: RingBudget {
    /// Autotuning wants more capacity for `handle`: granted while its owner's budget allows
    /// (quietly refused otherwise: the connection goes on with the rings it has). A connection
    /// the bridge does not hold (never accepted, or forgotten) has nobody to pay: refused.
    func ringsMayGrow(_ handle: SocketHandle, by bytes: Int) -> Bool {
        guard let c = byHandle[handle], var charge = c.charge else { return false }
        guard gate.budgets.grow(uid: charge.uid, bytes: bytes) == nil else { return false }
        charge.bytes += bytes
        c.charge = charge
        c.tunedRingBytes += bytes
        return true
    }

    func ringsShrank(_ handle: SocketHandle, by bytes: Int) {
        guard let c = byHandle[handle], var charge = c.charge else { return }
        let n = min(bytes, c.tunedRingBytes)
        gate.budgets.shrink(uid: charge.uid, bytes: n)
        charge.bytes -= n
        c.charge = charge
        c.tunedRingBytes -= n
    }
}

