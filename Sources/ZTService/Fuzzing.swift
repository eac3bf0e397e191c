import CShims
import CZTRPC
import Foundation
import LinuxNet
import Logging
import NetStack
import PhyLoop
import SystemPackage
import ZTConfig
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

// Entry points for the libFuzzer harness (Sources/ZTapFuzz, scripts/fuzz.sh), behind an SPI so
// they are no part of the module's API. Each takes one fuzz input and must never crash; a
// broken invariant is a crash on purpose (precondition), which libFuzzer then reports.
//
// Network safety: nothing here opens a netlink socket or a TAP. The RPC target's network is a
// NetworkLoop over a socketpair "device" whose frames are read and dropped; the control target's
// daemon has no netlink, so a `join` fails before any interface exists.

@_spi(Fuzzing)
public enum ServiceFuzz {
    /// RPC input: [flags][message]. flags bit 7: the message arrived truncated, and it goes as
    /// the bytes of a pipe channel (ztrpc.h ZTRPC_OP_CHANNEL) instead of a request; bit 6: first
    /// BIND a new TCP socket (app end s0) to the stack's address, port from the message's last
    /// two bytes; bit 5: first open a UDP socket (app end q0); bits 0-4 pick up to 3 fds for
    /// the message (see `RPCFuzzRig.pickFDs`). The message goes through the codec, then through
    /// a real RPC connection to the hub of a persistent network.
    public static func rpc(_ data: UnsafeRawBufferPointer) {
        guard let flags = data.first else { return }
        let msg = UnsafeRawBufferPointer(rebasing: data[1...])
        if case .success = RPCCodec.decode(msg, truncated: flags & 0x80 != 0) {
            // Only whole, untruncated messages within the protocol's bound decode.
            precondition(flags & 0x80 == 0 && msg.count >= RPCCodec.requestHeaderSize && msg.count <= Int(ZTRPC_MAX_MSG))
        }
        // A pipe channel frames the same messages whether its bytes come whole or in two reads.
        var whole = ChannelStream(), split = ChannelStream()
        var a: [Int] = [], b: [Int] = []
        let okWhole = whole.feed(msg) { a.append($0.count) }
        let cut = msg.count / 2
        let okFirst = split.feed(UnsafeRawBufferPointer(rebasing: msg[..<cut])) { b.append($0.count) }
        let okSplit = okFirst && split.feed(UnsafeRawBufferPointer(rebasing: msg[cut...])) { b.append($0.count) }
        precondition(okWhole == okSplit && a == b && (!okWhole || whole.carry == split.carry))
        RPCFuzzRig.shared.run(flags: flags, message: msg)
    }

    /// Control input: [flags][request line bytes]. flags bit 0: the peer may control ztapd
    /// (else it is a user admitted only to `list`, `get`, `connections`). The line goes through
    /// ControlCodec and Daemon.handle of a daemon whose config lives in a scratch directory.
    public static func control(_ data: UnsafeRawBufferPointer) {
        guard let flags = data.first else { return }
        let line = Array(data[1...])
        let d = ControlFuzzRig.shared.daemon
        let peer = Daemon.ControlPeer(pid: getpid(), uid: flags & 1 != 0 ? 0 : 65534, gid: 65534,
                                      allowed: flags & 1 != 0)
        let (response, close) = d.answer(line, peer: peer)
        // Every answer encodes to one line; a refused peer is always hung up on.
        let encoded = ControlCodec.encodeLine(response)
        precondition(encoded.last == 0x0A && !encoded.dropLast().contains(0x0A))
        precondition(peer.allowed || !close || !response.ok)
        // The daemon never keeps a network it could not bring up.
        precondition(d.networks.isEmpty)
    }
}

/// A frame device over one end of a SEQPACKET socketpair; the other end is drained and dropped.
private final class FuzzDevice: FrameDevice {
    let fd: Int32
    let name = "fuzz"
    init(fd: Int32) { self.fd = fd }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> Int? {
        guard case .processed(let n)? = try? Sys.live.recv(fd, into: buffer), n > 0 else { return nil }
        return n
    }
    func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> Bool {
        guard case .processed(let n)? = try? Sys.live.send(fd, frame) else { return false }
        return n == frame.count
    }
}

private final class RPCFuzzRig: @unchecked Sendable {
    // libFuzzer runs inputs on one thread, one after another.
    nonisolated(unsafe) static let shared = RPCFuzzRig()

