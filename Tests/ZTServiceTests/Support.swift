import Glibc
import CShims
import CZTRPC
import Foundation
import LinuxNet
import Logging
import NetStack
import PhyLoop
import Synchronization
import SystemPackage
import Testing
@testable import ZTService

// Test support: a syscall backend that injects faults, a frame device over a SEQPACKET pair, and
// a rig that runs a real NetworkLoop (hub, bridges, NetStack) against a peer NetStack playing the
// kernel side, driven step by step on the test's own thread.

/// Which raw call a fault applies to.
enum SysCall: Sendable, Equatable { case read, write, recvmsg, sendmsg, shutdown, close, poll, socketpair, accept }

/// What the faulted call does instead.
enum FaultEffect: Sendable, Equatable {
    /// Fail with this errno (the real call is not made).
    case errno(Int32)
    /// Make the real call but move at most this many bytes (a short transfer).
    case short(Int)
}

struct Fault: Sendable {
    var call: SysCall
    /// Only this fd (nil: any).
    var fd: Int32?
    var effect: FaultEffect
    /// How many times it applies before it is used up.
    var times: Int = 1
}

/// LinuxSyscalls with a script of faults, consumed in order as matching calls happen.
final class FaultSys: SyscallBackend {
    private let real = LinuxSyscalls()
    private let state = Mutex<(faults: [Fault], log: [SysCall])>(([], []))

    func inject(_ f: Fault) { state.withLock { $0.faults.append(f) } }
    func clear() { state.withLock { $0.faults.removeAll() } }
    var pending: Int { state.withLock { $0.faults.count } }
    /// Calls that were faulted, in order.
    var faulted: [SysCall] { state.withLock { $0.log } }

    private func take(_ call: SysCall, _ fd: Int32) -> FaultEffect? {
        state.withLock { s in
            guard let i = s.faults.firstIndex(where: { $0.call == call && ($0.fd == nil || $0.fd == fd) }) else { return nil }
            let e = s.faults[i].effect
            s.faults[i].times -= 1
            if s.faults[i].times <= 0 { s.faults.remove(at: i) }
            s.log.append(call)
            return e
        }
    }

    func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer?, _ count: Int) -> Int {
        switch take(.read, fd) {
        case .errno(let e)?: return -Int(e)
        case .short(let n)?: return real.read(fd, buf, min(n, count))
        case nil: return real.read(fd, buf, count)
        }
    }
    func write(_ fd: Int32, _ buf: UnsafeRawPointer?, _ count: Int) -> Int {
        switch take(.write, fd) {
        case .errno(let e)?: return -Int(e)
        case .short(let n)?: return real.write(fd, buf, min(n, count))
        case nil: return real.write(fd, buf, count)
        }
    }
    /// recvmsg calls made on `fd` so far (faulted or not).
    func recvmsgCount(_ fd: Int32) -> Int { counts.withLock { $0[fd, default: 0] } }
    private let counts = Mutex<[Int32: Int]>([:])

    func recvmsg(_ fd: Int32, _ msg: UnsafeMutablePointer<msghdr>, _ flags: Int32) -> Int {
        counts.withLock { $0[fd, default: 0] += 1 }
        switch take(.recvmsg, fd) {
        case .errno(let e)?: return -Int(e)
        case .short(let n)?: return Self.limited(msg, n) { real.recvmsg(fd, $0, flags) }
        case nil: return real.recvmsg(fd, msg, flags)
        }
    }
    func sendmsg(_ fd: Int32, _ msg: UnsafePointer<msghdr>, _ flags: Int32) -> Int {
        switch take(.sendmsg, fd) {
        case .errno(let e)?: return -Int(e)
        case .short(let n)?: return Self.limited(UnsafeMutablePointer(mutating: msg), n) { real.sendmsg(fd, $0, flags) }
        case nil: return real.sendmsg(fd, msg, flags)
        }
    }
    func shutdown(_ fd: Int32, _ how: Int32) -> Int {
        if case .errno(let e)? = take(.shutdown, fd) { return -Int(e) }
        return real.shutdown(fd, how)
    }
    func close(_ fd: Int32) -> Int {
        if case .errno(let e)? = take(.close, fd) { _ = real.close(fd); return -Int(e) }
        return real.close(fd)
    }
    func poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeoutMs: Int32) -> Int {
        if case .errno(let e)? = take(.poll, fds.pointee.fd) { return -Int(e) }
        return real.poll(fds, count, timeoutMs)
    }
    func socketpair(_ type: Int32, _ fds: UnsafeMutablePointer<Int32>) -> Int {
        if case .errno(let e)? = take(.socketpair, -1) { return -Int(e) }
        return real.socketpair(type, fds)
    }
    func accept(_ fd: Int32) -> Int {
        if case .errno(let e)? = take(.accept, fd) { return -Int(e) }
        return real.accept(fd)
    }

    /// Runs `body` with the message's iovecs cut to `limit` bytes in total.
    private static func limited(_ msg: UnsafeMutablePointer<msghdr>, _ limit: Int,
                                _ body: (UnsafeMutablePointer<msghdr>) -> Int) -> Int {
        var m = msg.pointee
        let n = Int(m.msg_iovlen)
        var iovs = [iovec](repeating: iovec(), count: max(n, 1))
        var left = limit
        var used = 0
        for i in 0..<n where left > 0 {
            var v = m.msg_iov[i]
            v.iov_len = min(v.iov_len, left)
            left -= v.iov_len
            iovs[used] = v
            used += 1
        }
        return iovs.withUnsafeMutableBufferPointer { p in
            m.msg_iov = p.baseAddress
            m.msg_iovlen = used
            return withUnsafeMutablePointer(to: &m) { body($0) }
        }
    }
}

