// UserDB.swift - user/group lookups (getpwnam_r & co.) for access checks and User=.
//
// The reentrant variants are used because the daemon looks up peers from several threads.
// Buffers start at sysconf's suggestion and grow on ERANGE.

#if canImport(Glibc)
import Glibc
#endif

public enum UserDB {
    struct PasswdEntry {
        var name: String
        var uid: UInt32
        var gid: UInt32
    }

    public static func uid(forUser name: String) -> UInt32? { entry(name: name)?.uid }

    public static func gid(forGroup name: String) -> UInt32? {
        withGrowingBuffer(sysconf(Int32(_SC_GETGR_R_SIZE_MAX))) { buf -> (Int32, UInt32?) in
            var gr = group()
            var result: UnsafeMutablePointer<group>?
            let r = getgrnam_r(name, &gr, buf.baseAddress!, buf.count, &result)
            return (r, result?.pointee.gr_gid)
        } ?? nil
    }

    public static func userName(uid: UInt32) -> String? {
        withGrowingBuffer(sysconf(Int32(_SC_GETPW_R_SIZE_MAX))) { buf -> (Int32, String?) in
            var pw = Glibc.passwd()
            var result: UnsafeMutablePointer<Glibc.passwd>?
            let r = getpwuid_r(uid, &pw, buf.baseAddress!, buf.count, &result)
            return (r, result.flatMap { $0.pointee.pw_name.map { String(cString: $0) } })
        } ?? nil
    }

    /// Group ids of the user with `uid` (primary group included); [] if the uid has no entry.
    public static func groups(ofUID uid: UInt32) -> [UInt32] {
        guard let entry = entry(uid: uid) else { return [] }
        return groups(ofUser: entry.name, primaryGID: entry.gid)
    }

    // MARK: Internals

    static func entry(name: String) -> PasswdEntry? {
        withGrowingBuffer(sysconf(Int32(_SC_GETPW_R_SIZE_MAX))) { buf -> (Int32, PasswdEntry?) in
            var pw = Glibc.passwd()
            var result: UnsafeMutablePointer<Glibc.passwd>?
            let r = getpwnam_r(name, &pw, buf.baseAddress!, buf.count, &result)
            return (r, result.map { PasswdEntry(name: name, uid: $0.pointee.pw_uid, gid: $0.pointee.pw_gid) })
        } ?? nil
    }

    static func entry(uid: UInt32) -> PasswdEntry? {
        withGrowingBuffer(sysconf(Int32(_SC_GETPW_R_SIZE_MAX))) { buf -> (Int32, PasswdEntry?) in
            var pw = Glibc.passwd()
            var result: UnsafeMutablePointer<Glibc.passwd>?
            let r = getpwuid_r(uid, &pw, buf.baseAddress!, buf.count, &result)
            return (r, result.flatMap { p in
                p.pointee.pw_name.map { PasswdEntry(name: String(cString: $0), uid: p.pointee.pw_uid, gid: p.pointee.pw_gid) }
            })
        } ?? nil
    }

    static func groups(ofUser name: String, primaryGID: UInt32) -> [UInt32] {
        var count: Int32 = 32
        while count <= 65536 {
            var list = [gid_t](repeating: 0, count: Int(count))
            var n = count
            if getgrouplist(name, primaryGID, &list, &n) >= 0 {
                return Array(list.prefix(Int(n)))
            }
            // -1 means too small; n now holds the needed size.
            count = max(n, count * 2)
        }
        return [primaryGID]
    }

    /// Runs `body` with a scratch buffer, doubling it on ERANGE. nil on other errors.
    private static func withGrowingBuffer<T>(_ hint: Int, _ body: (UnsafeMutableBufferPointer<CChar>) -> (Int32, T?)) -> T?? {
        var size = hint > 0 ? hint : 1024
        while size <= 1 << 20 {
            let buf = UnsafeMutableBufferPointer<CChar>.allocate(capacity: size)
            defer { buf.deallocate() }
            let (r, value) = body(buf)
            if r == ERANGE { size *= 2; continue }
            if r != 0 { return .some(nil) }
            return .some(value)
        }
        return .some(nil)
    }
}
