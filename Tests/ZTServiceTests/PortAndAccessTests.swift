import CShims
import Glibc
import NetStack
import SystemPackage
import Testing
@testable import ZTService

final class Owner {}

@Suite struct PortReservationTests {
    let any0 = IPv4Address(0, 0, 0, 0)
    let a = IPv4Address(10, 0, 0, 2)
    let b = IPv4Address(10, 0, 0, 3)

    func reserve(_ t: inout PortReservations, _ ep: IPv4Endpoint, _ o: Owner, reuseAddr: Bool = false,
                 reusePort: Bool = false, uid: UInt32 = 1000, inUse: (UInt16) -> Bool = { _ in false }) -> Result<IPv4Endpoint, Errno> {
        var rng = SystemRandomNumberGenerator()
        return t.reserve(ep, owner: ObjectIdentifier(o), reuseAddr: reuseAddr, reusePort: reusePort, uid: uid,
                         random: &rng, inUse: inUse)
    }

    @Test func exactAndWildcardConflict() throws {
        var t = PortReservations()
        let x = Owner(), y = Owner(), z = Owner()
        _ = try reserve(&t, IPv4Endpoint(a, 80), x).get()
        #expect(reserve(&t, IPv4Endpoint(a, 80), y).failure == .addressInUse)
        #expect(reserve(&t, IPv4Endpoint(any0, 80), y).failure == .addressInUse)
        // Another address of ours on the same port is fine.
        _ = try reserve(&t, IPv4Endpoint(b, 80), z).get()
    }

    @Test func reuseAddrSharesUnlessListening() throws {
        var t = PortReservations()
        let x = Owner(), y = Owner(), z = Owner()
        _ = try reserve(&t, IPv4Endpoint(a, 81), x, reuseAddr: true).get()
        _ = try reserve(&t, IPv4Endpoint(a, 81), y, reuseAddr: true).get()
        t.setListening(ObjectIdentifier(x), port: 81)
        #expect(reserve(&t, IPv4Endpoint(a, 81), z, reuseAddr: true).failure == .addressInUse)
    }

    @Test func reusePortNeedsTheSameUser() throws {
        var t = PortReservations()
        let x = Owner(), y = Owner(), z = Owner()
        _ = try reserve(&t, IPv4Endpoint(any0, 82), x, reusePort: true, uid: 1000).get()
        _ = try reserve(&t, IPv4Endpoint(any0, 82), y, reusePort: true, uid: 1000).get()
        #expect(reserve(&t, IPv4Endpoint(any0, 82), z, reusePort: true, uid: 1001).failure == .addressInUse)
    }

    @Test func lateReuseFlagsCount() throws {
        var t = PortReservations()
        let x = Owner(), y = Owner()
        _ = try reserve(&t, IPv4Endpoint(a, 83), x).get()
        #expect(reserve(&t, IPv4Endpoint(a, 83), y, reuseAddr: true).failure == .addressInUse)
        t.update(ObjectIdentifier(x), port: 83, reuseAddr: true, reusePort: false)
        _ = try reserve(&t, IPv4Endpoint(a, 83), y, reuseAddr: true).get()
    }

    @Test func ephemeralPortsSkipUsedOnesAndRunOut() throws {
        var t = PortReservations(ephemeral: 40000...40003)
        var got: [UInt16: Owner] = [:]
        for _ in 0..<3 {
            let o = Owner()
            let ep = try reserve(&t, IPv4Endpoint(any0, 0), o, inUse: { $0 == 40001 }).get()
            got[ep.port] = o
        }
        #expect(Set(got.keys) == [40000, 40002, 40003])
        #expect(reserve(&t, IPv4Endpoint(any0, 0), Owner(), inUse: { $0 == 40001 }).failure == .addressInUse)
        t.release(ObjectIdentifier(got[40002]!), port: 40002)
        #expect(t.count == 2)
        #expect(try reserve(&t, IPv4Endpoint(any0, 0), Owner(), inUse: { $0 == 40001 }).get().port == 40002)
    }
}

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
