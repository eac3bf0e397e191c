// Netlink.swift - interface configuration over one NETLINK_ROUTE socket (libnl-route-3).
//
// Links are changed with rtnl_link_change (fetch the current link, fill a change object with only
// the fields to set), addresses with rtnl_addr_add/delete. All calls are synchronous: libnl sends
// the request and waits for the kernel's ACK or error.
//
// Errors: libnl folds the kernel's errno into its own NLE_* codes (ENODEV becomes "object not
// found"), so a custom error callback records the kernel's raw errno and, with NETLINK_EXT_ACK
// enabled, its text message, before libnl returns. Those win over the mapped NLE code.
//
// Threading: the socket and its callback state belong to one thread at a time (not Sendable).
// Needs CAP_NET_ADMIN for changes; reads need no privilege.

#if canImport(Glibc)
import Glibc
#endif
import CNetlink

/// Snapshot of one interface as the kernel reports it.
public struct LinkInfo: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var index: Int32
    /// "aa:bb:cc:dd:ee:ff"; nil for links without a hardware address.
    public var mac: String?
    public var mtu: Int
    /// Administrative state (IFF_UP).
    public var isUp: Bool
    /// ifindex of the master device (bridge), nil when not enslaved.
    public var masterIndex: Int32?
    /// rtnetlink link kind ("tun", "bridge", "veth"...), nil when the kernel reports none.
    public var kind: String?

    public init(name: String, index: Int32, mac: String?, mtu: Int, isUp: Bool,
                masterIndex: Int32?, kind: String?) {
        self.name = name; self.index = index; self.mac = mac; self.mtu = mtu
        self.isUp = isUp; self.masterIndex = masterIndex; self.kind = kind
    }

    public var description: String {
        "\(name)#\(index) mac=\(mac ?? "-") mtu=\(mtu) \(isUp ? "UP" : "DOWN")"
            + (masterIndex.map { " master=#\($0)" } ?? "") + (kind.map { " kind=\($0)" } ?? "")
    }
}

/// What the error callback saw for the current request.
final class NetlinkErrorSink {
    var kernelErrno: Int32 = 0
    var kernelMessage: String?

    func reset() {
        kernelErrno = 0
        kernelMessage = nil
    }
}

// Constants spelled out because the Glibc and libnl (linux/*.h) imports make them ambiguous.
private let ifUp: UInt32 = 0x1                 // IFF_UP
private let solNetlink: Int32 = 270            // SOL_NETLINK
private let netlinkCapAck: Int32 = 10          // NETLINK_CAP_ACK: ACKs without the request echo
private let netlinkExtAck: Int32 = 11          // NETLINK_EXT_ACK: kernel adds a text message
private let nlmFCapped: UInt16 = 0x100         // NLM_F_CAPPED
private let nlmFAckTLVs: UInt16 = 0x200        // NLM_F_ACK_TLVS
private let nlmsgerrAttrMsg: UInt16 = 1        // NLMSGERR_ATTR_MSG
private let nlmsgHeaderLength = 16             // NLMSG_HDRLEN

public final class Netlink {
    // Internal, not private: the link-creation and FDB calls live in NetlinkOverlay.swift.
    let sock: OpaquePointer
    let sink = NetlinkErrorSink()

    public init() throws(LinuxError) {
        guard let s = nl_socket_alloc() else {
            throw LinuxError(operation: "allocate netlink socket", errno: ENOMEM)
        }
        let r = nl_connect(s, NETLINK_ROUTE)
        if r < 0 {
            let e = LinuxError.netlink("connect NETLINK_ROUTE socket", nlResult: r)
            nl_socket_free(s)
            throw e
        }
        sock = s
        // Best effort: older kernels lack these options and then we only get the errno.
        let fd = nl_socket_get_fd(s)
        var on: Int32 = 1
        _ = setsockopt(fd, solNetlink, netlinkCapAck, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, solNetlink, netlinkExtAck, &on, socklen_t(MemoryLayout<Int32>.size))
        if let cb = nl_socket_get_cb(s) {
            let arg = Unmanaged.passUnretained(sink).toOpaque()  // `sink` lives as long as self
            nl_cb_err(cb, NL_CB_CUSTOM, { _, err, arg in
                guard let err, let arg else { return Int32(NL_STOP.rawValue) }
                let sink = Unmanaged<NetlinkErrorSink>.fromOpaque(arg).takeUnretainedValue()
                sink.kernelErrno = -err.pointee.error
                sink.kernelMessage = Netlink.extAckMessage(err)
                // NL_STOP: libnl then returns -nl_syserr2nlerr(error) to the caller, as by default.
                return Int32(NL_STOP.rawValue)
            }, arg)
            nl_cb_put(cb)
        }
    }

