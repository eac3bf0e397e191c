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
        if byHandle[u.handle] === u {
            byHandle[u.handle] = nil
            stack?.udpClose(u.handle)
        }
        if let d = u.data { loop.close(d); u.data = nil }
    }

    // MARK: - Ops

    /// A new socket bound to `local` (port 0: ephemeral), taking over the daemon end `fd`.
    func create(_ call: RPCCall, _ sr: ztrpc_sock_req, key: FDKey, fd: Int32, local: IPv4Endpoint,
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
            ctx.interface = optionEnv.interface
            ctx.capable = OptionEnvironment.capabilities(ofProcess: call.peer.pid)
            _ = SocketOptionMap.set(level: r.level, name: r.name, value: r.value, optlen: r.optlen, options: &o, context: ctx)
        }
        let h: SocketHandle
        do {
            h = try stack.udpOpen(local: local, options: PortTable.Options(reuseAddress: o.reuseAddr,
                                                                           reusePort: o.reusePort, uid: call.peer.uid))
        } catch {
            sys.close(fd)
            gate.give(charge)
            return .failure(Errno(rawValue: Wire.errno(error)))
        }
        let u = UDPConnection(key: key, pid: sr.ownerPID(peer: call.peer.pid), uid: call.peer.uid, handle: h)
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

    func bind(_ call: RPCCall, _ sr: ztrpc_sock_req, newSocket: (key: FDKey, fd: Int32)?, local: IPv4Endpoint,
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
            switch create(call, sr, key: n.key, fd: n.fd, local: IPv4Endpoint(.any, 0), preOptions: preOptions) {
            case .success(let x): u = x
            case .failure(let e): return .fail(e.rawValue, .none)
            }
        } else {
            guard let x = call.fds.first.flatMap(FDKey.of).flatMap(lookup) else { return .fail(ENOTSOCK, .none) }
            u = x
        }
        let dst = Wire.endpoint(sr.addr)
        do {
            try stack.udpConnect(u.handle, remote: dst.address.isUnspecified && dst.port == 0 ? nil : dst)
        } catch {
            if newSocket != nil { remove(u) }
            return .fail(Wire.errno(error), .none)
        }
        return .ok(.info(info(u)))
    }

    /// The socket's state as SocketOptionMap needs it.
    func optionContext(_ call: RPCCall, _ u: UDPConnection) -> OptionContext {
        var ctx = OptionContext(isTCP: false)
        ctx.defaultReceiveBuffer = Int(SocketOptionMap.rmemDefault)
        ctx.defaultSendBuffer = Int(SocketOptionMap.wmemDefault)
        let i = info(u)
        ctx.local = Wire.endpoint(i.local)
        ctx.peer = i.state == ZTRPC_STATE_CONNECTED ? Wire.endpoint(i.peer) : nil
        ctx.mtu = stack?.mtu
        ctx.interface = optionEnv.interface
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
            u.shut |= UInt16(truncatingIfNeeded: bits) & (ZTRPC_SHUT_RD | ZTRPC_SHUT_WR)
            return .ok(.none)
        }
        switch SocketOptionMap.set(level: r.level, name: r.name, value: r.value, optlen: r.optlen,
                                   options: &u.options, context: optionContext(call, u)) {
        case .success:
            try? stack?.udpSetIPOptions(u.handle, u.options.ipSendOptions)
            return .ok(.none)
        case .failure(let e):
            return .fail(e.rawValue, .none)
        }
    }

    func info(_ u: UDPConnection) -> ztrpc_sockinfo {
        let remote = stack?.udpRemoteEndpoint(u.handle)
        var local = stack?.udpLocalEndpoint(u.handle)
        if let l = local, l.address.isUnspecified, let r = remote, let a = stack?.sourceAddress(for: r.address) {
            // A connected socket names the address it sends from, like Linux.
            local = IPv4Endpoint(a, l.port)
        }
        return ztrpc_sockinfo(proto: IPProtocol.udp, state: remote != nil ? ZTRPC_STATE_CONNECTED : ZTRPC_STATE_BOUND,
                              shut: u.shut, backlog: 0, local: Wire.addr(local), peer: Wire.addr(remote))
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
            guard let dst = RPCCodec.datagramDestination(msg), let stack else { u.dropped &+= 1; continue }
            let payload = UnsafeRawBufferPointer(rebasing: msg[Self.header...])
            // UDP_SEGMENT (GSO): one send of several segments' worth leaves as datagrams of
            // that size, the last one shorter, as Linux sends it.
            let seg = Int(u.options.udpSegment)
            var off = 0
            repeat {
                let len = seg > 0 ? min(seg, payload.count - off) : payload.count
                do {
                    try stack.udpSend(u.handle, to: dst, UnsafeRawBufferPointer(rebasing: payload[off..<(off + len)]),
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
        guard let stack, let s = u.data, !s.isClosed else { return }
        if let e = stack.udpTakeError(u.handle), !u.appReadClosed {
            // An ICMP error for the connected peer: a payload-less message the library turns
            // into -1/errno on the app's next receive.
            var h = RPCCodec.datagramError(peer: stack.udpRemoteEndpoint(u.handle), errno: Wire.errno(e))
            _ = try? withUnsafeBytes(of: &h) { b throws(Errno) in try sys.send(s.fd, b) }
        }
        let room = UnsafeMutableRawBufferPointer(rebasing: buffer[Self.header...])
        while true {
            guard let r = (try? stack.udpReceiveDatagram(u.handle, into: room)) ?? nil else { return }
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

    // MARK: - Listing

    func connections(network: String) -> [ConnectionInfo] {
        byKey.values.map { u in
            let l = stack?.udpLocalEndpoint(u.handle).map { "\($0)" } ?? "*:*"
            let r = stack?.udpRemoteEndpoint(u.handle).map { "\($0)" } ?? "*:*"
            return ConnectionInfo(network: network, proto: "udp", local: l, remote: r, state: "OPEN",
                                  pid: u.pid, uid: u.uid, bytesIn: u.bytesIn, bytesOut: u.bytesOut,
                                  mode: u.seccomp ? "seccomp" : "preload")
        }
    }
}
