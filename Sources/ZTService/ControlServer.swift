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
        guard controlPeers < maxControlPeers else {
            logger.warning("control: too many clients, refusing pid \(pid)")
            return nil
        }
        let allowed = isAllowed(uid: uid, gid: gid)
        if !allowed { logger.notice("control: refusing uid \(uid) (pid \(pid))") }
        controlPeers += 1
        return .control(ControlPeer(pid: pid, uid: uid, gid: gid, allowed: allowed))
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
        while true {
            let r = try? chunk.withUnsafeMutableBytes { b throws(Errno) in try loop.sys.recv(socket.fd, into: b) }
            guard let r else { loop.close(socket); return }
            guard case .processed(let n) = r else { break }
            if n == 0 { loop.close(socket); return }
            peer.buffer += chunk[0..<n]
            if peer.buffer.count > ControlRequest.maxSize { break }
        }
        while let nl = peer.buffer.firstIndex(of: 0x0A) {
            let line = Array(peer.buffer[..<nl])
            peer.buffer.removeSubrange(...nl)
            respond(socket, peer, to: line)
            if peer.closeAfterWrite { break }
        }
        if peer.buffer.count > ControlRequest.maxSize {
            enqueue(socket, peer, .failure("request larger than \(ControlRequest.maxSize) bytes", errno: EMSGSIZE), close: true)
        }
    }

    private func respond(_ socket: PhySocket<Context>, _ peer: ControlPeer, to line: [UInt8]) {
        let request: ControlRequest
        do {
            request = try ControlCodec.decode(ControlRequest.self, from: line)
        } catch {
            let denied = !peer.allowed
            enqueue(socket, peer, denied ? permissionDenied(peer) : .failure("malformed request: \(Self.describe(error))", errno: EBADMSG),
                    close: denied)
            return
        }
        if peer.allowed, request.command == .capture { return startCapture(socket, peer, request) }  // CaptureControl.swift
        if peer.allowed {
            enqueue(socket, peer, handle(request, peer: peer), close: false)
        } else if let r = handleNetworkUser(request, peer: peer) {
            enqueue(socket, peer, r, close: false)
        } else {
            enqueue(socket, peer, permissionDenied(peer), close: true)
        }
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
            guard case .processed(let n) = r else { loop.setNotifyWritable(socket, true); return }
            peer.output.removeFirst(n)
        }
        loop.setNotifyWritable(socket, false)
        if peer.closeAfterWrite {
            // Let the client read the refusal before the hang-up: shut down our side only.
            loop.sys.shutdown(socket.fd, Int32(SHUT_WR))
            loop.close(socket)
        }
    }

    public func phyOnWritable(_ socket: PhySocket<Context>) {
        if case .control(let peer) = socket.context { flush(socket, peer) }
    }

    public func phyOnClose(_ socket: PhySocket<Context>) {
        if case .control = socket.context { controlPeers -= 1 }
    }

    public func phyOnAcceptAborted(_ context: Context) {
        if case .control = context { controlPeers -= 1 }
    }

    public func phyOnWake() {}
    public func phyOnTimer() {}
}
