// Capabilities.swift - dropping privileges to exactly CAP_NET_ADMIN (libcap).
//
// Linux capability sets and the keep-caps flag are per THREAD; libcap's cap_set_proc (without
// libpsx) changes only the calling thread, and new threads inherit from their creator. So the
// daemon calls these early on the main thread, before it starts any thread. setuid/setgid are the
// exception: glibc applies them to every thread.
//
// Order for the daemon: `switchUser` (needs CAP_SETUID/CAP_SETGID) first, then `reduceToNetAdmin`
// (uses CAP_SETPCAP for the bounding set, then gives it up); or `dropPrivileges(to:)` for both.
//
// Tests: `reduceToNetAdmin` is checked on a dedicated thread (see CapabilityTests). The daemon
// integration test (run by the lead) checks /proc/PID/status of a running ztapd: CapEff and
// CapPrm == 0x1000 (CAP_NET_ADMIN only), CapInh == CapAmb == 0, and Uid/Gid for `User=`.

#if canImport(Glibc)
import Glibc
#endif
import CCap
import CShims

public enum Capabilities {
    /// Bit of CAP_NET_ADMIN in the /proc status masks.
    public static let netAdminMask: UInt64 = 1 << UInt64(CAP_NET_ADMIN)

    /// Keeps only CAP_NET_ADMIN in permitted+effective (inheritable and ambient cleared) and
    /// reduces the bounding set to it where possible (that needs CAP_SETPCAP, which is raised
    /// from the permitted set first and dropped with the rest). Affects the calling thread.
    public static func reduceToNetAdmin() throws(LinuxError) {
        let op = "reduce capabilities to CAP_NET_ADMIN"
        guard let caps = cap_get_proc() else { throw LinuxError.posix(op) }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        guard try flag(caps, CAP_NET_ADMIN, CAP_PERMITTED, op) else {
            throw LinuxError(operation: op, errno: EPERM, detail: "CAP_NET_ADMIN is not in the permitted set")
        }
        if try flag(caps, CAP_SETPCAP, CAP_PERMITTED, op) {
            var v: cap_value_t = CAP_SETPCAP
            if cap_set_flag(caps, CAP_EFFECTIVE, 1, &v, CAP_SET) != 0 || cap_set_proc(caps) != 0 {
                throw LinuxError.posix("\(op): raise CAP_SETPCAP")
            }
        }
        // Bounding set: without CAP_SETPCAP every drop fails with EPERM; that is the "where
        // possible" case and not an error.
        let count = cap_max_bits()
        var value: cap_value_t = 0
        while value < count {
            if value != CAP_NET_ADMIN, cap_drop_bound(value) != 0 {
                let e = Glibc.errno
                if e == EPERM { break }
                if e != EINVAL { throw LinuxError.posix("\(op): drop capability \(value) from the bounding set", errno: e) }
            }
            value += 1
        }
        if cap_reset_ambient() != 0, Glibc.errno != EINVAL {  // EINVAL: kernel without ambient caps
            throw LinuxError.posix("\(op): clear ambient set")
        }
        try setOnly([CAP_NET_ADMIN], operation: op)
    }

