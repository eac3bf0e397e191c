import CZTRPC

/// Intercept RPCs of one network, counted where every request ends: its one reply
/// (RPCReplier), or its application for a request sent with ZTRPC_OP_NOREPLY. A request whose
/// peer hangs up before the answer is not counted. Loop thread only.
struct RPCCounters: Sendable, Equatable {
    /// Label values of `ztap_rpc_requests_total{op=...}`, indexed by ZTRPC_OP_* (0: anything else).
    static let opNames = ["other", "connect", "bind", "listen", "getsockopt", "setsockopt", "getname", "udp_open",
                          "channel", "renew"]

    private(set) var requests = [UInt64](repeating: 0, count: RPCCounters.opNames.count)
    private(set) var errors = [UInt64](repeating: 0, count: RPCCounters.opNames.count)

    static func index(_ op: UInt16) -> Int { Int(op) < opNames.count ? Int(op) : 0 }

    mutating func replied(op: UInt16, failed: Bool) {
        let i = Self.index(op)
        requests[i] &+= 1
        if failed { errors[i] &+= 1 }
    }
}
