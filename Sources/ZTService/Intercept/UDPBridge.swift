import CShims
import CZTRPC
import Logging
import NetStack
import PhyLoop
import SystemPackage
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

/// Intercepted UDP sockets of one network. Each is a NetStack UDP socket plus the daemon end of
/// a SEQPACKET pair: one message = `ztrpc_dgram` (destination or source) + payload = one
/// datagram, both ways. Runs on the network's loop thread.
final class UDPBridge {
    let loop: any SocketLoop
    let driver: StackDriver
    let gate: BudgetGate
    var sys: Sys { loop.sys }
    var stack: NetStack? { driver.netStack }

    private(set) var byKey: [FDKey: UDPConnection] = [:]
    private var byHandle: [SocketHandle: UDPConnection] = [:]
    /// One datagram plus its header, either way.
    private let buffer: UnsafeMutableRawBufferPointer
    static let header = MemoryLayout<ztrpc_dgram>.size
    /// Datagrams read from one app socket per readiness event (fairness between sockets).
    static let readBatch = 64
    /// Shared with the TCP bridge (interface, cookies).
    var optionEnv = OptionEnvironment(interfaceName: nil)

    init(loop: any SocketLoop, driver: StackDriver, gate: BudgetGate) {
        self.gate = gate
        self.loop = loop
        self.driver = driver
        buffer = .allocate(byteCount: 65536 + 64, alignment: 16)
    }

    deinit { buffer.deallocate() }

    var count: Int { byKey.count }

    static func now() -> Instant { Instant(nanoseconds: Sys.monotonicNanoseconds()) }

    // MARK: - Tables

    func lookup(_ key: FDKey) -> UDPConnection? {
        guard let u = byKey[key] else { return nil }
        if let d = u.data, !d.isClosed, sys.peerHungUp(d.fd) {
            remove(u)
            return nil
        }
        return u
    }

    func forget(_ key: FDKey) {
        if let old = byKey[key] { remove(old) }
    }

    func shutdown() {
        if let stack { for (h, _) in byHandle { stack.udpClose(h) } }
        for u in byKey.values { gate.give(u.charge); u.charge = nil }
        byHandle.removeAll()
        byKey.removeAll()
    }

    func stackReplaced() {
        // The old stack's handles may name sockets of the new one: do not close them there.
        byHandle.removeAll()
        for u in Array(byKey.values) { remove(u) }
    }

    func remove(_ u: UDPConnection) {
        gate.give(u.charge)
        u.charge = nil
        if byKey[u.key] === u { byKey[u.key] = nil }
        if let h = u.handle, byHandle[h] === u {
            byHandle[h] = nil
            stack?.udpClose(h)
        }
        if let d = u.data { loop.close(d); u.data = nil }
    }

    // MARK: - Ops

    /// A new socket bound to `local` (port 0: ephemeral), taking over the daemon end `fd`.
    func create(_ call: RPCCall, _ sr: ztrpc_sock_req, key: FDKey, fd: Int32, local: IPEndpoint,
                preOptions: [SocketOptionRecord] = []) -> Result<UDPConnection, Errno> {
        guard let stack else { sys.close(fd); return .failure(.networkDown) }
        let charge: BudgetCharge
        switch gate.take(uid: call.peer.uid, pid: call.peer.pid, kind: .udp, bytes: stack.config.udpQueueBytes) {
        case .success(let c): charge = c
        case .failure(let e): sys.close(fd); return .failure(e)
        }
        // Options set before interception: applied to the recorded set first, so the port
        // table sees SO_REUSEADDR/SO_REUSEPORT from any of them.
        var o = SocketOptions(sr.opts)
        for r in preOptions {
            var ctx = OptionContext(isTCP: false)
            ctx.family = Wire.family(sr)
            ctx.v6Only = sr.v6Only
            ctx.interfaceLookup = { [optionEnv] in optionEnv.interface }
            ctx.capable = OptionEnvironment.capabilities(ofProcess: call.peer.pid)
            _ = SocketOptionMap.set(level: r.level, name: r.name, value: r.value, optlen: r.optlen, options: &o, context: ctx)
        }
        let h: SocketHandle
        do {
            h = try stack.udpOpen(local: local, options: PortTable.Options(reuseAddress: o.reuseAddr,
                                                                           reusePort: o.reusePort, uid: call.peer.uid,
                                                                           v6Only: sr.v6Only))
        } catch {
            sys.close(fd)
            gate.give(charge)
            return .failure(Errno(rawValue: Wire.errno(error)))
        }
        let u = UDPConnection(key: key, pid: sr.ownerPID(peer: call.peer.pid), uid: call.peer.uid, handle: h)
        u.boundAddress = local.address
        u.portChosen = local.port != 0
        u.family = Wire.family(sr)
        u.v6Only = sr.v6Only
        u.seccomp = sr.fromSeccomp
        u.options = o
        try? stack.udpSetIPOptions(h, o.ipSendOptions)
        u.charge = charge
        do {
            u.data = try loop.add(fd: fd, kind: .connected, context: .udp(u))
        } catch {
            sys.close(fd)
            stack.udpClose(h)
            gate.give(charge)
            return .failure(error)
        }
        byKey[key] = u
        byHandle[h] = u
        return .success(u)
    }

