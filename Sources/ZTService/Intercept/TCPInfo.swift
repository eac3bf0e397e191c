import NetStack

/// Linux's struct tcp_info as 6.18 lays it out (280 bytes; Debian 12's headers know the first
/// 232), filled from the stack's connection. getsockopt(TCP_INFO) copies min(optlen, 280) bytes.
///
/// Fields the stack has no honest value for get what Linux reports in the same situation:
/// `fackets` and `last_ack_sent` 0 (Linux never fills them), `rcv_rtt` 0 (no receiver-side RTT
/// estimate), `busy_time`/`rwnd_limited`/`sndbuf_limited` 0 (no chrono accounting), `rehash` 0
/// (no PLB), `dsack_dups` 0, every ECN counter 0 (no ECN). `pacing_rate` is Linux's formula
/// (mss * cwnd / srtt, x2 in slow start, x1.2 after) although the stack does not pace, and
/// `delivered` counts whole send-MSS segments.
enum TCPInfo {
    static let size = 280

    /// tcpi_options bits.
    static let optTimestamps: UInt8 = 1, optSack: UInt8 = 2, optWscale: UInt8 = 4

    static func encode(_ i: TCPSocketInfo?, options o: SocketOptions, state: TCPState) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: size)
        func u8(_ off: Int, _ v: Int) { b[off] = UInt8(truncatingIfNeeded: v) }
        func u16(_ off: Int, _ v: UInt64) {
            let x = UInt16(truncatingIfNeeded: min(v, UInt64(UInt16.max)))
            b[off] = UInt8(x & 0xFF); b[off + 1] = UInt8(x >> 8)
        }
        func u32(_ off: Int, _ v: UInt64) {
            let x = UInt32(truncatingIfNeeded: min(v, UInt64(UInt32.max)))
            for k in 0..<4 { b[off + k] = UInt8(truncatingIfNeeded: x >> (8 * UInt32(k))) }
        }
        func u64(_ off: Int, _ v: UInt64) { for k in 0..<8 { b[off + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) } }
        func us(_ d: Duration?) -> UInt64 { (d?.nanoseconds ?? 0) / 1000 }
        func ms(_ d: Duration?) -> UInt64 { (d?.nanoseconds ?? 0) / 1_000_000 }

        u8(0, Int(SocketOptionMap.linuxTCPState(i?.state ?? state)))
        u64(112, o.maxPacingRate)
        guard let i else { return b }
        u32(80, 10)                      // snd_cwnd: the initial window until there is one
        u32(88, 3)                       // reordering: Linux's initial value
        u64(104, min(.max, o.maxPacingRate))
        if i.state == .listen {
            // Linux reports the accept queue as unacked and the backlog as sacked.
            u32(24, UInt64(i.receiveQueue))
            u32(28, UInt64(max(i.sendQueue, 0)))
            return b
        }
        u8(1, Int(i.recoveryState.rawValue))
        u8(2, i.consecutiveTimeouts)
        u8(3, i.probes)
        u8(4, i.backoff)
        var opts: UInt8 = 0
        if i.timestamps { opts |= optTimestamps }
        if i.sack { opts |= optSack }
        if i.windowScaling { opts |= optWscale }
        u8(5, Int(opts))
        u8(6, i.windowScaling ? (i.sendWindowShift & 0xF) | (i.receiveWindowShift & 0xF) << 4 : 0)
        let mss = UInt64(max(i.mss, 1))
        let cwndSegments = UInt64(max(i.cwnd, 0)) / mss
        // delivery_rate_app_limited: the sender is not filling the congestion window.
        let appLimited = i.notSentBytes == 0 && i.bytesInFlight < max(i.cwnd, 0)
        u8(7, appLimited ? 1 : 0)
        u32(8, us(i.rto))
        u32(12, i.dataSegmentsIn > 0 ? us(i.delayedAckTimeout) : 0)
        u32(16, UInt64(i.mss))
        u32(20, UInt64(i.receiveMss))
        u32(24, UInt64(i.unackedSegments))
        u32(28, UInt64(i.sackedSegments))
        u32(32, UInt64(i.lostSegments))
        u32(36, UInt64(i.retransmittedSegments))
        // 40 fackets, 48 last_ack_sent: 0
        u32(44, ms(i.sinceDataSent))
        u32(52, ms(i.sinceDataReceived))
        u32(56, ms(i.sinceAckReceived))
        u32(60, UInt64(i.pathMTU))
        u32(64, UInt64(max(i.receiveWindow, 0)))            // rcv_ssthresh: the window offered
        u32(68, us(i.srtt))
        u32(72, us(i.rttVariance))
        u32(76, i.ssthresh >= Int(Int32.max) ? UInt64(Int32.max) : UInt64(max(i.ssthresh, 0)) / mss)
        u32(80, cwndSegments)
        u32(84, UInt64(max(i.advertisedMss, 0)))
        // 92 rcv_rtt: 0
        u32(96, UInt64(max(i.receiveSpace, 0)))
        u32(100, i.retransmissions)
        u64(104, pacingRate(i, mss: mss, cwndSegments: cwndSegments, max: o.maxPacingRate))
        u64(120, i.bytesAcked)
        u64(128, i.bytesReceived)
        u32(136, i.segmentsOut)
        u32(140, i.segmentsIn)
        u32(144, UInt64(i.notSentBytes))
        u32(148, i.minRTT.map { $0.nanoseconds / 1000 } ?? UInt64(UInt32.max))
        u32(152, i.dataSegmentsIn)
        u32(156, i.dataSegmentsOut)
        u64(160, i.deliveryRate)
        // 168 busy_time, 176 rwnd_limited, 184 sndbuf_limited: 0
        u32(192, i.deliveredSegments)
        // 196 delivered_ce: 0
        u64(200, i.bytesSentTotal)
        u64(208, i.bytesRetransmitted)
        // 216 dsack_dups: 0
        u32(220, i.reorderingSeen ? 1 : 0)
        u32(224, i.outOfOrderSegmentsIn)
        u32(228, UInt64(max(i.peerWindow, 0)))
        u32(232, UInt64(max(i.receiveWindow, 0)))
        // 236 rehash: 0
        u16(240, i.totalTimeouts)
        u16(242, i.timeoutRecoveries)
        u32(244, ms(i.timeoutRecoveryTime))
        // 248...279: ECN counters and modes, 0
        return b
    }

    /// tcp_update_pacing_rate: mss * max(cwnd, packets_out) / srtt, doubled while cwnd is under
    /// half of ssthresh, else x1.2; ~0 before any RTT sample (Linux's initial sk_pacing_rate).
    static func pacingRate(_ i: TCPSocketInfo, mss: UInt64, cwndSegments: UInt64, max cap: UInt64) -> UInt64 {
        guard let srtt = i.srtt, srtt.nanoseconds > 0 else { return min(.max, cap) }
        let ss = UInt64(max(i.cwnd, 0)) < UInt64(max(i.ssthresh, 0)) / 2
        let segs = Swift.max(cwndSegments, UInt64(i.unackedSegments))
        let (bytes, o1) = mss.multipliedReportingOverflow(by: segs)
        let (scaled, o2) = bytes.multipliedReportingOverflow(by: 1_000_000_000 * (ss ? 200 : 120) / 100)
        if o1 || o2 { return cap }
        return min(scaled / srtt.nanoseconds, cap)
    }
}

extension SocketOptionMap {
    /// Linux's numbering of TCP states (include/net/tcp_states.h).
    static func linuxTCPState(_ s: TCPState) -> UInt8 {
        switch s {
        case .established: return 1
        case .synSent: return 2
        case .synReceived: return 3
        case .finWait1: return 4
        case .finWait2: return 5
        case .timeWait: return 6
        case .closed: return 7
        case .closeWait: return 8
        case .lastAck: return 9
        case .listen: return 10
        case .closing: return 11
        }
    }
}
