// UnprivilegedTests.swift - parsing, error mapping, lookups: no privileges, no interface changes.

import Foundation
import Testing
import CNetlink
@testable import LinuxNet

@Suite struct AddressParsingTests {
    @Test func parsesIPv4AndIPv6WithPrefix() throws {
        let v4 = try #require(InterfaceCIDR(parsing: "10.0.0.1/24"))
        #expect(v4.family == AF_INET)
        #expect(v4.bytes == [10, 0, 0, 1])
        #expect(v4.prefixLength == 24)
        #expect(v4.description == "10.0.0.1/24")
        #expect(v4.ipv4Broadcast == [10, 0, 0, 255])

        let v6 = try #require(InterfaceCIDR(parsing: "FD00:0::1/64"))
        #expect(v6.family == AF_INET6)
        #expect(v6.prefixLength == 64)
        #expect(v6.description == "fd00::1/64")  // canonical form, so comparisons are stable
        #expect(v6.ipv4Broadcast == nil)
    }

    @Test func defaultsToHostPrefix() throws {
        #expect(InterfaceCIDR(parsing: "192.168.1.7")?.prefixLength == 32)
        #expect(InterfaceCIDR(parsing: "::1")?.prefixLength == 128)
        #expect(InterfaceCIDR(parsing: "10.1.2.3/31")?.ipv4Broadcast == nil)
        #expect(InterfaceCIDR(parsing: "10.1.2.3/8")?.ipv4Broadcast == [10, 255, 255, 255])
    }

    @Test(arguments: ["", "10.0.0.1/33", "10.0.0/24", "10.0.0.1/+8", "10.0.0.1/", "fd00::1/129",
                      "default", "any", "0a000001", "10.0.0.1/24/1", "hello/24", "/24"])
    func rejectsMalformed(_ text: String) {
        #expect(InterfaceCIDR(parsing: text) == nil)
    }

    @Test func parsesAndFormatsMAC() throws {
        #expect(MACText.parse("02:00:5E:10:00:01") == [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01])
        #expect(MACText.parse("02-00-5e-10-00-01") == [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01])
        #expect(MACText.parse("02:00:5e:10:00") == nil)
        #expect(MACText.parse("02:00:5e:10:00:1") == nil)
        #expect(MACText.parse("02:00:5e:10:00:0g") == nil)
        #expect(MACText.parse("02:00:5e:10:00:01:02") == nil)
        let bytes: [UInt8] = [0xaa, 0x0b, 0xcc, 0x0d, 0xee, 0xff]
        #expect(bytes.withUnsafeBytes { MACText.format($0) } == "aa:0b:cc:0d:ee:ff")
    }
}

@Suite struct LinuxErrorTests {
    @Test func descriptionHasOperationTextAndErrno() {
        let e = LinuxError(operation: "set MTU 2800 on zt-foo", errno: EINVAL)
        #expect(e.description == "set MTU 2800 on zt-foo: Invalid argument (errno 22)")
        #expect(e.isErrno(EINVAL, ENODEV))
        #expect(e.debugDescription.contains("UnprivilegedTests.swift"))
    }

    @Test func mapsNetlinkCodesToErrno() {
        #expect(LinuxError.errnoForNetlinkCode(NLE_EXIST) == EEXIST)
        #expect(LinuxError.errnoForNetlinkCode(NLE_NODEV) == ENODEV)
        #expect(LinuxError.errnoForNetlinkCode(NLE_PERM) == EPERM)
        #expect(LinuxError.errnoForNetlinkCode(NLE_INVAL) == EINVAL)
        #expect(LinuxError.errnoForNetlinkCode(NLE_BUSY) == EBUSY)
        #expect(LinuxError.errnoForNetlinkCode(NLE_OBJ_NOTFOUND) == ENOENT)
        #expect(LinuxError.errnoForNetlinkCode(NLE_NOADDR) == EADDRNOTAVAIL)
        #expect(LinuxError.errnoForNetlinkCode(999) == EIO)
    }

