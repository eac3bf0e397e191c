/// The stack's one table of bound ports, TCP and UDP (what Linux keeps in its bind hash tables):
/// the single place that says whether a local address and port may be taken, and the single
/// ephemeral-port allocator. TCP listeners, UDP sockets, the diagnostic services, outgoing
/// connections on ephemeral ports, and (through the public API) the intercept hub's bind()
/// reservations all live here, so none of them can take a port another holds.
///
/// Conflict rule (Linux's inet_csk_bind_conflict, for the cases ztap models): a binding conflicts
/// with another of the same protocol and port when their addresses overlap unless
///   - both set SO_REUSEADDR and the other is not listening, or
///   - both set SO_REUSEPORT and belong to the same uid.
/// Addresses overlap when they are equal or one is the wildcard of the other's family, the
/// families being IPv4 (a mapped address, 0.0.0.0 its wildcard) and IPv6 (:: its wildcard); a
/// dual-stack `::` (not `v6Only`, Linux's IPV6_V6ONLY=0) is the wildcard of both, so it conflicts
/// with 0.0.0.0 and every IPv4 address as on Linux.
/// `listen` applies the same rule again, now against the others' listening state, so two
/// SO_REUSEADDR sockets may share a port until the second one listens. A conflict is
/// `.addressInUse` (EADDRINUSE).
///
/// Ports: `bind` with port 0 takes a port from the ephemeral range that nothing holds (the range
/// is searched from a random start, one O(1) lookup per candidate). An outgoing connection needs
/// less: `claimForConnect` may pick a port other connections use too, as long as its 4-tuple is
/// unique (the caller's test, which may also let a TIME-WAIT connection go) and no bind()-style
/// binding overlaps; a bind() of a port an outgoing connection holds conflicts like a socket
/// without SO_REUSEADDR would. Its search starts at a per-destination offset that moves on past
/// each port taken (RFC 6056 §3.3.4, Algorithm 4, as Linux's inet_hash_connect): connections to
/// one destination walk the range in order, so the next candidate is usually free, or holds the
/// oldest TIME-WAIT towards it. When the range is exhausted `bind` throws `.addressInUse` and
/// `claimForConnect` `.addressNotAvailable`, as Linux's bind() and connect() do.
///
/// Not thread-safe: owned by the network's loop thread, like the stack.
public final class PortTable {
    public enum Proto: Sendable, Hashable { case tcp, udp }

    /// The socket options that decide whether a port can be shared.
    public struct Options: Sendable, Hashable {
        /// SO_REUSEADDR.
        public var reuseAddress: Bool
        /// SO_REUSEPORT (sharing is only between sockets of the same `uid`).
        public var reusePort: Bool
        /// Owner of the socket.
        public var uid: UInt32
        /// IPV6_V6ONLY: a `::` binding takes IPv6 only (else IPv4 too). Ignored for other addresses.
        public var v6Only: Bool
        public init(reuseAddress: Bool = false, reusePort: Bool = false, uid: UInt32 = 0, v6Only: Bool = false) {
            self.reuseAddress = reuseAddress
            self.reusePort = reusePort
            self.uid = uid
            self.v6Only = v6Only
        }
    }

    /// A binding, as `bind` hands it out: give it back with `release`.
    public struct Binding: Hashable, Sendable, CustomStringConvertible {
        public let proto: Proto
        /// The bound address and port (the ephemeral port picked when bind asked for 0).
        public let local: IPEndpoint
        /// A `::` binding that takes IPv6 only (IPV6_V6ONLY); false for every other address.
        public let v6Only: Bool
        let id: UInt32
        public var description: String { "\(proto) \(local)\(v6Only ? " v6only" : "") #\(id)" }
        /// Whether traffic to `a` reaches this binding's address: equal, or its family's wildcard.
        @inline(__always) public func accepts(_ a: IPAddress) -> Bool { PortTable.covers(local.address, v6Only, a) }
    }

    /// Linux's default ip_local_port_range (RFC 6335's dynamic range, 49152-65535, is narrower).
    public static let defaultEphemeral: ClosedRange<UInt16> = 32768...60999

    /// A range as /proc/sys/net/ipv4/ip_local_port_range writes it ("32768\t60999\n"); nil
    /// unless it is two ports, low <= high, neither 0.
    public static func parseRange(_ text: String) -> ClosedRange<UInt16>? {
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
        guard parts.count == 2, let lo = UInt16(parts[0]), let hi = UInt16(parts[1]), lo > 0, lo <= hi else {
            return nil
        }
        return lo...hi
    }

