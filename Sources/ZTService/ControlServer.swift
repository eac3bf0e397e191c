import CShims
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

/// The control socket (RUN_DIR/control.sock): JSON lines in, JSON lines out, one client per
/// connection, authorized by SO_PEERCRED. Runs on the main thread's loop.
extension Daemon {
    public func phyOnAccept(listener: PhySocket<Context>, fd: Int32) -> Context? {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        guard cshim_peercred(fd, &pid, &uid, &gid) == 0 else { return nil }
        let limits = daemonConfig.limits
        let mine = controlByUID[uid, default: 0]
        guard mine < limits.controlClientsPerUser else {
            refuseControl(fd, uid: uid, pid: pid, "too many control connections for uid \(uid) (ControlClientsPerUser=\(limits.controlClientsPerUser))")
            return nil
        }
        if controlPeers >= limits.controlClients && !displaceControlPeer(for: uid) {
            refuseControl(fd, uid: uid, pid: pid, "too many control connections (ControlClients=\(limits.controlClients))")
            return nil
        }
        let allowed = isAllowed(uid: uid, gid: gid)
        if !allowed { logger.notice("control: refusing uid \(uid) (pid \(pid))") }
        controlPeers += 1
        controlByUID[uid] = mine + 1
        let now = Sys.monotonicNanoseconds()
        if controlIdleCheck == nil { controlIdleCheck = now &+ controlIdleNs }
        return .control(ControlPeer(pid: pid, uid: uid, gid: gid, allowed: allowed, now: now))
    }

    var controlIdleNs: UInt64 { UInt64(daemonConfig.limits.controlIdleTimeoutMs) &* 1_000_000 }

    /// Over a control budget: a JSON error with EAGAIN (best effort, the socket is new and
    /// empty), a rate-limited log line; the loop closes the fd.
    private func refuseControl(_ fd: Int32, uid: uid_t, pid: pid_t, _ why: String) {
        let line = ControlCodec.encodeLine(ControlResponse.failure(why, errno: EAGAIN))
        _ = try? line.withUnsafeBytes { b throws(Errno) in try loop.sys.send(fd, b) }
        if let suppressed = controlThrottle.admit("control-budget-\(uid)") {
            logger.warning("control: \(why); refusing pid \(pid)", metadata: ["suppressed": "\(suppressed)"])
        }
    }

    /// Every slot is taken: a newcomer whose uid holds fewer slots than the biggest holder takes
    /// the oldest idle connection of that holder, so one user's flood cannot lock others out.
    private func displaceControlPeer(for uid: uid_t) -> Bool {
        let mine = controlByUID[uid, default: 0]
        guard let (top, count) = controlByUID.max(by: { $0.value < $1.value }), top != uid, count > mine + 1 else {
            return false
        }
        var victim: (PhySocket<Context>, ControlPeer)?
        var oldest = UInt64.max
        loop.forEach { s in
            if case .control(let p) = s.context, p.uid == top, !p.slotReleased, p.lastActive < oldest {
                victim = (s, p)
                oldest = p.lastActive
            }
        }
        guard let (socket, peer) = victim else { return false }
        if let suppressed = controlThrottle.admit("control-displace-\(top)") {
            logger.warning("control: all slots taken; closing the oldest connection of uid \(top) (\(count) held)",
                           metadata: ["suppressed": "\(suppressed)"])
        }
        // phyOnClose comes only at the end of this pass: give the slot back now, so further
        // accepts in the same pass see true counts.
        controlPeerGone(peer)
        peer.slotReleased = true
        loop.close(socket)
        return true
    }

    /// Closes control connections that made no progress for ControlIdleTimeout=.
    func closeIdleControlPeers() {
        let now = Sys.monotonicNanoseconds()
        guard let due = controlIdleCheck, due <= now else { return }
        let idle = controlIdleNs
        var stale: [PhySocket<Context>] = []
        var next: UInt64?
        loop.forEach { s in
            guard case .control(let p) = s.context else { return }
            let expires = p.lastActive &+ idle
            if expires <= now { stale.append(s) } else { next = min(next ?? expires, expires) }
        }
        controlIdleCheck = next
        for s in stale {
            if case .control(let p) = s.context {
                logger.debug("control: closing idle connection", metadata: ["uid": "\(p.uid)", "pid": "\(p.pid)"])
            }
            loop.close(s)
        }
    }

    func isAllowed(uid: uid_t, gid: gid_t) -> Bool {
        controlAccess.permits(uid: uid, gid: gid)
    }

