// NetlinkOverlay.swift - bridges, VXLAN devices and the VXLAN device's FDB (libnl-route-3:
// link/bridge.h, link/vxlan.h, neighbour.h), for networks that span hosts (VXLANFabric.swift).
//
// The FDB entries used here are the VXLAN device's own (NTF_SELF, family AF_BRIDGE), not the
// bridge's: the all-zeros MAC with a remote's address as destination makes the device send every
// broadcast, unknown-unicast and multicast frame to that remote (head-end replication), like
// `bridge fdb append 00:00:00:00:00:00 dev VX dst REMOTE`.

#if canImport(Glibc)
import Glibc
#endif
import CNetlink

// Spelled out: the Glibc and linux/*.h imports make some of these ambiguous.
private let afBridge: Int32 = 7           // AF_BRIDGE
private let ntfSelf: UInt32 = 0x02        // NTF_SELF
private let nudPermanent: Int32 = 0x80    // NUD_PERMANENT
private let nlmFAppend: Int32 = 0x800     // NLM_F_APPEND: one more destination for an existing MAC
private let zeroMAC = [UInt8](repeating: 0, count: 6)

extension Netlink {
    // MARK: Links

    /// Creates a Linux bridge (STP off, the kernel default) with a fixed MAC, so the bridge's
    /// address does not change as ports come and go, and the given MTU. Left down.
    public func createBridge(name: String, mac: String, mtu: Int) throws(LinuxError) {
        let op = "create bridge \(name)"
        try validateInterfaceName(name, operation: op)
        guard let link = rtnl_link_bridge_alloc() else { throw LinuxError(operation: op, errno: ENOMEM) }
        defer { rtnl_link_put(link) }
        guard let bytes = MACText.parse(mac), bytes[0] & 1 == 0 else {
            throw LinuxError(operation: op, errno: EINVAL, detail: "'\(mac)' is not a unicast MAC address")
        }
        guard let addr = bytes.withUnsafeBytes({ nl_addr_build(AF_LLC, $0.baseAddress, 6) }) else {
            throw LinuxError(operation: op, errno: ENOMEM)
        }
        defer { nl_addr_put(addr) }
        rtnl_link_set_addr(link, addr)
        try addLink(link, name: name, mtu: mtu, operation: op)
    }

    /// Creates a VXLAN device: VNI `vni`, source address `local`, UDP destination port `port`,
    /// bound to `underlay` when given, learning remote MACs from received packets (so known
    /// unicast goes to one host only). Left down, without FDB entries.
    public func createVXLAN(name: String, vni: Int, local: String, port: Int, underlay: String?,
                            mtu: Int) throws(LinuxError) {
        let op = "create VXLAN device \(name) (VNI \(vni))"
        try validateInterfaceName(name, operation: op)
        guard (0..<(1 << 24)).contains(vni), (1...65535).contains(port) else {
            throw LinuxError(operation: op, errno: EINVAL, detail: "VNI \(vni) or port \(port) is out of range")
        }
        guard let link = rtnl_link_vxlan_alloc() else { throw LinuxError(operation: op, errno: ENOMEM) }
        defer { rtnl_link_put(link) }
        let source = try buildAddress(local, operation: op)
        defer { nl_addr_put(source) }
        var r = rtnl_link_vxlan_set_id(link, UInt32(vni))
        if r >= 0 { r = rtnl_link_vxlan_set_local(link, source) }
        if r >= 0 { r = rtnl_link_vxlan_set_port(link, UInt32(port)) }  // libnl converts to network order
        if r >= 0 { r = rtnl_link_vxlan_set_learning(link, 1) }
        if r >= 0, let underlay {
            let index = try requireIndex(underlay, operation: op + " over \(underlay)")
            r = rtnl_link_vxlan_set_link(link, UInt32(index))
        }
        if r < 0 { throw LinuxError.netlink(op, nlResult: r) }
        try addLink(link, name: name, mtu: mtu, operation: op)
    }