    /// Switches uid/gid (and supplementary groups, from the group database) to `user`, keeping
    /// the permitted capabilities (PR_SET_KEEPCAPS) and re-raising them as effective afterwards,
    /// so CAP_NET_ADMIN survives. Follow with `reduceToNetAdmin()`. Resolves with getpwnam_r.
    public static func switchUser(_ user: String) throws(LinuxError) {
        let op = "switch to user \(user)"
        guard let entry = UserDB.entry(name: user) else {
            throw LinuxError(operation: op, errno: ENOENT, detail: "no such user '\(user)'")
        }
        if getuid() == entry.uid, geteuid() == entry.uid, getgid() == entry.gid { return }
        guard let caps = cap_get_proc() else { throw LinuxError.posix(op) }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        for (cap, capName) in [(CAP_SETUID, "CAP_SETUID"), (CAP_SETGID, "CAP_SETGID"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")] {
            guard try flag(caps, cap, CAP_EFFECTIVE, op) else {
                throw LinuxError(operation: op, errno: EPERM,
                                 detail: "\(capName) is not effective (call switchUser before reduceToNetAdmin)")
            }
        }
        var groups = UserDB.groups(ofUser: entry.name, primaryGID: entry.gid)
        if cshim_set_keepcaps(1) != 0 { throw LinuxError.posix("\(op): PR_SET_KEEPCAPS") }
        defer { _ = cshim_set_keepcaps(0) }
        if setgroups(groups.count, &groups) != 0 { throw LinuxError.posix("\(op): setgroups(\(groups))") }
        // As a privileged process setgid/setuid set real, effective and saved ids together.
        if setgid(entry.gid) != 0 { throw LinuxError.posix("\(op): setgid(\(entry.gid))") }
        if setuid(entry.uid) != 0 { throw LinuxError.posix("\(op): setuid(\(entry.uid))") }
        // The uid change cleared the effective set; permitted was kept. Raise it again.
        guard let now = cap_get_proc() else { throw LinuxError.posix(op) }
        defer { cap_free(UnsafeMutableRawPointer(now)) }
        var value: cap_value_t = 0
        let count = cap_max_bits()
        while value < count {
            if try flag(now, value, CAP_PERMITTED, op) {
                var v = value
                _ = cap_set_flag(now, CAP_EFFECTIVE, 1, &v, CAP_SET)
            }
            value += 1
        }
        if cap_set_proc(now) != 0 { throw LinuxError.posix("\(op): raise effective capabilities") }
        guard try flag(now, CAP_NET_ADMIN, CAP_EFFECTIVE, op) else {
            throw LinuxError(operation: op, errno: EPERM, detail: "CAP_NET_ADMIN was lost during the switch")
        }
    }

    /// `switchUser(user)` when a user is given, then `reduceToNetAdmin()`.
    public static func dropPrivileges(to user: String?) throws(LinuxError) {
        if let user { try switchUser(user) }
        try reduceToNetAdmin()
    }

    /// Current capability sets as masks, parsed from /proc/self/status (CapEff, CapPrm, CapBnd,
    /// CapAmb, CapInh). /proc/self is the main thread; `ofCallingThread` reads /proc/thread-self.
    public static func current(ofCallingThread: Bool = false) -> [String: UInt64] {
        guard let text = readSmallFile(ofCallingThread ? "/proc/thread-self/status" : "/proc/self/status") else {
            return [:]
        }
        return parseStatus(text)
    }

    /// The effective capabilities of process `pid` (its main thread), nil if it is gone or its
    /// status cannot be read. For questions about a peer, like the kernel's checks of the
    /// calling task in setsockopt.
    public static func effective(ofProcess pid: Int32) -> UInt64? {
        guard pid > 0, let text = readSmallFile("/proc/\(pid)/status") else { return nil }
        return parseStatus(text)["CapEff"]
    }

    /// The Cap* lines of a /proc/.../status text.
    public static func parseStatus(_ text: String) -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            guard line.hasPrefix("Cap"), let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon])
            let value = line[line.index(after: colon)...].trimmingWhitespace()
            if let v = UInt64(value, radix: 16) { result[key] = v }
        }
        return result
    }

    // MARK: Internals

    private static func flag(_ caps: OpaquePointer, _ cap: cap_value_t, _ set: cap_flag_t,
                             _ op: String) throws(LinuxError) -> Bool {
        var v: cap_flag_value_t = CAP_CLEAR
        if cap_get_flag(caps, cap, set, &v) != 0 { throw LinuxError.posix("\(op): read capability \(cap)") }
        return v == CAP_SET
    }

    /// Permitted = effective = `keep`, inheritable empty.
    private static func setOnly(_ keep: [cap_value_t], operation: String) throws(LinuxError) {
        guard let caps = cap_init() else { throw LinuxError.posix(operation) }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        var list = keep
        if cap_set_flag(caps, CAP_PERMITTED, Int32(list.count), &list, CAP_SET) != 0
            || cap_set_flag(caps, CAP_EFFECTIVE, Int32(list.count), &list, CAP_SET) != 0
            || cap_set_proc(caps) != 0 {
            throw LinuxError.posix(operation)
        }
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return s
    }
}

/// Reads a /proc file (size unknown in advance, so read until EOF).
func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return nil }
    defer { _ = close(fd) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return nil }
        if n == 0 { break }
        data.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: data, as: UTF8.self)
}