    @Test func netlinkErrorPrefersKernelErrnoAndKeepsLibnlText() {
        let mapped = LinuxError.netlink("add address 10.0.0.1/24 to zt-foo", nlResult: -NLE_EXIST)
        #expect(mapped.errno == EEXIST)
        #expect(mapped.netlinkCode == NLE_EXIST)
        #expect(mapped.netlinkText?.isEmpty == false)
        #expect(mapped.description.hasPrefix("add address 10.0.0.1/24 to zt-foo: File exists"))

        // libnl reports ENODEV as "object not found"; the kernel's errno must win.
        let kernel = LinuxError.netlink("set zt-foo up", nlResult: -NLE_OBJ_NOTFOUND, kernelErrno: ENODEV,
                                        kernelMessage: "no such device")
        #expect(kernel.errno == ENODEV)
        #expect(kernel.description == "set zt-foo up: No such device (errno 19) [kernel: no such device]")
    }

    @Test func extAckMessageIsFoundAfterCappedEcho() {
        // nlmsghdr(16) + error(4) + capped echo header(16) + NLMSGERR_ATTR_MSG TLV.
        let text = Array("mtu less than device minimum".utf8) + [0]
        let tlvLength = 4 + text.count
        let total = 16 + 4 + 16 + ((tlvLength + 3) & ~3)
        var msg = [UInt8](repeating: 0, count: total)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { msg.replaceSubrange(at..<at + 4, with: $0) } }
        func put16(_ v: UInt16, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { msg.replaceSubrange(at..<at + 2, with: $0) } }
        put32(UInt32(total), 0)
        put16(2, 4)                      // NLMSG_ERROR
        put16(0x100 | 0x200, 6)          // NLM_F_CAPPED | NLM_F_ACK_TLVS
        put32(UInt32(bitPattern: -EINVAL), 16)
        put32(32, 20)                    // echoed request length (ignored when capped)
        put16(UInt16(tlvLength), 36)
        put16(1, 38)                     // NLMSGERR_ATTR_MSG
        msg.replaceSubrange(40..<40 + text.count, with: text)
        let found = msg.withUnsafeMutableBytes { raw in
            Netlink.extAckMessage((raw.baseAddress! + 16).assumingMemoryBound(to: nlmsgerr.self))
        }
        #expect(found == "mtu less than device minimum")

        // Without NLM_F_ACK_TLVS there is no message.
        msg[7] = 0; msg[6] = 0x00
        let none = msg.withUnsafeMutableBytes { raw in
            Netlink.extAckMessage((raw.baseAddress! + 16).assumingMemoryBound(to: nlmsgerr.self))
        }
        #expect(none == nil)
    }
}

@Suite struct UnprivilegedSystemTests {
    @Test func tapNameTooLongIsRejectedBeforeOpening() {
        let name = "zt-this-name-is-too-long"
        do {
            _ = try TapDevice.open(name: name)
            Issue.record("opening \(name) should fail")
        } catch {
            #expect(error.errno == ENAMETOOLONG)
            #expect(error.description.contains(name))
            #expect(error.description.contains("limit is 15"))
        }
    }

    @Test func invalidInterfaceNamesAreRejected() throws {
        let nl = try Netlink()
        for bad in ["", "a/b", "a b", "a:b", ".."] {
            #expect(throws: LinuxError.self) { _ = try nl.linkIndex(name: bad) }
        }
    }

    @Test func loopbackIsVisibleAndMissingLinkIsNil() throws {
        // Reading links needs no privilege and changes nothing.
        let nl = try Netlink()
        #expect(try nl.linkIndex(name: "lo") == 1)
        #expect(try nl.linkIndex(name: "zt-absent-9") == nil)
        let lo = try #require(try nl.linkInfo(interface: "lo"))
        #expect(lo.name == "lo")
        #expect(lo.mtu > 0)
        #expect(try nl.linkInfo(interface: "zt-absent-9") == nil)
        do {
            _ = try nl.addresses(interface: "zt-absent-9")
            Issue.record("listing addresses of a missing interface should fail")
        } catch {
            #expect(error.errno == ENODEV)
            #expect(error.description.contains("zt-absent-9"))
        }
    }

    @Test func malformedInputFailsWithClearErrors() throws {
        let nl = try Netlink()
        do {
            try nl.setMAC(interface: "zt-absent-9", mac: "not-a-mac")
            Issue.record("bad MAC accepted")
        } catch {
            #expect(error.errno == EINVAL)
            #expect(error.description.contains("not-a-mac"))
        }
        do {
            try nl.setMAC(interface: "zt-absent-9", mac: "01:00:5e:00:00:01")
            Issue.record("multicast MAC accepted")
        } catch {
            #expect(error.errno == EADDRNOTAVAIL)
            #expect(error.detail.contains("multicast"))
        }
        do {
            try nl.addAddress(interface: "zt-absent-9", address: "10.0.0.300/24")
            Issue.record("bad address accepted")
        } catch {
            #expect(error.errno == EINVAL)
            #expect(error.description.contains("10.0.0.300/24"))
        }
    }
}