    deinit { nl_socket_free(sock) }

    // MARK: Links

    /// Interface index of `name`, nil if no such interface.
    public func linkIndex(name: String) throws(LinuxError) -> Int32? {
        let op = "look up interface \(name)"
        try validateInterfaceName(name, operation: op)
        guard let link = try fetchLink(name, operation: op) else { return nil }
        defer { rtnl_link_put(link) }
        return rtnl_link_get_ifindex(link)
    }

    /// Current state of `interface`, nil if absent.
    public func linkInfo(interface: String) throws(LinuxError) -> LinkInfo? {
        let op = "get link info of \(interface)"
        try validateInterfaceName(interface, operation: op)
        guard let link = try fetchLink(interface, operation: op) else { return nil }
        defer { rtnl_link_put(link) }
        var mac: String?
        if let a = rtnl_link_get_addr(link), nl_addr_get_len(a) > 0, let p = nl_addr_get_binary_addr(a) {
            mac = MACText.format(UnsafeRawBufferPointer(start: p, count: Int(nl_addr_get_len(a))))
        }
        let master = rtnl_link_get_master(link)
        return LinkInfo(name: rtnl_link_get_name(link).map { String(cString: $0) } ?? interface,
                        index: rtnl_link_get_ifindex(link),
                        mac: mac,
                        mtu: Int(rtnl_link_get_mtu(link)),
                        isUp: rtnl_link_get_flags(link) & ifUp != 0,
                        masterIndex: master > 0 ? master : nil,
                        kind: rtnl_link_get_type(link).map { String(cString: $0) })
    }

    /// Sets the hardware address ("02:00:00:aa:bb:cc"). Unicast only.
    public func setMAC(interface: String, mac: String) throws(LinuxError) {
        let op = "set MAC \(mac) on \(interface)"
        guard let bytes = MACText.parse(mac) else {
            throw LinuxError(operation: op, errno: EINVAL,
                             detail: "'\(mac)' is not a MAC address (expected six hex pairs like 02:00:00:aa:bb:cc)")
        }
        if bytes[0] & 1 != 0 || bytes.allSatisfy({ $0 == 0 }) {
            throw LinuxError(operation: op, errno: EADDRNOTAVAIL,
                             detail: "\(mac) is a \(bytes[0] & 1 != 0 ? "multicast" : "zero") address, an interface needs a unicast one")
        }
        guard let addr = bytes.withUnsafeBytes({ nl_addr_build(AF_LLC, $0.baseAddress, 6) }) else {
            throw LinuxError(operation: op, errno: ENOMEM)
        }
        defer { nl_addr_put(addr) }
        try changeLink(interface, operation: op) { rtnl_link_set_addr($0, addr) }
    }

    public func setMTU(interface: String, mtu: Int) throws(LinuxError) {
        let op = "set MTU \(mtu) on \(interface)"
        guard mtu > 0, mtu <= Int(UInt32.max) else {
            throw LinuxError(operation: op, errno: EINVAL, detail: "MTU \(mtu) is out of range")
        }
        try changeLink(interface, operation: op) { rtnl_link_set_mtu($0, UInt32(mtu)) }
    }

    /// Sets the administrative state (IFF_UP).
    public func setUp(interface: String, _ up: Bool) throws(LinuxError) {
        let op = "set \(interface) \(up ? "up" : "down")"
        try changeLink(interface, operation: op) { change in
            if up { rtnl_link_set_flags(change, ifUp) } else { rtnl_link_unset_flags(change, ifUp) }
        }
    }

    /// Makes `interface` a port of the existing Linux bridge `bridge`.
    public func enslave(interface: String, bridge: String) throws(LinuxError) {
        let op = "enslave \(interface) to \(bridge)"
        try validateInterfaceName(bridge, operation: op)
        guard let br = try fetchLink(bridge, operation: op) else {
            throw LinuxError(operation: op, errno: ENODEV, detail: "bridge \(bridge) does not exist")
        }
        defer { rtnl_link_put(br) }
        let kind = rtnl_link_get_type(br).map { String(cString: $0) }
        guard kind == "bridge" else {
            throw LinuxError(operation: op, errno: EINVAL,
                             detail: "\(bridge) is not a bridge (its kind is \(kind.map { "'\($0)'" } ?? "none"))")
        }
        let index = rtnl_link_get_ifindex(br)
        try changeLink(interface, operation: op) { rtnl_link_set_master($0, index) }
    }

