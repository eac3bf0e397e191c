import CShims
import CZTRPC
import Logging
import NetStack
import PhyLoop
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The loop operations the intercept needs (a narrow seam: tests run the bridges on a PhyLoop
/// of their own).
protocol SocketLoop: AnyObject {
    var sys: Sys { get }
    /// The loop's count of returned epoll_waits (PhyLoop.polls).
    var polls: UInt64 { get }
    func add(fd: Int32, kind: PhySocketKind, context: LoopContext, ownsFD: Bool, readable: Bool,
             writable: Bool) throws(Errno) -> LoopSocket
    func close(_ socket: LoopSocket)
    func setNotifyReadable(_ socket: LoopSocket, _ on: Bool)
    func setNotifyWritable(_ socket: LoopSocket, _ on: Bool)
    func forEach(_ body: (LoopSocket) -> Void)
    /// Accepts what waits on `listener` now (each new connection's first message is read at
    /// once: NetworkLoop.phyOnAccepted), instead of on the loop's next turn.
    func acceptPending(_ listener: LoopSocket)
    /// Adds the end of a socketpair ztapd made whose other end is the only one it gave out:
    /// no client can hand it back, so HeldEnds need not learn its identity (an fstat), and
    /// closing it needs no EPOLL_CTL_DEL (PhySocket.soleReference).
    func addUnexposed(fd: Int32, kind: PhySocketKind, context: LoopContext) throws(Errno) -> LoopSocket
}

extension SocketLoop {
    func add(fd: Int32, kind: PhySocketKind, context: LoopContext, readable: Bool = true) throws(Errno) -> LoopSocket {
        try add(fd: fd, kind: kind, context: context, ownsFD: true, readable: readable, writable: false)
    }

    func addUnexposed(fd: Int32, kind: PhySocketKind, context: LoopContext) throws(Errno) -> LoopSocket {
        let s = try add(fd: fd, kind: kind, context: context, ownsFD: true, readable: true, writable: false)
        s.soleReference = true
        return s
    }
}

extension PhyLoop: SocketLoop where Handler.Context == LoopContext {}

/// One connection on RUN_DIR/NAME.sock: exactly one request, exactly one reply; or, once its
/// first message came with ZTRPC_OP_NOREPLY, a process's one-way channel (`channel`): any
/// number of such messages, never a reply; or, once a request came with ZTRPC_OP_KEEP, a session
/// (`session`): one request at a time, each judged by the credentials it carried.
final class RPCPeer {
    /// Who the current request is from: SO_PEERCRED at first, a session message's
    /// SCM_CREDENTIALS afterwards.
    var pid: Int32
    var uid: UInt32
    var gid: UInt32
    var allowed: Bool
    /// Who opened the connection (SO_PEERCRED): what the per-user counts were charged to.
    let openerPID: Int32
    let openerUID: UInt32
    /// When the connection opened or (a session) last carried a request: the idle clock.
    var lastActive: Instant
    var requested = false
    var channel = false
    /// A pipe channel's framing (ztrpc.h ZTRPC_OP_CHANNEL); nil for a SEQPACKET connection.
    var pipe: ChannelStream?
    var session = false
    /// Set while the answer waits for a connect outcome.
    var waiter: Waiter?
    init(pid: Int32, uid: UInt32, gid: UInt32, allowed: Bool, opened: Instant) {
        self.pid = pid; self.uid = uid; self.gid = gid; self.allowed = allowed
        openerPID = pid
        openerUID = uid
        lastActive = opened
    }
}

/// A request as received: the fds not taken over by a handler are closed afterwards.
struct RPCCall {
    let socket: LoopSocket
    let peer: RPCPeer
    let header: RPCHeader
    var fds: [Int32]

    /// Takes fd `i` out of the request (the caller keeps it).
    mutating func take(_ i: Int) -> Int32? {
        guard i < fds.count, fds[i] >= 0 else { return nil }
        let fd = fds[i]
        fds[i] = -1
        return fd
    }

    /// EBADF without any fd, ENOTSOCK when fds[0] names no intercepted socket.
    var notFoundErrno: Int32 { fds.isEmpty ? EBADF : ENOTSOCK }
}

/// How an op ends: a reply now, or later (a waiter was registered).
enum RPCOutcome {
    case ok(RPCReplyBody)
    case fail(Int32, RPCReplyBody)
    case pending
}

/// Sends the one reply of an RPC connection and closes it (a session stays open for the next).
final class RPCReplier {
    private let loop: any SocketLoop
    private let buffer: UnsafeMutableRawBufferPointer
    /// Every reply counted by op and outcome (metrics).
    var counters = RPCCounters()

    init(loop: any SocketLoop) {
        self.loop = loop
        buffer = .allocate(byteCount: RPCCodec.maxReplySize, alignment: 16)
    }

    deinit { buffer.deallocate() }

    /// False if the peer was gone (the reply could not be delivered).
    @discardableResult
    func reply(_ socket: LoopSocket, _ h: RPCHeader, result: Int32, errno err: Int32, body: RPCReplyBody) -> Bool {
        guard !socket.isClosed else { return false }
        counters.replied(op: h.op, failed: result < 0)
        let n = RPCCodec.encodeReply(h, result: result, errno: err, body: body, into: buffer)
        var sent = false
        if case .processed(let k)? = try? loop.sys.send(socket.fd, UnsafeRawBufferPointer(rebasing: buffer[0..<n])) {
            sent = k == n
        }
        if sent, case .rpc(let p) = socket.context, p.session {
            p.requested = false
        } else {
            loop.close(socket)
        }
        return sent
    }

    @discardableResult
    func ok(_ socket: LoopSocket, _ h: RPCHeader, _ body: RPCReplyBody) -> Bool {
        reply(socket, h, result: 0, errno: 0, body: body)
    }

    @discardableResult
    func fail(_ socket: LoopSocket, _ h: RPCHeader, _ err: Int32, _ body: RPCReplyBody = .none) -> Bool {
        reply(socket, h, result: -1, errno: err, body: body)
    }
}