    public let ephemeral: ClosedRange<UInt16>

    struct Entry {
        var id: UInt32
        var address: IPAddress
        var options: Options
        var listening = false
        /// Outgoing connections from `address` on this port (a claim, not a bind): 0 for binds.
        var connections = 0
        var isConnectClaim: Bool { connections > 0 }
    }
    /// (proto, port) -> what holds it; usually empty or one entry.
    private var byPort: [UInt32: [Entry]] = [:]
    private var nextID: UInt32 = 1
    private var random: XorShiftRandom
    /// Bindings (not connect claims) in the table.
    public private(set) var bindingCount = 0
    /// Keyed hash secret and the moving offsets of `claimForConnect` (RFC 6056 Algorithm 4).
    private let secret: UInt64
    private var perturb: [UInt32]
    static let perturbSize = 256

    public init(ephemeral: ClosedRange<UInt16> = PortTable.defaultEphemeral, seed: UInt64) {
        self.ephemeral = ephemeral
        random = XorShiftRandom(seed: seed)
        secret = random.next()
        perturb = [UInt32](repeating: 0, count: Self.perturbSize)
    }

    @inline(__always) static func key(_ proto: Proto, _ port: UInt16) -> UInt32 {
        (proto == .tcp ? 0 : 0x1_0000) | UInt32(port)
    }

    /// Whether a binding at `bound` (`v6Only` for IPV6_V6ONLY) receives traffic to `a`.
    @inline(__always) static func covers(_ bound: IPAddress, _ v6Only: Bool, _ a: IPAddress) -> Bool {
        if bound == a { return true }
        if bound == .v4Any { return a.isV4 }
        if bound == .v6Any { return !a.isV4 || !v6Only }
        return false
    }

    /// Whether two bindings share some address (see the conflict rule above).
    @inline(__always) static func overlap(_ a: IPAddress, _ aV6Only: Bool, _ b: IPAddress, _ bV6Only: Bool) -> Bool {
        covers(a, aV6Only, b) || covers(b, bV6Only, a)
    }

    /// Whether a socket with `options` at `address` may share the port with `e`.
    @inline(__always) static func compatible(_ options: Options, _ address: IPAddress, with e: Entry) -> Bool {
        guard overlap(address, options.v6Only, e.address, e.options.v6Only) else { return true }
        if e.isConnectClaim { return false }
        if options.reuseAddress && e.options.reuseAddress && !e.listening { return true }
        if options.reusePort && e.options.reusePort && options.uid == e.options.uid { return true }
        return false
    }

    // MARK: - bind / listen / release

    /// Binds `local` (port 0: an ephemeral port nothing holds). Throws `.addressInUse` on a
    /// conflict or when no ephemeral port is free.
    public func bind(_ proto: Proto, _ local: IPEndpoint, options: Options = Options()) throws(SocketError) -> Binding {
        var port = local.port
        if port == 0 {
            guard let p = freePort(proto) else { throw .addressInUse }
            port = p
        } else {
            for e in byPort[Self.key(proto, port)] ?? [] where !Self.compatible(options, local.address, with: e) {
                throw .addressInUse
            }
        }
        let id = nextID
        nextID &+= 1
        if nextID == 0 { nextID = 1 }
        byPort[Self.key(proto, port), default: []].append(Entry(id: id, address: local.address, options: options))
        bindingCount &+= 1
        return Binding(proto: proto, local: IPEndpoint(local.address, port),
                       v6Only: options.v6Only && local.address == .v6Any, id: id)
    }

    /// Marks a TCP binding listening, after checking it against the others again (a listener
    /// cannot share an overlapping port through SO_REUSEADDR, only through SO_REUSEPORT).
    /// Throws `.addressInUse` on a conflict, `.invalidHandle` for a binding not in the table.
    public func listen(_ b: Binding) throws(SocketError) {
        let k = Self.key(b.proto, b.local.port)
        guard var list = byPort[k], let i = list.firstIndex(where: { $0.id == b.id }) else { throw .invalidHandle }
        guard !list[i].listening else { return }
        for (j, e) in list.enumerated() where j != i && !Self.compatible(list[i].options, b.local.address, with: e) {
            throw .addressInUse
        }
        list[i].listening = true
        byPort[k] = list
    }

    /// The binding stops listening (a listener closed; the bind itself stays).
    public func stopListening(_ b: Binding) {
        let k = Self.key(b.proto, b.local.port)
        guard var list = byPort[k], let i = list.firstIndex(where: { $0.id == b.id }) else { return }
        list[i].listening = false
        byPort[k] = list
    }