    let loop: NetworkLoop
    let rpcPath: String
    let peerFD: Int32
    let stackIP = IPv4Address(10, 99, 0, 2)
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)

    init() {
        let dir = NSTemporaryDirectory() + "ztap-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        rpcPath = dir + "/fuzz.sock"
        var sv: [Int32] = [-1, -1]
        precondition(sv.withUnsafeMutableBufferPointer {
            cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), $0.baseAddress)
        } == 0)
        peerFD = sv[1]
        try? Sys.setNonBlocking(sv[0])
        try? Sys.setNonBlocking(sv[1])
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        var settings = StackSettings(stackMAC: MACAddress(0x02, 0, 0, 0, 0x99, 2), mtu: 1500,
                                     addresses: [IPv4CIDR(address: stackIP, prefixLength: 24)], gateway: nil,
                                     services: ["echo"], tcpReceiveBuffer: 64 << 10, tcpSendBuffer: 64 << 10,
                                     maxConnections: 256)
        // Dual stack, so AF_INET6 sockets (family 10, v4-mapped peers, V6ONLY) are fuzzed too.
        settings.addresses6 = [IPv6CIDR("fd99::2/64")!]
        let device = FuzzDevice(fd: sv[0])
        let driver = NetStackDriver(settings: settings, sink: TapSink(device: device), logger: logger)
        do {
            loop = try NetworkLoop(name: "fuzz", device: device, inbox: Inbox<NetworkCommand>(), driver: driver,
                                   logger: logger, rpcPath: rpcPath, access: AccessList(),
                                   budgets: UserBudgets(.init(tcpSockets: 64, udpSockets: 64, bufferBytes: 64 << 20)))
        } catch {
            preconditionFailure("fuzz rig: \(error)")
        }
        driver.start(now: NetworkLoop.now())
    }

    func turn(_ n: Int) {
        for _ in 0..<n {
            try? loop.turn(maxWait: 0)
            while case .processed(let n)? = try? Sys.live.recv(peerFD, into: scratch), n > 0 {}
        }
    }

    /// One RPC over a fresh connection: sends `body` with `fds`, turns the loop, takes the reply.
    func call(_ body: UnsafeRawBufferPointer, fds: [Int32]) {
        let s = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        guard s >= 0 else { return }
        defer { Sys.live.close(s) }
        guard cshim_connect_unix(s, rpcPath) == 0 else { return }
        let sent = fds.withUnsafeBufferPointer { try? Sys.live.sendWithFDs(s, body, fds: $0) }
        guard sent != nil else { return }
        for _ in 0..<4 {
            turn(1)
            if case .processed? = try? Sys.live.recv(s, into: scratch) { break }
        }
    }

    func run(flags: UInt8, message: UnsafeRawBufferPointer) {
        var sp: [Int32] = [-1, -1], qp: [Int32] = [-1, -1], pp: [Int32] = [-1, -1]
        _ = sp.withUnsafeMutableBufferPointer { cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), $0.baseAddress) }
        _ = qp.withUnsafeMutableBufferPointer { cshim_socketpair_cloexec(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), $0.baseAddress) }
        _ = pp.withUnsafeMutableBufferPointer { Glibc.pipe($0.baseAddress) }
        defer {
            for fd in sp + qp + pp where fd >= 0 { Sys.live.close(fd) }
            turn(3)   // the hub sees the hangups and forgets what the input created
            // Bounded: whatever inputs do, nothing accumulates per input. Two kinds of entry
            // outlive their input by design, bounded elsewhere (TCPBridge.lingerTime and
            // lingerLimit, the stack's timeouts, the uid's socket budget): a failed connect
            // lingers for SO_ERROR; a plugged connect (filler > 0) keeps the app end until its
            // outcome (here an ARP failure, seconds later).
            let hub = loop.hub!
            let lingering = hub.tcp.lingering.filter { hub.tcp.byKey[$0.conn.key] === $0.conn }.count
            let plugged = hub.tcp.byKey.values.filter { c in
                if case .connecting = c.phase { return c.plug != nil } else { return false }
            }.count
            precondition(hub.socketCount - lingering - plugged <= 8,
                         "intercepted sockets pile up: \(hub.socketCount) (\(lingering) lingering, \(plugged) plugged)")
            precondition(cshim_count_open_fds() < 256, "fds pile up: \(cshim_count_open_fds())")
            checkCharges()
        }
        let port = message.count >= 2 ? UInt16(message[message.count - 2]) << 8 | UInt16(message[message.count - 1]) : 0
        if flags & 0x40 != 0 { newSocket(ZTRPC_OP_BIND, proto: IPProtocol.tcp, port: port, app: sp[0], daemon: sp[1]) }
        if flags & 0x20 != 0 { newSocket(ZTRPC_OP_UDP_OPEN, proto: IPProtocol.udp, port: 0, app: qp[0], daemon: qp[1]) }
        if flags & 0x80 != 0 {
            // The message as a pipe channel's bytes.
            var hdr = [UInt8](repeating: 0, count: RPCCodec.requestHeaderSize)
            let n = hdr.withUnsafeMutableBytes {
                RPCCodec.encodeRequest(op: ZTRPC_OP_CHANNEL, id: 1, body: UnsafeRawBufferPointer(start: nil, count: 0), into: $0)
            }
            hdr.withUnsafeBytes { call(UnsafeRawBufferPointer(rebasing: $0[0..<n]), fds: [pp[0]]) }
            _ = Glibc.fcntl(pp[1], F_SETFL, O_NONBLOCK)
            _ = Glibc.write(pp[1], message.baseAddress, message.count)
            turn(2)
            return
        }
        call(message, fds: pickFDs(flags & 0x1F, stream: sp, seqpacket: qp, pipe: pp))
    }

    /// Every budget charge belongs to a socket ztapd can still reach (its tables or the loop):
    /// a charge that outlives its socket would shrink the user's budget for good.
    func checkCharges() {
        guard let hub = loop.hub else { return }
        var tcp = Set<ObjectIdentifier>(), udp = Set<ObjectIdentifier>()
        for c in hub.tcp.byKey.values { tcp.insert(ObjectIdentifier(c)) }
        for c in hub.tcp.byHandle.values { tcp.insert(ObjectIdentifier(c)) }
        for c in hub.udp.byKey.values { udp.insert(ObjectIdentifier(c)) }
        hub.loop.forEach { s in
            switch s.context {
            case .tcp(let c), .acceptChannel(let c):
                tcp.insert(ObjectIdentifier(c))
                for u in c.undelivered { tcp.insert(ObjectIdentifier(u.conn)) }
            case .udp(let u): udp.insert(ObjectIdentifier(u))
            default: break
            }
        }
        let usage = hub.gate.budgets.usage(of: getuid())
        precondition(usage.tcpSockets <= tcp.count, "TCP charges without a socket: \(usage.tcpSockets) > \(tcp.count)")
        precondition(usage.udpSockets <= udp.count, "UDP charges without a socket: \(usage.udpSockets) > \(udp.count)")
    }

    /// Bits 0-1: how many fds (0-3); bits 2-4: which set: the stream pair, the seqpacket pair,
    /// or a mix with the pipe, in the orders the ops expect and in wrong ones.
    func pickFDs(_ r: UInt8, stream s: [Int32], seqpacket q: [Int32], pipe p: [Int32]) -> [Int32] {
        let sets: [[Int32]] = [[s[0], s[1], q[0]], [q[0], q[1], s[0]], [s[0], q[1], q[0]], [p[0], p[1], s[0]],
                               [s[1], s[0], q[1]], [q[0], s[1], p[0]], [s[0], s[0], s[0]], [p[1], q[0], q[1]]]
        return Array(sets[Int(r >> 2) & 7].prefix(Int(r & 3)))
    }

    func newSocket(_ op: UInt16, proto: UInt8, port: UInt16, app: Int32, daemon: Int32) {
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(IPAddress(stackIP), port))
        sr.proto = proto
        sr.flags = ZTRPC_F_NEW
        var buf = [UInt8](repeating: 0, count: 512)
        let n = withUnsafeBytes(of: &sr) { b in buf.withUnsafeMutableBytes { RPCCodec.encodeRequest(op: op, id: 1, body: b, into: $0) } }
        buf.withUnsafeBytes { call(UnsafeRawBufferPointer(rebasing: $0[0..<n]), fds: [app, daemon]) }
    }
}

private final class ControlFuzzRig: @unchecked Sendable {
    nonisolated(unsafe) static let shared = ControlFuzzRig()
    let daemon: Daemon

    init() {
        let dir = NSTemporaryDirectory() + "ztap-fuzz-control-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir + "/etc/networks.d", withIntermediateDirectories: true)
        // `reload` re-reads ztapd.conf: keep the log quiet there too.
        try? "[Daemon]\nLogLevel=critical\n".write(toFile: dir + "/etc/ztapd.conf", atomically: true, encoding: .utf8)
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        daemon = Daemon(options: DaemonOptions(configDir: dir + "/etc", runDir: dir + "/run"), logger: logger)
        daemon.logger.logLevel = .critical
    }
}