    func bind(_ call: RPCCall, _ sr: ztrpc_sock_req, newSocket: (key: FDKey, fd: Int32)?, local: IPEndpoint,
              preOptions: [SocketOptionRecord] = []) -> RPCOutcome {
        guard let n = newSocket else {
            let known = call.fds.first.flatMap(FDKey.of).flatMap(lookup) != nil
            return .fail(known ? EINVAL : ENOTSOCK, .none)
        }
        switch create(call, sr, key: n.key, fd: n.fd, local: local, preOptions: preOptions) {
        case .success(let u): return .ok(.info(info(u)))
        case .failure(let e): return .fail(e.rawValue, .none)
        }
    }

    func connect(_ call: RPCCall, _ sr: ztrpc_sock_req, newSocket: (key: FDKey, fd: Int32)?,
                 preOptions: [SocketOptionRecord] = []) -> RPCOutcome {
        guard let stack else {
            if let n = newSocket { sys.close(n.fd) }
            return .fail(ENETDOWN, .none)
        }
        let u: UDPConnection
        if let n = newSocket {
            let dst = Wire.endpoint(sr.addr)
            if !(dst.address.isUnspecified && dst.port == 0), let e = sr.familyError(dst.address, mapped: ENETUNREACH) {
                sys.close(n.fd)
                return .fail(e, .none)
            }
            switch create(call, sr, key: n.key, fd: n.fd, local: sr.wildcard, preOptions: preOptions) {
            case .success(let x): u = x
            case .failure(let e): return .fail(e.rawValue, .none)
            }
        } else {
            guard let x = call.fds.first.flatMap(FDKey.of).flatMap(lookup) else { return .fail(ENOTSOCK, .none) }
            u = x
        }
        let dst = Wire.endpoint(sr.addr)
        let dissolve = dst.address.isUnspecified && dst.port == 0
        if !dissolve {
            if u.family == AF_INET && !dst.address.isV4 { return .fail(EAFNOSUPPORT, .none) }
            if u.v6Only && dst.address.isV4 { return .fail(ENETUNREACH, .none) }
        }
        if dissolve && u.handle == nil { return .ok(.info(info(u))) }
        do {
            // No port to reopen on: Linux's failed autobind says EAGAIN.
            guard let h = u.handle ?? reopen(u) else { return .fail(EAGAIN, .none) }
            try stack.udpConnect(h, remote: dissolve ? nil : dst)
            if dissolve && !u.portChosen {
                // Linux (__udp_disconnect): a port the socket did not choose is given back.
                byHandle[h] = nil
                stack.udpClose(h)
                u.handle = nil
            }
        } catch {
            if newSocket != nil { remove(u) }
            return .fail(Wire.errno(error), .none)
        }
        return .ok(.info(info(u)))
    }

    /// A new ephemeral port for a socket whose port was released (see `UDPConnection.handle`),
    /// on its bound address, with the socket's current options.
    private func reopen(_ u: UDPConnection) -> SocketHandle? {
        guard let stack, let h = try? stack.udpOpen(
            local: IPEndpoint(u.boundAddress, 0),
            options: PortTable.Options(reuseAddress: u.options.reuseAddr, reusePort: u.options.reusePort,
                                       uid: u.uid, v6Only: u.v6Only)) else { return nil }
        try? stack.udpSetIPOptions(h, u.options.ipSendOptions)
        u.handle = h
        byHandle[h] = u
        return h
    }