    public func phyOnReadable(_ socket: PhySocket<Context>) {
        switch socket.context {
        case .signals:
            while true {
                let sig = cshim_signalfd_read(socket.fd)
                if sig <= 0 { break }
                if sig == SIGHUP {
                    logger.info("SIGHUP: reloading configuration")
                    _ = reload()
                } else {
                    logger.info("signal \(sig): stopping")
                    running = false
                }
            }
        case .controlListener:
            break
        case .control(let peer):
            readControl(socket, peer)
        }
    }

    private func readControl(_ socket: PhySocket<Context>, _ peer: ControlPeer) {
        var chunk = [UInt8](repeating: 0, count: 16384)
        while peer.buffer.count <= ControlRequest.maxSize {
            let r = try? chunk.withUnsafeMutableBytes { b throws(Errno) in try loop.sys.recv(socket.fd, into: b) }
            guard let r else { loop.close(socket); return }
            guard case .processed(let n) = r else { break }
            if n == 0 {
                // A half-close ends the requests, not the answers (`printf ... | nc -U` works).
                peer.inputClosed = true
                loop.setNotifyReadable(socket, false)
                break
            }
            peer.buffer += chunk[0..<n]
            peer.lastActive = Sys.monotonicNanoseconds()
        }
        answerBuffered(socket, peer)
    }

    /// Answers the complete lines read so far, as long as the client takes its answers: past
    /// ControlOutputBuffer= unsent bytes, reading stops until `flush` has sent enough.
    private func answerBuffered(_ socket: PhySocket<Context>, _ peer: ControlPeer) {
        let budget = daemonConfig.limits.controlOutputBuffer
        while !socket.isClosed, !peer.closeAfterWrite, peer.output.count <= budget,
              let nl = peer.buffer.firstIndex(of: 0x0A) {
            let line = Array(peer.buffer[..<nl])
            peer.buffer.removeSubrange(...nl)
            respond(socket, peer, to: line)
        }
        if socket.isClosed || peer.closeAfterWrite { return }
        if peer.output.count > budget {
            if !peer.readPaused {
                peer.readPaused = true
                loop.setNotifyReadable(socket, false)
            }
            return
        }
        if peer.inputClosed {
            // Everything complete is answered; hang up once it is sent.
            peer.closeAfterWrite = true
            flush(socket, peer)
            return
        }
        if peer.buffer.count > ControlRequest.maxSize {
            enqueue(socket, peer, .failure("request larger than \(ControlRequest.maxSize) bytes", errno: EMSGSIZE), close: true)
            return
        }
        if peer.readPaused {
            peer.readPaused = false
            loop.setNotifyReadable(socket, true)
        }
    }

    private func respond(_ socket: PhySocket<Context>, _ peer: ControlPeer, to line: [UInt8]) {
        let decoded = Self.decode(line)
        // A capture hands the client an fd and ends the connection (CaptureControl.swift).
        if peer.allowed, case .success(let request) = decoded, request.command == .capture {
            return startCapture(socket, peer, request)
        }
        let (response, close) = answer(decoded, peer: peer)
        enqueue(socket, peer, response, close: close)
    }

    private static func decode(_ line: [UInt8]) -> Result<ControlRequest, any Error> {
        Result { () throws(any Error) in try ControlCodec.decode(ControlRequest.self, from: line) }
    }

    /// The answer to one request line, and whether the connection ends after it (a refused
    /// user). No I/O: the control fuzz target drives this directly.
    func answer(_ line: [UInt8], peer: ControlPeer) -> (ControlResponse, close: Bool) {
        answer(Self.decode(line), peer: peer)
    }

    private func answer(_ decoded: Result<ControlRequest, any Error>, peer: ControlPeer) -> (ControlResponse, close: Bool) {
        let request: ControlRequest
        switch decoded {
        case .success(let r):
            request = r
        case .failure(let error):
            let denied = !peer.allowed
            return (denied ? permissionDenied(peer) : .failure("malformed request: \(Self.describe(error))", errno: EBADMSG),
                    denied)
        }
        if peer.allowed { return (handle(request, peer: peer), false) }
        if let r = handleNetworkUser(request, peer: peer) { return (r, false) }
        return (permissionDenied(peer), true)
    }

    private func permissionDenied(_ peer: ControlPeer) -> ControlResponse {
        controlStats.count("any", "denied")
        let who = UserDB.userName(uid: peer.uid) ?? "uid \(peer.uid)"
        return .failure("permission denied: \(who) may not control ztapd (allowed: root, ControlUsers=, ControlGroup= in ztapd.conf)", errno: EACCES)
    }

