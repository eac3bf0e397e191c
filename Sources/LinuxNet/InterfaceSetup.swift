// InterfaceSetup.swift - the whole kernel-side configuration of one network's TAP, all or nothing.

#if canImport(Glibc)
import Glibc
#endif

/// Applies a whole interface config in the settled order MAC -> MTU -> addresses -> bridge -> up.
/// On any failure, undoes what it did (addresses removed, bridge released, MTU and MAC restored)
/// and throws the first error; failures while undoing are listed in its `rollbackFailures`.
///
/// Addresses already present on the interface are left alone (not re-added, not removed on
/// rollback), so applying the same setup twice is harmless.
public struct InterfaceSetup: Sendable, Equatable {
    public var name: String
    /// nil keeps the kernel-chosen MAC.
    public var mac: String?
    public var mtu: Int
    /// "10.0.0.1/24", "fd00::1/64"... given to the kernel side of the TAP.
    public var kernelAddresses: [String]
    /// Existing Linux bridge to enslave the interface to; nil for none.
    public var bridge: String?

    public init(name: String, mac: String? = nil, mtu: Int, kernelAddresses: [String] = [],
                bridge: String? = nil) {
        self.name = name
        self.mac = mac
        self.mtu = mtu
        self.kernelAddresses = kernelAddresses
        self.bridge = bridge
    }

    public func apply(using netlink: Netlink) throws(LinuxError) {
        guard let original = try netlink.linkInfo(interface: name) else {
            throw LinuxError(operation: "configure \(name)", errno: ENODEV, detail: "interface \(name) does not exist")
        }
        // Reject bad address text before touching anything.
        var wanted: [InterfaceCIDR] = []
        for text in kernelAddresses {
            guard let c = InterfaceCIDR(parsing: text) else {
                throw LinuxError(operation: "add address \(text) to \(name)", errno: EINVAL,
                                 detail: "'\(text)' is not an address with optional prefix (like 10.0.0.1/24 or fd00::1/64)")
            }
            if !wanted.contains(c) { wanted.append(c) }
        }
        // The kernel disables IPv6 on links below 1280 and then rejects the address with a bare
        // EINVAL; say why instead.
        if mtu < 1280, let v6 = wanted.first(where: { $0.family == AF_INET6 }) {
            throw LinuxError(operation: "set MTU \(mtu) on \(name)", errno: EINVAL,
                             detail: "\(LinuxError.errnoText(EINVAL)): IPv6 address \(v6) needs an MTU of at least 1280")
        }

        var undo: [Undo] = []
        do {
            if let mac, MACText.parse(mac) != MACText.parse(original.mac ?? "") {
                try netlink.setMAC(interface: name, mac: mac)
                if let old = original.mac {
                    undo.append(.mac(old))
                }
            }
            if mtu != original.mtu {
                try netlink.setMTU(interface: name, mtu: mtu)
                let old = original.mtu
                undo.append(.mtu(old))
            }
            let present = try netlink.addressList(ifIndex: original.index, operation: "list addresses of \(name)")
            for c in wanted where !present.contains(c) {
                try netlink.addAddress(interface: name, address: c.description)
                undo.append(.address(c.description))
            }
            if let bridge {
                try netlink.enslave(interface: name, bridge: bridge)
                undo.append(.master(original.masterIndex ?? 0))  // back to its old bridge, or none
            }
            if !original.isUp {
                try netlink.setUp(interface: name, true)
            }
        } catch {
            var first = error
            for step in undo.reversed() {
                do {
                    switch step {
                    case .mac(let old): try netlink.setMAC(interface: name, mac: old)
                    case .mtu(let old): try netlink.setMTU(interface: name, mtu: old)
                    case .address(let a): try netlink.removeAddress(interface: name, address: a)
                    case .master(let index): try netlink.setMaster(interface: name, index: index)
                    }
                } catch let e {
                    first.rollbackFailures.append(e.description)
                }
            }
            throw first
        }
    }

    private enum Undo {
        case mac(String), mtu(Int), address(String), master(Int32)  // master 0: none
    }
}
