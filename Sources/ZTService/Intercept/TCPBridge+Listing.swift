import NetStack
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

/// What `ztctl connections` shows of the intercepted TCP sockets, and the check of an fd an app
/// sent (TCPBridge's own file holds the ops and the lifecycle).
extension TCPBridge {
    func connections(network: String, handles: inout Set<SocketHandle>) -> [ConnectionInfo] {
        var out: [ConnectionInfo] = []
        for c in byKey.values {
            var state = c.displayState
            var bin = c.bytesIn, bout = c.bytesOut
            let info = c.handle.flatMap { stack?.tcp.info($0) }
            if let h = c.handle, let i = info {
                state = i.state.displayName
                handles.insert(h)
                bin = max(bin, i.bytesReceived)
                bout = max(bout, i.bytesSent)
            }
            var ci = ConnectionInfo(network: network, proto: "tcp", local: c.local.map { "\($0)" } ?? "*:*",
                                    remote: c.phase == .listening ? "*:*" : (c.remote.map { "\($0)" } ?? "*:*"),
                                    state: state, pid: c.pid, uid: c.uid, bytesIn: bin, bytesOut: bout,
                                    mode: c.seccomp ? "seccomp" : "preload")
            if let i = info { ci.addInternals(i) }
            out.append(ci)
        }
        return out
    }

    /// Socket type and domain of an fd received over SCM_RIGHTS (validation of what the app sent).
    /// SO_TYPE of `fd` is `type` (its family proven otherwise).
    static func hasType(_ fd: Int32, _ type: Int32) -> Bool {
        var v: Int32 = 0
        var len = socklen_t(4)
        return Glibc.getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) == 0 && v == type
    }

    static func isUnixSocket(_ fd: Int32, type: Int32) -> Bool {
        var v: Int32 = 0
        var len = socklen_t(4)
        guard Glibc.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) == 0, v == AF_UNIX else { return false }
        return hasType(fd, type)
    }
}