    /// What a user who may not control ztapd may still ask (what `ztctl run` needs): `list`
    /// (what `ip addr` shows anyway), and `get`/`connections` of the networks whose [Access] lets
    /// them in, in `connections` only their own sockets. nil = not allowed at all.
    private func handleNetworkUser(_ request: ControlRequest, peer: ControlPeer) -> ControlResponse? {
        if request.command == .list { return list(only: request.name) }
        let usable = Set(networks.compactMap { name, n in
            Network.access(for: n.config).permits(uid: peer.uid, gid: peer.gid, groups: { UserDB.groups(ofUID: $0) }) ? name : nil
        })
        if let name = request.name, !usable.contains(name) {
            guard [.get, .connections].contains(request.command) else { return nil }
            let who = UserDB.userName(uid: peer.uid) ?? "uid \(peer.uid)"
            return .failure("permission denied: \(who) may not use network \(name) ([Access] in its file)", errno: EACCES)
        }
        switch request.command {
        case .get:
            return request.name == nil ? .failure("a network name is required", errno: EINVAL) : get(request.name, key: request.key)
        case .connections:
            var r = connections(request.name)
            r.connections = r.connections?.filter { usable.contains($0.network) && $0.uid == peer.uid }
            return r
        default:
            return nil
        }
    }

    static func describe(_ error: Error) -> String {
        if let d = error as? DecodingError {
            switch d {
            case .dataCorrupted(let c): return c.debugDescription
            case .keyNotFound(let k, _): return "missing field \"\(k.stringValue)\""
            case .typeMismatch(_, let c), .valueNotFound(_, let c):
                return "bad field \"\(c.codingPath.map(\.stringValue).joined(separator: "."))\": \(c.debugDescription)"
            @unknown default: return "\(d)"
            }
        }
        return "\(error)"
    }

    private func enqueue(_ socket: PhySocket<Context>, _ peer: ControlPeer, _ r: ControlResponse, close: Bool) {
        peer.output += ControlCodec.encodeLine(r)
        if close { peer.closeAfterWrite = true }
        flush(socket, peer)
    }

    private func flush(_ socket: PhySocket<Context>, _ peer: ControlPeer) {
        while !peer.output.isEmpty {
            let r = try? peer.output.withUnsafeBytes { b throws(Errno) in try loop.sys.send(socket.fd, b) }
            guard let r else { loop.close(socket); return }
            guard case .processed(let n) = r else { loop.setNotifyWritable(socket, true); break }
            peer.output.removeFirst(n)
            peer.lastActive = Sys.monotonicNanoseconds()
        }
        if !peer.output.isEmpty { return }
        loop.setNotifyWritable(socket, false)
        if peer.closeAfterWrite {
            // Let the client read the refusal before the hang-up: shut down our side only.
            loop.sys.shutdown(socket.fd, Int32(SHUT_WR))
            loop.close(socket)
        }
    }

    public func phyOnWritable(_ socket: PhySocket<Context>) {
        guard case .control(let peer) = socket.context else { return }
        flush(socket, peer)
        // Requests read while answers waited are answered once enough has gone out.
        if !socket.isClosed && peer.readPaused && peer.output.count <= daemonConfig.limits.controlOutputBuffer {
            answerBuffered(socket, peer)
        }
    }

    /// The client hung up while its reading was paused: nobody will take the answers.
    public func phyOnHangup(_ socket: PhySocket<Context>) {
        if case .control = socket.context { loop.close(socket) }
    }

    public func phyOnClose(_ socket: PhySocket<Context>) {
        if case .control(let p) = socket.context { controlPeerGone(p) }
    }

    public func phyOnAcceptAborted(_ context: Context) {
        if case .control(let p) = context { controlPeerGone(p) }
    }

    private func controlPeerGone(_ p: ControlPeer) {
        guard !p.slotReleased else { return }
        controlPeers -= 1
        if let n = controlByUID[p.uid], n > 1 { controlByUID[p.uid] = n - 1 } else { controlByUID[p.uid] = nil }
        if controlPeers == 0 { controlIdleCheck = nil }
    }

    public func phyOnAcceptFailed(listener: PhySocket<Context>, errno: Int32, dropped: Bool) {
        guard let suppressed = controlThrottle.admit("control-accept") else { return }
        logger.warning("control: out of file descriptors: \(dropped ? "dropped a pending connection" : "listener paused until fds are freed")",
                       metadata: ["errno": "\(errno)", "suppressed": "\(suppressed)"])
    }

    public func phyOnWake() {}
    public func phyOnTimer() { closeIdleControlPeers() }
}
