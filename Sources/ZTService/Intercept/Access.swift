import CShims
import LinuxNet
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Who may do something besides root and ztapd's own user: a network's `[Access]` (creating
/// presence on the network through the intercept) or ztapd.conf's control users (ztctl).
struct AccessList: Sendable, Equatable {
    var uids: Set<UInt32> = []
    var gids: Set<UInt32> = []
    /// A network's `AllowPrivilegedPorts=`: admitted users may bind ports below 1024.
    var privilegedPorts = false

    init() {}

    init(uids: Set<UInt32>, gids: Set<UInt32>) {
        self.uids = uids
        self.gids = gids
    }

    /// Users and groups as config files list them: names or numeric ids (names that do not
    /// resolve are skipped).
    init(users: [String], groups: [String]) {
        for u in users {
            if let n = UInt32(u) { uids.insert(n) } else if let v = UserDB.uid(forUser: u) { uids.insert(v) }
        }
        for g in groups {
            if let n = UInt32(g) { gids.insert(n) } else if let v = UserDB.gid(forGroup: g) { gids.insert(v) }
        }
    }

    /// Root and ztapd's own user (`selfUID`) always; else a listed uid, or a listed group among
    /// the primary one and `groups(uid)` (asked only when groups are listed at all).
    func permits(uid: UInt32, gid: UInt32, selfUID: UInt32 = geteuid(), groups: (UInt32) -> [UInt32]) -> Bool {
        if uid == 0 || uid == selfUID || uids.contains(uid) { return true }
        if gids.isEmpty { return false }
        if gids.contains(gid) { return true }
        return groups(uid).contains { gids.contains($0) }
    }
}

/// An `AccessList` plus a bounded cache of supplementary groups, so a connect storm from one
/// user does not read /etc/group per request.
final class AccessPolicy {
    var list: AccessList
    private var groupCache: [UInt32: [UInt32]] = [:]
    private let lookupGroups: (UInt32) -> [UInt32]
    static let cacheLimit = 1024

    init(_ list: AccessList, lookupGroups: @escaping (UInt32) -> [UInt32] = { UserDB.groups(ofUID: $0) }) {
        self.list = list
        self.lookupGroups = lookupGroups
    }

    func permits(uid: UInt32, gid: UInt32) -> Bool {
        list.permits(uid: uid, gid: gid) { uid in
            if let g = groupCache[uid] { return g }
            let g = lookupGroups(uid)
            if groupCache.count >= Self.cacheLimit { groupCache.removeAll() }
            groupCache[uid] = g
            return g
        }
    }

    /// Forget cached groups (after a reload: /etc/group may have changed).
    func reset(_ list: AccessList) {
        self.list = list
        groupCache.removeAll()
    }
}