    /// Sets IFLA_IFALIAS (`ip link` shows it as "alias"); ztapd marks what it created with it.
    public func setAlias(interface: String, alias: String) throws(LinuxError) {
        try changeLinkAlias(interface, alias: alias, operation: "set alias of \(interface)")
    }

    /// IFLA_IFALIAS of `interface`; nil when absent or unset.
    public func alias(interface: String) throws(LinuxError) -> String? {
        let op = "get alias of \(interface)"
        try validateInterfaceName(interface, operation: op)
        guard let link = try fetchLink(interface, operation: op) else { return nil }
        defer { rtnl_link_put(link) }
        return rtnl_link_get_ifalias(link).map { String(cString: $0) }
    }

    /// Name of the interface that holds `address` (no prefix), nil when none does.
    public func interfaceHolding(address: String) throws(LinuxError) -> String? {
        let op = "find the interface holding \(address)"
        let wanted = try parseCIDR(address, operation: op)
        var cache: OpaquePointer?
        sink.reset()
        let r = rtnl_addr_alloc_cache(sock, &cache)
        guard r >= 0, let cache else { throw netlinkError(op, r) }
        defer { nl_cache_free(cache) }
        var index: Int32?
        var obj = nl_cache_get_first(cache)
        while let o = obj, index == nil {
            if let local = rtnl_addr_get_local(o), let p = nl_addr_get_binary_addr(local),
               Int32(nl_addr_get_family(local)) == wanted.family, Int(nl_addr_get_len(local)) == wanted.bytes.count,
               Array(UnsafeRawBufferPointer(start: p, count: wanted.bytes.count)) == wanted.bytes {
                index = rtnl_addr_get_ifindex(o)
            }
            obj = nl_cache_get_next(o)
        }
        guard let index else { return nil }
        var link: OpaquePointer?
        sink.reset()
        let g = rtnl_link_get_kernel(sock, index, nil, &link)
        guard g >= 0, let link else { throw netlinkError(op, g) }
        defer { rtnl_link_put(link) }
        return rtnl_link_get_name(link).map { String(cString: $0) }
    }

    // MARK: VXLAN FDB

    /// Adds `remote` as a destination of the all-zeros entry of VXLAN device `interface`.
    /// Adding one that is already there succeeds without change.
    public func addFDBRemote(interface: String, remote: String) throws(LinuxError) {
        let op = "add FDB entry 00:00:00:00:00:00 dst \(remote) on \(interface)"
        let neigh = try fdbEntry(interface: interface, remote: remote, operation: op)
        defer { rtnl_neigh_put(neigh) }
        sink.reset()
        let r = rtnl_neigh_add(sock, neigh, NLM_F_CREATE | nlmFAppend)
        if r < 0 { throw netlinkError(op, r) }
    }

    /// Removes `remote` from the all-zeros entry of `interface` (the other destinations stay).
    public func removeFDBRemote(interface: String, remote: String) throws(LinuxError) {
        let op = "remove FDB entry 00:00:00:00:00:00 dst \(remote) from \(interface)"
        let neigh = try fdbEntry(interface: interface, remote: remote, operation: op)
        defer { rtnl_neigh_put(neigh) }
        sink.reset()
        let r = rtnl_neigh_delete(sock, neigh, 0)
        if r < 0 { throw netlinkError(op, r) }
    }