    /// Removes `interface` from its bridge (no-op when it has none).
    public func release(interface: String) throws(LinuxError) {
        try setMaster(interface: interface, index: 0)
    }

    /// Sets the master by index (0: none); used to put a link back where it was.
    func setMaster(interface: String, index: Int32) throws(LinuxError) {
        let op = index == 0 ? "release \(interface) from its bridge" : "set master of \(interface) to ifindex \(index)"
        try changeLink(interface, operation: op) { rtnl_link_set_master($0, index) }
    }

    /// Deletes the interface (for a TAP: equivalent to the owner closing it).
    public func deleteLink(interface: String) throws(LinuxError) {
        let op = "delete interface \(interface)"
        let link = try requireLink(interface, operation: op)
        defer { rtnl_link_put(link) }
        sink.reset()
        let r = rtnl_link_delete(sock, link)
        if r < 0 { throw netlinkError(op, r) }
    }

    // MARK: Addresses

    /// Adds "10.0.0.1/24" or "fd00::1/64" (no prefix: /32 or /128). EEXIST if already present.
    public func addAddress(interface: String, address: String) throws(LinuxError) {
        let op = "add address \(address) to \(interface)"
        let cidr = try parseCIDR(address, operation: op)
        let index = try requireIndex(interface, operation: op)
        let addr = try makeAddress(cidr, ifIndex: index, operation: op)
        defer { rtnl_addr_put(addr) }
        if let bc = cidr.ipv4Broadcast, let nb = bc.withUnsafeBytes({ nl_addr_build(AF_INET, $0.baseAddress, 4) }) {
            _ = rtnl_addr_set_broadcast(addr, nb)
            nl_addr_put(nb)
        }
        sink.reset()
        let r = rtnl_addr_add(sock, addr, NLM_F_EXCL)
        if r < 0 { throw netlinkError(op, r) }
    }

    /// Removes an address. Without "/prefix" the prefix of the matching configured address is used.
    public func removeAddress(interface: String, address: String) throws(LinuxError) {
        let op = "remove address \(address) from \(interface)"
        var cidr = try parseCIDR(address, operation: op)
        let index = try requireIndex(interface, operation: op)
        if !address.contains("/") {
            let current = try addressList(ifIndex: index, operation: op)
            if let match = current.first(where: { $0.family == cidr.family && $0.bytes == cidr.bytes }) {
                cidr.prefixLength = match.prefixLength
            }
        }
        let addr = try makeAddress(cidr, ifIndex: index, operation: op)
        defer { rtnl_addr_put(addr) }
        sink.reset()
        let r = rtnl_addr_delete(sock, addr, 0)
        if r < 0 { throw netlinkError(op, r) }
    }

    /// All addresses on `interface` as "addr/prefix" (includes kernel-made IPv6 link-local ones).
    public func addresses(interface: String) throws(LinuxError) -> [String] {
        let op = "list addresses of \(interface)"
        let index = try requireIndex(interface, operation: op)
        return try addressList(ifIndex: index, operation: op).map(\.description)
    }

    // MARK: Internals

    func addressList(ifIndex: Int32, operation: String) throws(LinuxError) -> [InterfaceCIDR] {
        var cache: OpaquePointer?
        sink.reset()
        let r = rtnl_addr_alloc_cache(sock, &cache)
        guard r >= 0, let cache else { throw netlinkError(operation, r) }
        defer { nl_cache_free(cache) }
        var result: [InterfaceCIDR] = []
        var obj = nl_cache_get_first(cache)
        while let o = obj {
            if rtnl_addr_get_ifindex(o) == ifIndex, let local = rtnl_addr_get_local(o),
               let p = nl_addr_get_binary_addr(local) {
                let len = Int(nl_addr_get_len(local))
                let fam = Int32(nl_addr_get_family(local))
                if (fam == AF_INET && len == 4) || (fam == AF_INET6 && len == 16) {
                    let bytes = Array(UnsafeRawBufferPointer(start: p, count: len))
                    result.append(InterfaceCIDR(family: fam, bytes: bytes, prefixLength: Int(rtnl_addr_get_prefixlen(o))))
                }
            }
            obj = nl_cache_get_next(o)
        }
        return result
    }

    func parseCIDR(_ text: String, operation: String) throws(LinuxError) -> InterfaceCIDR {
        guard let c = InterfaceCIDR(parsing: text) else {
            throw LinuxError(operation: operation, errno: EINVAL,
                             detail: "'\(text)' is not an address with optional prefix (like 10.0.0.1/24 or fd00::1/64)")
        }
        return c
    }

