import CShims
import CZTRPC
import PhyLoop
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// A process's one-way channel as a pipe (ztrpc.h ZTRPC_OP_CHANNEL). The SEQPACKET channel costs
// the kernel a socket buffer per message on both sides (allocation, memory-cgroup charge, free,
// the sender's write-space wake-up): ~12% of ztapd's work per nginx keep-alive request, whose
// `tcp_nopush` sends two such messages. A pipe holds them as bytes in its pages. The messages
// are the same; each is one write of at most PIPE_BUF bytes, so they never interleave, and a
// read takes as many as the pipe holds.

/// Frames a pipe channel's bytes into messages. A read may end inside a message (one the app
/// was writing, or the read's own limit): its start waits here for the rest.
struct ChannelStream {
    /// The largest message accepted: what a SEQPACKET request may carry.
    static let maxMessage = Int(ZTRPC_MAX_MSG)
    static let headerSize = MemoryLayout<ztrpc_req_hdr>.size

    /// Bytes of a message not complete yet (empty almost always: no allocation then).
    private(set) var carry: [UInt8] = []

    /// Calls `message` for each whole message in what was kept plus `bytes`, in order, and keeps
    /// an incomplete last one. False when a header is not a ztrpc header or announces more than
    /// `maxMessage`: the stream has lost its framing (nothing after it can be trusted).
    mutating func feed(_ bytes: UnsafeRawBufferPointer, _ message: (UnsafeRawBufferPointer) -> Void) -> Bool {
        if carry.isEmpty {
            guard let used = Self.frame(bytes, message) else { return false }
            if used < bytes.count { carry = Array(bytes[used...]) }
            return true
        }
        carry.append(contentsOf: bytes)
        let kept = carry
        let used = kept.withUnsafeBytes { Self.frame($0, message) }
        guard let used else {
            carry = []
            return false
        }
        carry = used < kept.count ? Array(kept[used...]) : []
        return true
    }

    /// The whole messages at the start of `b`: how many bytes they take, nil if malformed.
    private static func frame(_ b: UnsafeRawBufferPointer, _ message: (UnsafeRawBufferPointer) -> Void) -> Int? {
        var at = 0
        while b.count - at >= headerSize {
            let h = b.loadUnaligned(fromByteOffset: at, as: ztrpc_req_hdr.self)
            guard h.magic == ZTRPC_MAGIC, h.version == ZTRPC_VERSION,
                  Int(h.len) <= maxMessage - headerSize else { return nil }
            let end = at + headerSize + Int(h.len)
            guard end <= b.count else { break }
            message(UnsafeRawBufferPointer(rebasing: b[at..<end]))
            at = end
        }
        return at
    }
}

extension InterceptHub {
    /// ZTRPC_OP_CHANNEL: fds[0], the read end of a pipe, becomes the caller's one-way channel.
    func registerPipeChannel(_ call: inout RPCCall) -> RPCOutcome {
        let peer = call.peer
        guard let fd = call.take(0) else { return .fail(EBADF, .none) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFIFO,
              case let fl = fcntl(fd, F_GETFL), fl >= 0, fl & O_ACCMODE == O_RDONLY else {
            sys.close(fd)
            return .fail(EBADF, .none)
        }
        guard channelsByUID[peer.uid, default: 0] < maxChannelsPerUID, peerCount < maxPeers else {
            sys.close(fd)
            return .fail(EMFILE, .none)
        }
        if fl & O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, fl | O_NONBLOCK) }
        // The channel is judged by the ids its process has now, for good (as a SEQPACKET channel
        // is by its opener's).
        let cp = RPCPeer(pid: peer.pid, uid: peer.uid, gid: peer.gid, allowed: peer.allowed, opened: Self.now())
        cp.pipe = ChannelStream()
        let socket: LoopSocket
        do {
            socket = try loop.add(fd: fd, kind: .raw, context: .rpc(cp))
        } catch {
            sys.close(fd)
            return .fail(error.rawValue, .none)
        }
        peerCount += 1
        peersByUID[cp.openerUID, default: 0] += 1
        // What the process sent on a channel it had before comes first (it is read before this
        // request's process is served: `channels`), then this one takes its place.
        if let old = channels[cp.openerPID], !old.isClosed, case .rpc(let op) = old.context { readChannel(old, op) }
        adoptChannel(socket, cp)
        return .ok(.none)
    }

    /// The pipe channel's messages: one read (at most `pipeBuffer`, ~110 messages: one busy
    /// process cannot hold the loop; level-triggered readiness brings it back for the rest).
    func readPipeChannel(_ socket: LoopSocket, _ peer: RPCPeer) {
        let n: Int
        do {
            guard case .processed(let got) = try sys.read(socket.fd, into: pipeBuffer) else { return }
            n = got
        } catch {
            loop.close(socket)
            return
        }
        guard n > 0, var stream = peer.pipe else {
            loop.close(socket)   // every writer is gone
            return
        }
        tcp.beginOneWayBatch()
        defer { tcp.endOneWayBatch() }
        let framed = stream.feed(UnsafeRawBufferPointer(rebasing: pipeBuffer[0..<n])) { m in
            applyOneWay(m, truncated: false, socket, peer, fds: [])
        }
        peer.pipe = stream
        if !framed {
            if let suppressed = gate.admitLog("channel-framing-\(peer.uid)") {
                logger.warning("rpc: one-way channel lost its framing (not a ztrpc message); closed",
                               metadata: ["network": "\(network)", "pid": "\(peer.pid)", "uid": "\(peer.uid)",
                                          "suppressed": "\(suppressed)"])
            }
            loop.close(socket)
        }
    }
}