    /// The socket's state as SocketOptionMap needs it.
    func optionContext(_ call: RPCCall, _ u: UDPConnection) -> OptionContext {
        var ctx = OptionContext(isTCP: false)
        ctx.defaultReceiveBuffer = Int(SocketOptionMap.rmemDefault)
        ctx.defaultSendBuffer = Int(SocketOptionMap.wmemDefault)
        let i = info(u)
        ctx.local = Wire.local(i.local, family: u.family)
        ctx.peer = i.state == ZTRPC_STATE_CONNECTED ? Wire.endpoint(i.peer) : nil
        ctx.mtu = stack.map { s in ctx.peer.map { $0.address.isV4 ? s.mtu : s.pathMTU6(to: $0.address) } ?? s.mtu }
        ctx.family = u.family
        ctx.v6Only = u.v6Only
        ctx.interfaceLookup = { [optionEnv] in optionEnv.interface }
        ctx.cookie = u.options.cookie
        ctx.capable = OptionEnvironment.capabilities(ofProcess: call.peer.pid)
        ctx.callerHasFD = OptionEnvironment.hasFD(ofProcess: call.peer.pid)
        return ctx
    }

    func getsockopt(_ call: RPCCall, _ u: UDPConnection, _ request: ztrpc_sockopt) -> RPCOutcome {
        let so = request
        if so.level == SOL_SOCKET && so.name == SO_ERROR {
            return .ok(.opt(level: so.level, name: so.name, value: .int(0)))
        }
        if u.options.cookie == 0 { u.options.cookie = optionEnv.nextCookie() }
        var ctx = optionContext(call, u)
        if so.level == SOL_SOCKET && so.name == SocketOptionMap.SO_NETNS_COOKIE, let d = u.data {
            ctx.netnsCookie = OptionEnvironment.netnsCookie(of: d.fd)
        }
        switch SocketOptionMap.get(level: so.level, name: so.name, len: Int(so.optlen), options: u.options, context: ctx) {
        case .success(let v): return .ok(.opt(level: so.level, name: so.name, value: .bytes(v)))
        case .failure(let e): return .fail(e.rawValue, .none)
        }
    }

    func setsockopt(_ call: RPCCall, _ u: UDPConnection, _ r: SocketOptionRecord) -> RPCOutcome {
        if r.level == ZTRPC_SOL_ZTAP && r.name == ZTRPC_ZT_SHUTDOWN {
            guard r.optlen >= 4 else { return .fail(EINVAL, .none) }
            let bits = SocketOptionMap.Value(r.value, r.optlen).int
            u.shut |= UInt8(truncatingIfNeeded: bits) & UInt8(ZTRPC_SHUT_RD | ZTRPC_SHUT_WR)
            if u.shut == UInt8(ZTRPC_SHUT_RD | ZTRPC_SHUT_WR), let d = u.data {
                // Shut both ways, the socket moves nothing any more. Closing our end gives the app
                // end the POLLHUP Linux shows then; its close cannot be seen after that, so the
                // socket stays nameable for a while only.
                loop.close(d)
                u.data = nil
                linger(u)
            }
            return .ok(.none)
        }
        switch SocketOptionMap.set(level: r.level, name: r.name, value: r.value, optlen: r.optlen,
                                   options: &u.options, context: optionContext(call, u)) {
        case .success:
            if let h = u.handle { try? stack?.udpSetIPOptions(h, u.options.ipSendOptions) }
            return .ok(.none)
        case .failure(let e):
            return .fail(e.rawValue, .none)
        }
    }

    func info(_ u: UDPConnection) -> ztrpc_sockinfo {
        let remote = u.handle.flatMap { stack?.udpRemoteEndpoint($0) }
        var local = u.handle.flatMap { stack?.udpLocalEndpoint($0) } ?? IPEndpoint(u.boundAddress, 0)
        if local.address.isUnspecified, let r = remote, let a = stack?.sourceAddress(for: r.address) {
            // A connected socket names the address it sends from, like Linux.
            local = IPEndpoint(a, local.port)
        }
        return ztrpc_sockinfo(proto: IPProtocol.udp, state: remote != nil ? ZTRPC_STATE_CONNECTED : ZTRPC_STATE_BOUND,
                              shut: u.shut, family: UInt8(u.family), backlog: 0, local: Wire.addr(local),
                              peer: Wire.addr(remote), flags: u.v6Only ? ZTRPC_SI_V6ONLY : 0, secret: (0, 0),
                              reserved: 0, dev: u.key.dev, ino: u.key.ino)
    }

    // MARK: - Data

