import CShims
import Glibc
import NetStack
import SystemPackage
import Testing
@testable import ZTService

@Suite struct AccessTests {
    @Test func rootSelfListedAndGroups() {
        let list = AccessList(uids: [1000], gids: [50])
        let groups: (UInt32) -> [UInt32] = { $0 == 1002 ? [7, 50] : [7] }
        #expect(list.permits(uid: 0, gid: 0, selfUID: 999, groups: groups))
        #expect(list.permits(uid: 999, gid: 999, selfUID: 999, groups: groups))
        #expect(list.permits(uid: 1000, gid: 1000, selfUID: 999, groups: groups))
        #expect(list.permits(uid: 1001, gid: 50, selfUID: 999, groups: groups))     // primary group
        #expect(list.permits(uid: 1002, gid: 1002, selfUID: 999, groups: groups))   // supplementary
        #expect(!list.permits(uid: 1003, gid: 1003, selfUID: 999, groups: groups))
    }

    @Test func groupsAreAskedOnlyWhenListedAndCached() {
        var asked = 0
        let p = AccessPolicy(AccessList(uids: [], gids: [50]), lookupGroups: { _ in asked += 1; return [50] })
        #expect(p.permits(uid: 1234, gid: 1234))
        #expect(p.permits(uid: 1234, gid: 1234))
        #expect(asked == 1)
        p.reset(AccessList(uids: [], gids: []))
        #expect(!p.permits(uid: 1234, gid: 1234))
        #expect(asked == 1, "no group lookup without listed groups")
    }

    @Test func namesResolveNumbersPassThrough() {
        let l = AccessList(users: ["root", "4242", "no-such-user-ztap"], groups: ["0", "no-such-group-ztap"])
        #expect(l.uids == [0, 4242])
        #expect(l.gids == [0])
    }
}
