import CShims
import PhyLoop
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Checks on what a local client hands ztapd, which acts with its own credentials on the
/// client's behalf (a confused deputy otherwise).
enum Trust {
    /// The daemon end of a new socketpair (fds[1] of a ZTRPC_F_NEW request or of LISTEN) must
    /// belong to the requesting process: the pair was created by it (SO_PEERCRED of a socketpair
    /// end names its creator) and has no name on either side. Else a client could have ztapd pump
    /// network bytes into a connection to some other server it merely holds an fd of (and a
    /// receiver with SO_PASSCRED would see ztapd's credentials).
    static func ownsSocketpairEnd(_ fd: Int32, peer: RPCPeer) -> Bool {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        guard cshim_peercred(fd, &pid, &uid, &gid) == 0, pid == peer.pid, uid == peer.uid else { return false }
        return cshim_unix_unnamed(fd) == 1
    }

    /// CAP_NET_BIND_SERVICE (bit 10) in a /proc/PID/status text's CapEff line.
    static func hasNetBindService(status: String) -> Bool? {
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            let hex = line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces)
            guard let v = UInt64(hex, radix: 16) else { return nil }
            return v & (1 << 10) != 0
        }
        return nil
    }

    /// Whether the process on the other end of the RPC connection `rpcFD` may bind a port below
    /// 1024, as Linux decides it: CAP_NET_BIND_SERVICE in its effective set, in ztapd's own user
    /// namespace. The capability is read from /proc/PID/status, and a pidfd of the peer
    /// (SO_PEERPIDFD) proves afterwards that PID still named that process. Where ztapd cannot see
    /// it (no SO_PEERPIDFD; /proc hides other users' processes, as the shipped unit's
    /// ProtectProc=invisible does) only uid 0 may.
    static func mayBindPrivileged(rpcFD: Int32, peer: RPCPeer,
                                  read: (String) -> String? = Trust.readSmallFile) -> Bool {
        // The pidfd below names the process that opened the connection: only its own requests
        // can be proven (a session passed to another process is judged as uid alone).
        guard peer.pid == peer.openerPID else { return peer.uid == 0 }
        let pidfd = cshim_peer_pidfd(rpcFD)
        guard pidfd >= 0 else { return peer.uid == 0 }
        defer { Sys.live.close(pidfd) }
        guard let status = read("/proc/\(peer.pid)/status"), let cap = hasNetBindService(status: status),
              let theirs = read("/proc/\(peer.pid)/uid_map"), let ours = read("/proc/self/uid_map"),
              cshim_pidfd_alive(pidfd) == 1 else {
            return peer.uid == 0
        }
        return cap && theirs == ours
    }

    /// A small /proc file, or nil.
    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Sys.live.close(fd) }
        var buf = [UInt8](repeating: 0, count: 4096)
        guard case .processed(let n)? = buf.withUnsafeMutableBytes({ try? Sys.live.read(fd, into: $0) }), n > 0 else {
            return nil
        }
        return String(decoding: buf[0..<n], as: UTF8.self)
    }
}