    /// Destinations of the all-zeros FDB entry of VXLAN device `interface`, as address text.
    public func fdbRemotes(interface: String) throws(LinuxError) -> [String] {
        let op = "list FDB entries of \(interface)"
        let index = try requireIndex(interface, operation: op)
        var cache: OpaquePointer?
        sink.reset()
        // AF_ITER: a plain (AF_UNSPEC) neighbour dump has only the IP neighbour tables; the FDB
        // comes from the AF_BRIDGE dump.
        let r = rtnl_neigh_alloc_cache_flags(sock, &cache, UInt32(NL_CACHE_AF_ITER))
        guard r >= 0, let cache else { throw netlinkError(op, r) }
        defer { nl_cache_free(cache) }
        var out: [String] = []
        var obj = nl_cache_get_first(cache)
        while let o = obj {
            defer { obj = nl_cache_get_next(o) }
            guard rtnl_neigh_get_family(o) == afBridge, rtnl_neigh_get_ifindex(o) == index,
                  let ll = rtnl_neigh_get_lladdr(o), nl_addr_get_len(ll) == 6, let lp = nl_addr_get_binary_addr(ll),
                  Array(UnsafeRawBufferPointer(start: lp, count: 6)) == zeroMAC,
                  let dst = rtnl_neigh_get_dst(o), let dp = nl_addr_get_binary_addr(dst) else { continue }
            let fam = Int32(nl_addr_get_family(dst)), len = Int(nl_addr_get_len(dst))
            guard (fam == AF_INET && len == 4) || (fam == AF_INET6 && len == 16) else { continue }
            let bytes = Array(UnsafeRawBufferPointer(start: dp, count: len))
            out.append(InterfaceCIDR(family: fam, bytes: bytes, prefixLength: len * 8).addressText)
        }
        return out
    }

    // MARK: Internals

    private func addLink(_ link: OpaquePointer, name: String, mtu: Int, operation: String) throws(LinuxError) {
        guard mtu > 0, mtu <= 65535 else {
            throw LinuxError(operation: operation, errno: EINVAL, detail: "MTU \(mtu) is out of range")
        }
        rtnl_link_set_name(link, name)
        rtnl_link_set_mtu(link, UInt32(mtu))
        sink.reset()
        let r = rtnl_link_add(sock, link, NLM_F_CREATE | NLM_F_EXCL)
        if r < 0 { throw netlinkError(operation, r) }
    }

    private func changeLinkAlias(_ name: String, alias: String, operation: String) throws(LinuxError) {
        let orig = try requireLink(name, operation: operation)
        defer { rtnl_link_put(orig) }
        guard let change = rtnl_link_alloc() else { throw LinuxError(operation: operation, errno: ENOMEM) }
        defer { rtnl_link_put(change) }
        rtnl_link_set_ifalias(change, alias)
        sink.reset()
        let r = rtnl_link_change(sock, orig, change, 0)
        if r < 0 { throw netlinkError(operation, r) }
    }

    /// An nl_addr for a bare IPv4/IPv6 address (caller puts it).
    private func buildAddress(_ text: String, operation: String) throws(LinuxError) -> OpaquePointer {
        let c = try parseCIDR(text, operation: operation)
        guard c.prefixLength == c.fullLength else {
            throw LinuxError(operation: operation, errno: EINVAL, detail: "'\(text)' must be an address without /prefix")
        }
        guard let a = c.bytes.withUnsafeBytes({ nl_addr_build(c.family, $0.baseAddress, $0.count) }) else {
            throw LinuxError(operation: operation, errno: ENOMEM)
        }
        return a
    }

    private func fdbEntry(interface: String, remote: String, operation: String) throws(LinuxError) -> OpaquePointer {
        let index = try requireIndex(interface, operation: operation)
        let dst = try buildAddress(remote, operation: operation)
        defer { nl_addr_put(dst) }
        guard let ll = zeroMAC.withUnsafeBytes({ nl_addr_build(AF_LLC, $0.baseAddress, 6) }) else {
            throw LinuxError(operation: operation, errno: ENOMEM)
        }
        defer { nl_addr_put(ll) }
        guard let neigh = rtnl_neigh_alloc() else { throw LinuxError(operation: operation, errno: ENOMEM) }
        // The destination first: libnl takes the object's family from it (and refuses a
        // destination whose family differs from one already set); then AF_BRIDGE overrides it.
        let r = rtnl_neigh_set_dst(neigh, dst)
        if r < 0 {
            rtnl_neigh_put(neigh)
            throw LinuxError.netlink(operation, nlResult: r)
        }
        rtnl_neigh_set_family(neigh, afBridge)
        rtnl_neigh_set_ifindex(neigh, index)
        rtnl_neigh_set_state(neigh, nudPermanent)
        rtnl_neigh_set_flags(neigh, ntfSelf)
        rtnl_neigh_set_lladdr(neigh, ll)
        return neigh
    }
}