/// A frame device over one end of a SOCK_SEQPACKET pair (frame boundaries are kept).
final class PairDevice: FrameDevice {
    let fd: Int32
    let name = "pair"
    /// With `.vnetHeader`: every frame carries a virtio header, like a TAP with IFF_VNET_HDR.
    let offloads: TapOffloads
    init(fd: Int32, offloads: TapOffloads = []) { self.fd = fd; self.offloads = offloads }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(LinuxError) -> Int? {
        let n = Glibc.recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
        if n >= 0 { return n }
        if errno == EAGAIN { return nil }
        throw LinuxError(operation: "read pair", errno: errno)
    }
    func write(_ frame: UnsafeRawBufferPointer) throws(LinuxError) -> Bool {
        Glibc.send(fd, frame.baseAddress, frame.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) == frame.count
    }
}

/// Frames from the peer stack into its end of the pair; with `vnet`, each with a virtio header
/// and every offload (the kernel's side of a TAP with IFF_VNET_HDR and TUNSETOFFLOAD).
final class PeerSink: FrameSink {
    let fd: Int32
    let vnet: Bool
    init(fd: Int32, vnet: Bool = false) { self.fd = fd; self.vnet = vnet }
    var transmitOffloads: TransmitOffloads { vnet ? .all : [] }
    func sendFrame(_ frame: UnsafeRawBufferPointer) {
        if vnet {
            send([UInt8](repeating: 0, count: VirtioNetHeader.length) + Array(frame))
        } else {
            _ = Glibc.send(fd, frame.baseAddress, frame.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
        }
    }
    func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                   offload: FrameOffload) {
        var h = [UInt8](repeating: 0, count: VirtioNetHeader.length)
        h.withUnsafeMutableBytes { offload.virtioHeader(headerLength: head.count).store(to: $0.baseAddress!) }
        send(h + Array(head) + Array(payload) + Array(more))
    }
    private func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
    }
}

func makePair(_ type: Int32) -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    let r = fds.withUnsafeMutableBufferPointer { cshim_socketpair_cloexec(AF_UNIX, type, $0.baseAddress) }
    precondition(r == 0, "socketpair: \(errno)")
    return (fds[0], fds[1])
}

let seqpacket = Int32(SOCK_SEQPACKET.rawValue)
let streamType = Int32(SOCK_STREAM.rawValue)

