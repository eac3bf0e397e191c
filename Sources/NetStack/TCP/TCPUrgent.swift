/// Urgent data (RFC 9293 §3.8.5, RFC 6093), the way Linux keeps it.
///
/// The urgent pointer points one past the urgent byte (the BSD reading, Linux's default with
/// `tcp_stdurg` 0), and only the latest urgent byte counts. NetStack leaves the byte in the
/// stream (in the receive ring: no direct receive while a mark is pending) and only says where
/// it is: the driver hands it to the app out of band (ztapd: as the unix socket's out-of-band
/// byte, which gives the app POLLPRI, SIOCATMARK, `recv(MSG_OOB)` and SIGURG the way a TCP
/// socket does, and leaves it inline under SO_OOBINLINE).
///
/// Sending: the driver marks the end of the app's urgent byte (`markUrgent`). Until SND.UNA
/// reaches that point every segment carries URG and the distance to it (0xFFFF while it is
/// further than that), data leaves in MSS-sized segments (a super-segment cut by the link would
/// repeat the first piece's pointer in every piece) and neither Nagle nor the cork holds it back,
/// as in Linux's urgent mode (`tcp_urg_mode`).
extension TCPConnection {
    /// An acceptable segment with URG in a state that still takes data.
    func urgentArrived(_ seg: TCPHeaderView, seq: SeqNumber) {
        var ptr = Int(seg.urgentPointer)
        if ptr > 0 { ptr -= 1 }
        let at = seq + ptr
        guard !(at < rcvNxt) else { return }   // read already, or a replayed pointer
        let offset = bytesReceived &+ UInt64(at - rcvNxt)
        if let m = urgentMark, offset <= m { return }   // this one, or a newer one, is known
        urgentMark = offset
    }

    /// Bytes before the urgent byte from the next one the app gets (the ring's head: while a
    /// mark is pending, in-order data goes through the ring, not `directReceiver`); nil when
    /// none lies ahead.
    var urgentOffset: Int? {
        guard let m = urgentMark else { return nil }
        let next = bytesReceived &- UInt64(rx?.count ?? 0)
        guard m >= next else {
            urgentMark = nil   // delivered
            return nil
        }
        return Int(clamping: m &- next)
    }

    /// Urgent mode: an urgent byte sent or to be sent is not acknowledged yet.
    var urgentMode: Bool {
        guard let up = sndUp else { return false }
        if sndUna < up { return true }
        sndUp = nil
        return false
    }

    /// The URG flag and pointer for a segment starting at `seq`, if it carries them.
    func urgentField(seq: SeqNumber) -> UInt16? {
        guard urgentMode, let up = sndUp, seq < up else { return nil }
        return UInt16(clamping: up - seq)
    }
}

extension TCPLayer {
    /// Where the urgent byte of `h`'s received stream lies, counted from the next byte the app
    /// gets (see `TCPConnection.urgentOffset`); nil when none lies ahead.
    public func urgentOffset(_ h: SocketHandle) -> Int? { connection(h)?.urgentOffset }

    /// The app sent an urgent byte (`send(MSG_OOB)`): it is the last of `pending` bytes the
    /// driver is about to commit after what the send buffer holds now. Linux's `tcp_mark_urg`:
    /// SND.UP is the sequence number after it.
    public func markUrgent(_ h: SocketHandle, pending: Int) {
        guard let c = connection(h), let tx = c.tx, pending > 0 else { return }
        c.sndUp = c.txBase + (tx.count &+ pending)
        markDirty(c)
    }
}