    private func makeAddress(_ cidr: InterfaceCIDR, ifIndex: Int32, operation: String) throws(LinuxError) -> OpaquePointer {
        guard let addr = rtnl_addr_alloc() else { throw LinuxError(operation: operation, errno: ENOMEM) }
        guard let local = cidr.bytes.withUnsafeBytes({ nl_addr_build(cidr.family, $0.baseAddress, $0.count) }) else {
            rtnl_addr_put(addr)
            throw LinuxError(operation: operation, errno: ENOMEM)
        }
        defer { nl_addr_put(local) }
        nl_addr_set_prefixlen(local, Int32(cidr.prefixLength))
        rtnl_addr_set_ifindex(addr, ifIndex)
        let r = rtnl_addr_set_local(addr, local)
        if r < 0 {
            rtnl_addr_put(addr)
            throw LinuxError.netlink(operation, nlResult: r)
        }
        rtnl_addr_set_prefixlen(addr, Int32(cidr.prefixLength))
        return addr
    }

    /// The link object (caller puts it), nil if the kernel says there is no such device.
    func fetchLink(_ name: String, operation: String) throws(LinuxError) -> OpaquePointer? {
        var link: OpaquePointer?
        sink.reset()
        let r = rtnl_link_get_kernel(sock, 0, name, &link)
        if r >= 0, let link { return link }
        if sink.kernelErrno == ENODEV || r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV { return nil }
        throw netlinkError(operation, r)
    }

    func requireLink(_ name: String, operation: String) throws(LinuxError) -> OpaquePointer {
        try validateInterfaceName(name, operation: operation)
        guard let link = try fetchLink(name, operation: operation) else {
            throw LinuxError(operation: operation, errno: ENODEV, detail: "interface \(name) does not exist")
        }
        return link
    }

    func requireIndex(_ name: String, operation: String) throws(LinuxError) -> Int32 {
        let link = try requireLink(name, operation: operation)
        defer { rtnl_link_put(link) }
        return rtnl_link_get_ifindex(link)
    }

    private func changeLink(_ name: String, operation: String,
                            _ fill: (OpaquePointer) -> Void) throws(LinuxError) {
        let orig = try requireLink(name, operation: operation)
        defer { rtnl_link_put(orig) }
        guard let change = rtnl_link_alloc() else { throw LinuxError(operation: operation, errno: ENOMEM) }
        defer { rtnl_link_put(change) }
        fill(change)
        sink.reset()
        let r = rtnl_link_change(sock, orig, change, 0)
        if r < 0 { throw netlinkError(operation, r) }
    }

    func netlinkError(_ operation: String, _ r: Int32,
                              file: String = #fileID, line: Int = #line) -> LinuxError {
        LinuxError.netlink(operation, nlResult: r,
                           kernelErrno: sink.kernelErrno > 0 ? sink.kernelErrno : nil,
                           kernelMessage: sink.kernelMessage, file: file, line: line)
    }

    /// NLMSGERR_ATTR_MSG from an extended ACK. `err` points just past the nlmsghdr of the error
    /// message; the TLVs follow the (possibly capped) echo of our request.
    static func extAckMessage(_ err: UnsafeMutablePointer<nlmsgerr>) -> String? {
        let body = UnsafeRawPointer(err)
        let header = body - nlmsgHeaderLength
        let total = Int(header.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let flags = header.loadUnaligned(fromByteOffset: 6, as: UInt16.self)
        guard flags & nlmFAckTLVs != 0 else { return nil }
        // struct nlmsgerr = int error + struct nlmsghdr msg (+ payload unless capped).
        var offset = nlmsgHeaderLength + 4 + nlmsgHeaderLength
        if flags & nlmFCapped == 0 {
            let echoed = Int(err.pointee.msg.nlmsg_len)
            offset = nlmsgHeaderLength + 4 + ((echoed + 3) & ~3)
        }
        while offset + 4 <= total {
            let len = Int(header.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            let type = header.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & 0x3fff
            guard len >= 4, offset + len <= total else { return nil }
            if type == nlmsgerrAttrMsg {
                let text = UnsafeRawBufferPointer(start: header + offset + 4, count: len - 4)
                let bytes = text.prefix(while: { $0 != 0 })
                return String(decoding: bytes, as: UTF8.self)
            }
            offset += (len + 3) & ~3
        }
        return nil
    }
}

/// One thread at a time: the libnl socket and the error sink are unsynchronized.
@available(*, unavailable)
extension Netlink: Sendable {}