/// A network under test: NetworkLoop + hub + NetStack (10.77.0.2) on one side of a SEQPACKET
/// pair, a peer NetStack (10.77.0.1, echo/discard/chargen services) on the other.
final class Rig {
    let faults = FaultSys()
    let dir: String
    let rpcPath: String
    let loop: NetworkLoop
    let peer: NetStack
    let peerFD: Int32
    let deviceFD: Int32
    let stackIP = IPv4Address(10, 77, 0, 2)
    let peerIP = IPv4Address(10, 77, 0, 1)
    private let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 70000, alignment: 16)
    /// Frames both ways carry virtio headers, with every offload on both sides.
    let vnet: Bool

    let budgets: UserBudgets
    /// Sees every frame the daemon's stack sends (Ethernet onwards), before the peer does.
    var watchFrames: ((UnsafeRawBufferPointer) -> Void)?

    /// FINs and RSTs the daemon's stack sends from now on (`watchFINsAndRSTs`).
    final class SentFlags {
        /// FINs by sequence number: a retransmission (a slow, loaded test run) is the same FIN.
        var finSeqs: Set<UInt32> = []
        var fins: Int { finSeqs.count }
        var resets = 0
    }

    func watchFINsAndRSTs() -> SentFlags {
        let sent = SentFlags()
        watchFrames = { f in
            guard let flags = Rig.tcpFlags(f) else { return }
            if flags & 0x01 != 0, let seq = Rig.tcpSeq(f) { sent.finSeqs.insert(seq) }
            if flags & 0x04 != 0 { sent.resets += 1 }
        }
        return sent
    }

    /// The TCP sequence number of a frame the daemon sent (IPv4 only).
    static func tcpSeq(_ f: UnsafeRawBufferPointer) -> UInt32? {
        guard tcpFlags(f) != nil else { return nil }
        let at = 14 + Int(f[14] & 0x0F) * 4 + 4
        return (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(f[at + $1]) }
    }

    /// TCP flags of a frame the daemon sent (IPv4 only), nil for anything else.
    static func tcpFlags(_ f: UnsafeRawBufferPointer) -> UInt8? {
        guard f.count >= 34, f[12] == 0x08, f[13] == 0x00, f[23] == 6 else { return nil }
        let ihl = Int(f[14] & 0x0F) * 4
        guard f.count >= 14 + ihl + 14 else { return nil }
        return f[14 + ihl + 13]
    }

    /// `services`: the peer's; `stackServices`: the daemon stack's own; `budgets`: [Limits].
    init(services: Set<DiagnosticService> = [.echo, .discard, .chargen], access: AccessList = AccessList(),
         stackServices: [String] = [], budgets: UserBudgets = UserBudgets(), vnet: Bool = false) throws {
        self.vnet = vnet
        self.budgets = budgets
        dir = NSTemporaryDirectory() + "ztsvc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        rpcPath = dir + "/net.sock"
        let (a, b) = makePair(seqpacket)
        deviceFD = a
        peerFD = b
        try Sys.setNonBlocking(a)
        try Sys.setNonBlocking(b)
        if vnet {
            // Room for a few dozen 64 KiB super-frames, as a TAP's queue has.
            var size: Int32 = 4 << 20
            for fd in [a, b] { Glibc.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, 4) }
        }
        let settings = StackSettings(stackMAC: MACAddress(0x02, 0, 0, 0, 0, 2), mtu: 1500,
                                     addresses: [IPv4CIDR(address: stackIP, prefixLength: 24)], gateway: nil,
                                     services: stackServices, tcpReceiveBuffer: 256 << 10, tcpSendBuffer: 256 << 10,
                                     maxConnections: 1024)
        let device = PairDevice(fd: a, offloads: vnet ? [.vnetHeader, .checksum, .tso4, .tso6, .tsoECN, .uso] : [])
        let driver = NetStackDriver(settings: settings, sink: TapSink(device: device), logger: Logger(label: "test"))
        let sys = Sys(backend: faults)
        loop = try NetworkLoop(name: "t", device: device, inbox: Inbox<NetworkCommand>(), driver: driver,
                               logger: Logger(label: "test"), rpcPath: rpcPath, access: access, sys: sys,
                               budgets: budgets)
        peer = NetStack(config: StackConfig(mac: MACAddress(0x02, 0, 0, 0, 0, 1), mtu: 1500,
                                            addresses: [IPv4CIDR(address: peerIP, prefixLength: 24)],
                                            services: services),
                        sink: PeerSink(fd: b, vnet: vnet), random: XorShiftRandom(seed: 7))
        driver.start(now: NetworkLoop.now())
        peer.up(now: NetworkLoop.now())
    }

    deinit {
        loop.finish()
        Glibc.close(deviceFD)
        Glibc.close(peerFD)
        frame.deallocate()
        try? FileManager.default.removeItem(atPath: dir)
    }

    var hub: InterceptHub { loop.hub! }

    /// One step of both sides: the daemon's loop (waiting at most 1 ms) and the peer stack.
    func step() {
        try? loop.turn(maxWait: 1_000_000)
        let now = NetworkLoop.now()
        while true {
            let n = Glibc.recv(peerFD, frame.baseAddress, frame.count, Int32(MSG_DONTWAIT))
            if n <= 0 { break }
            if let watch = watchFrames { watch(UnsafeRawBufferPointer(rebasing: frame[vnet ? VirtioNetHeader.length..<n : 0..<n])) }
            if vnet {
                peer.receive(virtioFrame: UnsafeRawBufferPointer(rebasing: frame[0..<n]), now: now)
            } else {
                peer.receive(frame: UnsafeRawBufferPointer(rebasing: frame[0..<n]), now: now)
            }
        }
        _ = peer.poll(now: now)
    }

    /// Steps until `cond` holds (false after `limit` steps).
    @discardableResult
    func run(limit: Int = 3000, until cond: () -> Bool) -> Bool {
        for _ in 0..<limit {
            if cond() { return true }
            step()
        }
        return cond()
    }

    /// Steps a fixed number of times.
    func settle(_ n: Int = 50) { for _ in 0..<n { step() } }

    // MARK: - The library's side of the RPC

    /// Sends one request on a fresh RPC connection; returns the connection (the reply comes later).
    func send(op: UInt16, body: UnsafeRawBufferPointer, fds: [Int32] = [], raw: [UInt8]? = nil) -> Int32 {
        let s = cshim_socket_cloexec(AF_UNIX, seqpacket, 0)
        precondition(s >= 0 && cshim_connect_unix(s, rpcPath) == 0, "connect rpc: \(errno)")
        var msg = [UInt8](repeating: 0, count: 2048)
        let n: Int
        if let raw {
            n = raw.count
            msg.replaceSubrange(0..<n, with: raw)
        } else {
            n = msg.withUnsafeMutableBytes { RPCCodec.encodeRequest(op: op, id: 42, body: body, into: $0) }
        }
        let r = msg.withUnsafeBytes { m in
            fds.withUnsafeBufferPointer { f in
                try? Sys.live.sendWithFDs(s, UnsafeRawBufferPointer(rebasing: m[0..<n]), fds: f)
            }
        }
        precondition(r != nil, "send rpc")
        return s
    }

    /// Waits for and reads the reply on `s` (then closes it): header and body bytes.
    func reply(_ s: Int32, limit: Int = 3000) -> (hdr: ztrpc_rep_hdr, body: [UInt8])? {
        defer { Glibc.close(s) }
        var buf = [UInt8](repeating: 0, count: 2048)
        var got = -1
        run(limit: limit) {
            got = buf.withUnsafeMutableBytes { Glibc.recv(s, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            return got >= 0
        }
        guard got > 0 else { return nil }
        return buf.withUnsafeBytes { b in
            guard let (h, body) = RPCCodec.decodeReply(UnsafeRawBufferPointer(rebasing: b[0..<got])) else { return nil }
            return (h, Array(body))
        }
    }

    func call(op: UInt16, body: UnsafeRawBufferPointer, fds: [Int32] = []) -> (hdr: ztrpc_rep_hdr, body: [UInt8])? {
        reply(send(op: op, body: body, fds: fds))
    }

    /// A TCP socket connected to the peer's discard service: its app end, identity and entry.
    func connectedApp() throws -> (app: Int32, key: FDKey, c: Connection) {
        let (app, hdr) = connectTCP(port: 9)
        #expect(hdr?.result == 0)
        let key = try #require(FDKey.of(app))
        return (app, key, try #require(hub.tcp.lookup(key)))
    }

    /// An int TCP option of `app`'s socket as GETSOCKOPT answers it.
    func tcpOption(_ app: Int32, _ name: Int32) -> Int32? {
        var so = ztrpc_sockopt()
        so.level = Int32(IPPROTO_TCP); so.name = name; so.optlen = 4
        let r = request(ZTRPC_OP_GETSOCKOPT, so, socket: app)
        return r.map { b in b.body.withUnsafeBytes { $0.load(fromByteOffset: 16, as: Int32.self) } }
    }

    /// Plugs an app end the way the library does before a TCP CONNECT (ztrpc.h): minimum
    /// SO_SNDBUF, filled until EAGAIN.
    static func plug(_ app: Int32, _ sr: inout ztrpc_sock_req) {
        var orig: Int32 = 0
        var l = socklen_t(4)
        Glibc.getsockopt(app, SOL_SOCKET, SO_SNDBUF, &orig, &l)
        var tiny: Int32 = 0
        Glibc.setsockopt(app, SOL_SOCKET, SO_SNDBUF, &tiny, 4)
        let pad = [UInt8](repeating: 0xEE, count: 4096)
        var total = 0
        while true {
            let n = pad.withUnsafeBytes { Glibc.send(app, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n <= 0 { break }
            total += n
        }
        sr.filler = UInt32(total)
        sr.sndbuf = orig / 2
    }

    /// A new TCP socket connected (blocking unless `nonblocking`) to peer:port: the app end.
    /// `send` only sends the request (the reply comes later on the returned RPC socket).
    /// The next message on a listener's accept channel, if one is there now (no stepping): its
    /// accept message, payload size and the fds it carried.
    static func takeAccept(_ ch: Int32) -> (msg: ztrpc_accept_msg, size: Int, fds: [Int32])? {
        var buf = [UInt8](repeating: 0, count: 128)
        var fds = [Int32](repeating: -1, count: 2)
        let r = buf.withUnsafeMutableBytes { bb in fds.withUnsafeMutableBufferPointer { try? Sys.live.recvWithFDs(ch, into: bb, fds: $0) } }
        guard case .processed(let m)? = r else { return nil }
        return (buf.withUnsafeBytes { $0.load(as: ztrpc_accept_msg.self) }, m.count, Array(fds.prefix(m.fdCount)))
    }

    /// A TCP socket bound to the stack's `port` and listening: the app end of its accept
    /// channel (nil if the bind or the listen failed).
    func listenTCP(port: UInt16, backlog: Int32) -> Int32? {
        let (app, daemon) = makePair(streamType)
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(stackIP, port))
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW
        let bound = withUnsafeBytes(of: &sr) { call(op: ZTRPC_OP_BIND, body: $0, fds: [app, daemon]) }?.hdr.result == 0
        Glibc.close(daemon)
        let (chApp, chDaemon) = makePair(seqpacket)
        var lr = ztrpc_listen_req()
        lr.backlog = backlog
        let listening = bound && request(ZTRPC_OP_LISTEN, lr, socket: app, extra: [chDaemon, chApp])?.hdr.result == 0
        Glibc.close(chDaemon)
        Glibc.close(app)
        guard listening else { Glibc.close(chApp); return nil }
        return chApp
    }

    func connectTCP(port: UInt16, nonblocking: Bool = false, plugged: Bool = true) -> (app: Int32, reply: ztrpc_rep_hdr?) {
        let (app, rpc) = startConnect(port: port, nonblocking: nonblocking, plugged: plugged)
        return (app, reply(rpc)?.hdr)
    }

    func startConnect(port: UInt16, nonblocking: Bool, plugged: Bool = true) -> (app: Int32, rpc: Int32) {
        let (app, daemon) = makePair(streamType)
        var sr = ztrpc_sock_req()
        sr.addr = Wire.addr(IPEndpoint(peerIP, port))
        sr.proto = IPProtocol.tcp
        sr.flags = ZTRPC_F_NEW | (nonblocking ? ZTRPC_F_NONBLOCK : 0)
        if plugged { Self.plug(app, &sr) }
        let s = withUnsafeBytes(of: &sr) { send(op: ZTRPC_OP_CONNECT, body: $0, fds: [app, daemon]) }
        Glibc.close(daemon)
        return (app, s)
    }

    /// poll(2) events of `fd` now.
    static func events(_ fd: Int32, _ want: Int16 = Int16(POLLIN | POLLOUT)) -> Int16 {
        var p = pollfd(fd: fd, events: want, revents: 0)
        _ = Glibc.poll(&p, 1, 0)
        return p.revents
    }

    /// Sends a request about an existing socket (fds[0] = its app end).
    func request<T>(_ op: UInt16, _ body: T, socket: Int32, extra: [Int32] = []) -> (hdr: ztrpc_rep_hdr, body: [UInt8])? {
        var b = body
        return withUnsafeBytes(of: &b) { call(op: op, body: $0, fds: [socket] + extra) }
    }

    /// Reads what is available on `fd` now (non-blocking).
    static func drain(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            precondition(n > 0)
            off += n
        }
    }
}

extension ztrpc_sockinfo {
    init(bytes: [UInt8]) {
        var v = ztrpc_sockinfo()
        withUnsafeMutableBytes(of: &v) { d in bytes.withUnsafeBytes { d.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<min($0.count, d.count)])) } }
        self = v
    }
}