    /// The socket's SO_REUSEADDR/SO_REUSEPORT changed after bind: later binds and listens see the
    /// new options (Linux checks the options the holders have at that time).
    public func setOptions(_ b: Binding, _ options: Options) {
        let k = Self.key(b.proto, b.local.port)
        guard var list = byPort[k], let i = list.firstIndex(where: { $0.id == b.id }) else { return }
        list[i].options = options
        byPort[k] = list
    }

    /// Gives the port back. Releasing twice, or a binding of another table, does nothing.
    public func release(_ b: Binding) {
        let k = Self.key(b.proto, b.local.port)
        guard var list = byPort[k], let i = list.firstIndex(where: { $0.id == b.id }) else { return }
        list.remove(at: i)
        byPort[k] = list.isEmpty ? nil : list
        bindingCount &-= 1
    }

    public func isBound(_ b: Binding) -> Bool {
        byPort[Self.key(b.proto, b.local.port)]?.contains { $0.id == b.id } ?? false
    }

    public func isListening(_ b: Binding) -> Bool {
        byPort[Self.key(b.proto, b.local.port)]?.contains { $0.id == b.id && $0.listening } ?? false
    }

    /// Whether anything (binding or outgoing connection) holds `port`.
    public func isInUse(_ proto: Proto, port: UInt16) -> Bool { byPort[Self.key(proto, port)] != nil }

    // MARK: - Ephemeral ports

    /// Candidates in the ephemeral range from `start` (random if nil), each once; with the
    /// number of candidates tried.
    private func search(from start: UInt32? = nil, _ accept: (UInt16) -> Bool) -> (port: UInt16, tries: UInt32)? {
        let lo = UInt32(ephemeral.lowerBound)
        let span = UInt32(ephemeral.upperBound) &- lo &+ 1
        let first = (start ?? UInt32(truncatingIfNeeded: random.next())) % span
        for i in 0..<span {
            let p = UInt16(truncatingIfNeeded: lo &+ (first &+ i) % span)
            if accept(p) { return (p, i &+ 1) }
        }
        return nil
    }

    @inline(__always) static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private func freePort(_ proto: Proto) -> UInt16? {
        search { byPort[Self.key(proto, $0)] == nil }?.port
    }

    /// A TCP port for an outgoing connection from `address` to `remote`: one no bind()-style
    /// binding overlapping `address` holds and for which `isUnique` (the 4-tuple is free, or
    /// may be taken over) holds. Candidates start at the destination's offset (see the type's
    /// comment), which then moves past the port taken. The claim lasts until
    /// `releaseConnectClaim`. Throws `.addressNotAvailable` when none is left.
    func claimForConnect(address: IPAddress, remote: IPEndpoint = IPEndpoint(.v4Any, 0),
                         isUnique: (UInt16) -> Bool) throws(SocketError) -> UInt16 {
        let h = Self.mix(Self.mix(secret ^ address.hi ^ (address.lo &* 0x9E37_79B9)) ^ remote.address.hi
                         ^ (remote.address.lo << 1))
        let hash = Self.mix(h ^ UInt64(remote.port))
        let slot = Int(truncatingIfNeeded: hash >> 40) & (Self.perturbSize &- 1)
        let start = UInt32(truncatingIfNeeded: hash) &+ perturb[slot]
        let found = search(from: start) { p in
            if let list = byPort[Self.key(.tcp, p)] {
                for e in list where !e.isConnectClaim && Self.overlap(address, false, e.address, e.options.v6Only) {
                    return false
                }
            }
            return isUnique(p)
        }
        guard let (p, tries) = found else { throw .addressNotAvailable }
        perturb[slot] &+= tries
        let k = Self.key(.tcp, p)
        var list = byPort[k] ?? []
        if let i = list.firstIndex(where: { $0.isConnectClaim && $0.address == address }) {
            list[i].connections &+= 1
        } else {
            let id = nextID
            nextID &+= 1
            if nextID == 0 { nextID = 1 }
            list.append(Entry(id: id, address: address, options: Options(), connections: 1))
        }
        byPort[k] = list
        return p
    }

    /// An outgoing connection on a port from `claimForConnect` is gone.
    func releaseConnectClaim(port: UInt16, address: IPAddress) {
        let k = Self.key(.tcp, port)
        guard var list = byPort[k],
              let i = list.firstIndex(where: { $0.isConnectClaim && $0.address == address }) else { return }
        list[i].connections &-= 1
        if list[i].connections == 0 { list.remove(at: i) }
        byPort[k] = list.isEmpty ? nil : list
    }
}