@Suite struct CapabilityParsingTests {
    @Test func parsesProcStatusCapLines() {
        let text = """
        Name:\tztapd
        Uid:\t0\t0\t0\t0
        CapInh:\t0000000000000000
        CapPrm:\t0000000000001000
        CapEff:\t0000000000001000
        CapBnd:\t000001ffffffffff
        CapAmb:\t0000000000000000
        NoNewPrivs:\t0
        """
        let caps = Capabilities.parseStatus(text)
        #expect(caps == ["CapInh": 0, "CapPrm": 0x1000, "CapEff": 0x1000, "CapBnd": 0x1ff_ffff_ffff, "CapAmb": 0])
        #expect(caps["CapEff"] == Capabilities.netAdminMask)
    }

    @Test func currentHasAllFiveSets() {
        let caps = Capabilities.current()
        #expect(Set(caps.keys) == ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
        // Effective is always a subset of permitted.
        if let eff = caps["CapEff"], let prm = caps["CapPrm"] { #expect(eff & ~prm == 0) }
        #expect(Capabilities.current(ofCallingThread: true).count == 5)
    }

    @Test func switchUserToUnknownUserFails() {
        do {
            try Capabilities.switchUser("zt-no-such-user-42")
            Issue.record("switching to an unknown user should fail")
        } catch {
            #expect(error.errno == ENOENT)
            #expect(error.description.contains("zt-no-such-user-42"))
        }
    }
}

@Suite struct UserDBTests {
    @Test func rootLookups() {
        #expect(UserDB.uid(forUser: "root") == 0)
        #expect(UserDB.gid(forGroup: "root") == 0)
        #expect(UserDB.userName(uid: 0) == "root")
        #expect(UserDB.groups(ofUID: 0).contains(0))
    }

    @Test func unknownNamesAreNil() {
        #expect(UserDB.uid(forUser: "zt-no-such-user-42") == nil)
        #expect(UserDB.gid(forGroup: "zt-no-such-group-42") == nil)
        #expect(UserDB.userName(uid: 4_000_000_123) == nil)
        #expect(UserDB.groups(ofUID: 4_000_000_123) == [])
    }
}

/// TUNSETOFFLOAD's fallback ladder against a fake kernel: a kernel refuses a whole set when it
/// knows one flag not, so each refusal drops the newest offloads and says so.
@Suite struct OffloadNegotiationTests {
    @Test func everythingGrantedAtOnce() {
        var asked: [UInt32] = []
        let r = TapOffloads.negotiate { asked.append($0); return 0 }
        #expect(r.offloads == [.checksum, .tso4, .tso6, .tsoECN, .uso])
        #expect(r.refusals.isEmpty)
        // CSUM|TSO4|TSO6|TSO_ECN|USO4|USO6: USO only as the pair the kernel requires.
        let all: UInt32 = 0x6F   // 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40
        #expect(asked == [all])
    }

    @Test func kernelWithoutUSOFallsBackToTSO() {
        let r = TapOffloads.negotiate { $0 & 0x60 != 0 ? EINVAL : 0 }
        #expect(r.offloads == [.checksum, .tso4, .tso6, .tsoECN])
        #expect(r.refusals == ["TUNSETOFFLOAD csum tso4 tso6 tso_ecn uso refused (Invalid argument, errno 22)"])
    }

    @Test func everyOffloadRefused() {
        var asked: [UInt32] = []
        let r = TapOffloads.negotiate { asked.append($0); return EINVAL }
        #expect(r.offloads == [])
        #expect(asked == [0x6F, 0x0F, 0x07, 0x01, 0x00])
        #expect(r.refusals.count == 5)
        #expect(r.refusals.last == "TUNSETOFFLOAD none refused (Invalid argument, errno 22)")
    }

    @Test func namesAsInTheLog() {
        #expect(TapOffloads([.vnetHeader, .checksum, .tso4, .uso]).description == "vnet_hdr csum tso4 uso")
        #expect(TapOffloads().description == "none")
    }
}