    /// App -> stack: one message = one datagram.
    func readable(_ u: UDPConnection, _ s: LoopSocket) {
        for _ in 0..<Self.readBatch {
            let n: Int
            do {
                // MSG_TRUNC: the real length, so a message longer than any datagram is seen as
                // such and dropped whole instead of sent cut short.
                guard case .processed(let k) = try sys.recv(s.fd, into: buffer, flags: Int32(MSG_TRUNC)) else { return }
                n = k
            } catch {
                remove(u)
                return
            }
            if n == 0 {
                // SEQPACKET: zero bytes is the peer's close (a real message has at least the header).
                remove(u)
                return
            }
            if n > buffer.count {
                u.oversized &+= 1
                u.dropped &+= 1
                continue
            }
            let msg = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            guard let dst = RPCCodec.datagramDestination(msg), let stack,
                  let h = u.handle ?? reopen(u) else { u.dropped &+= 1; continue }
            let payload = UnsafeRawBufferPointer(rebasing: msg[Self.header...])
            // UDP_SEGMENT (GSO): one send of several segments' worth leaves as datagrams of
            // that size, the last one shorter, as Linux sends it.
            let seg = Int(u.options.udpSegment)
            var off = 0
            repeat {
                let len = seg > 0 ? min(seg, payload.count - off) : payload.count
                do {
                    try stack.udpSend(h, to: dst, UnsafeRawBufferPointer(rebasing: payload[off..<(off + len)]),
                                      now: Self.now())
                    u.bytesOut &+= UInt64(len)
                } catch {
                    u.dropped &+= 1
                }
                off += len
            } while off < payload.count
        }
    }

    /// Stack -> app: every queued datagram, prefixed with its source. A full app socket drops
    /// (UDP semantics; memory stays bounded by the socketpair's buffer).
    func deliver(_ u: UDPConnection) {
        guard let stack, let s = u.data, !s.isClosed, let h = u.handle else { return }
        if let e = stack.udpTakeError(h), !u.appReadClosed {
            // An ICMP error for the connected peer: a payload-less message the library turns
            // into -1/errno on the app's next receive.
            var m = RPCCodec.datagramError(peer: stack.udpRemoteEndpoint(h), errno: Wire.errno(e))
            _ = try? withUnsafeBytes(of: &m) { b throws(Errno) in try sys.send(s.fd, b) }
        }
        let room = UnsafeMutableRawBufferPointer(rebasing: buffer[Self.header...])
        while true {
            guard let r = (try? stack.udpReceiveDatagram(h, into: room)) ?? nil else { return }
            if u.appReadClosed { u.dropped &+= 1; continue }
            buffer.storeBytes(of: RPCCodec.datagramHeader(from: r.from), as: ztrpc_dgram.self)
            do {
                if case .processed = try sys.send(s.fd, UnsafeRawBufferPointer(rebasing: buffer[0..<(Self.header + r.count)])) {
                    u.bytesIn &+= UInt64(r.count)
                } else {
                    u.dropped &+= 1
                }
            } catch {
                if error == .brokenPipe { u.appReadClosed = true }
                u.dropped &+= 1
            }
        }
    }

    func stackReadable(_ h: SocketHandle) {
        if let u = byHandle[h] { deliver(u) }
    }

    // MARK: - Lingering

    /// Sockets shut down both ways whose data end is closed: named (getsockname, options) for
    /// `TCPBridge.lingerTime`, then forgotten. At most `TCPBridge.lingerLimit` at once.
    private var lingering: [(u: UDPConnection, until: Instant)] = []

    private func linger(_ u: UDPConnection) {
        if lingering.count >= TCPBridge.lingerLimit {
            let oldest = lingering.removeFirst().u
            if byKey[oldest.key] === oldest { remove(oldest) }
        }
        lingering.append((u, Self.now() + TCPBridge.lingerTime))
    }

    var nextDeadline: Instant? { lingering.first?.until }

    func runTimers(now: Instant) {
        while let f = lingering.first, f.until <= now {
            lingering.removeFirst()
            if byKey[f.u.key] === f.u { remove(f.u) }
        }
    }

    // MARK: - Listing

    func connections(network: String) -> [ConnectionInfo] {
        byKey.values.map { u in
            let l = u.handle.flatMap { stack?.udpLocalEndpoint($0) }.map { "\($0)" } ?? "*:*"
            let r = u.handle.flatMap { stack?.udpRemoteEndpoint($0) }.map { "\($0)" } ?? "*:*"
            return ConnectionInfo(network: network, proto: "udp", local: l, remote: r, state: "OPEN",
                                  pid: u.pid, uid: u.uid, bytesIn: u.bytesIn, bytesOut: u.bytesOut,
                                  mode: u.seccomp ? "seccomp" : "preload")
        }
    }
}
