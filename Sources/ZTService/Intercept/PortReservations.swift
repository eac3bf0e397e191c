import CShims
import NetStack
import SystemPackage

/// TCP ports held by intercepted sockets that are bound or listening, with Linux's bind rules:
/// an address overlap (same address, or either is the wildcard) conflicts unless both sockets
/// set SO_REUSEADDR and the other is not listening, or both set SO_REUSEPORT with the same owner.
/// Port 0 takes a free ephemeral port (random start, O(1) per candidate).
struct PortReservations {
    struct Holder {
        let id: ObjectIdentifier
        var endpoint: IPv4Endpoint
        var reuseAddr: Bool
        var reusePort: Bool
        var uid: UInt32
        var listening: Bool
    }

    private(set) var byPort: [UInt16: [Holder]] = [:]
    let ephemeral: ClosedRange<UInt16>

    init(ephemeral: ClosedRange<UInt16> = 49152...65535) { self.ephemeral = ephemeral }

    /// Takes `ep` for `owner` (port 0: an ephemeral one not in use here nor by `inUse`, e.g. a
    /// stack listener). Returns the endpoint taken, or EADDRINUSE.
    mutating func reserve(_ ep: IPv4Endpoint, owner: ObjectIdentifier, reuseAddr: Bool, reusePort: Bool, uid: UInt32,
                          random: inout some RandomNumberGenerator, inUse: (UInt16) -> Bool) -> Result<IPv4Endpoint, Errno> {
        var port = ep.port
        if port == 0 {
            let span = UInt32(ephemeral.count)
            let start = UInt32.random(in: 0..<span, using: &random)
            var found: UInt16?
            for i in 0..<span {
                let p = ephemeral.lowerBound &+ UInt16(truncatingIfNeeded: (start &+ i) % span)
                if byPort[p] == nil && !inUse(p) { found = p; break }
            }
            guard let f = found else { return .failure(.addressInUse) }
            port = f
        } else {
            for other in byPort[port] ?? [] where other.id != owner {
                let oa = other.endpoint.address
                let overlap = oa.isUnspecified || ep.address.isUnspecified || oa == ep.address
                if !overlap { continue }
                let reuse = reuseAddr && other.reuseAddr && !other.listening
                let sharedPort = reusePort && other.reusePort && uid == other.uid
                if !reuse && !sharedPort { return .failure(.addressInUse) }
            }
        }
        let local = IPv4Endpoint(ep.address, port)
        byPort[port, default: []].append(Holder(id: owner, endpoint: local, reuseAddr: reuseAddr, reusePort: reusePort,
                                                uid: uid, listening: false))
        return .success(local)
    }

    /// Marks `owner`'s reservation on `port` as a listener (SO_REUSEADDR no longer shares it).
    mutating func setListening(_ owner: ObjectIdentifier, port: UInt16) {
        guard var list = byPort[port], let i = list.firstIndex(where: { $0.id == owner }) else { return }
        list[i].listening = true
        byPort[port] = list
    }

    /// SO_REUSEADDR/SO_REUSEPORT changed after bind: later binds see the new flags (Linux
    /// checks the flags the existing sockets have at that time).
    mutating func update(_ owner: ObjectIdentifier, port: UInt16, reuseAddr: Bool, reusePort: Bool) {
        guard var list = byPort[port], let i = list.firstIndex(where: { $0.id == owner }) else { return }
        list[i].reuseAddr = reuseAddr
        list[i].reusePort = reusePort
        byPort[port] = list
    }

    mutating func release(_ owner: ObjectIdentifier, port: UInt16) {
        guard var list = byPort[port] else { return }
        list.removeAll { $0.id == owner }
        byPort[port] = list.isEmpty ? nil : list
    }

    var count: Int { byPort.values.reduce(0) { $0 + $1.count } }
}
