import Foundation
import Testing
@testable import ZTConfig

@Suite struct NetworkKeysTests {
    @Test func resolve() throws {
        #expect(try NetworkKeys.resolve("MTU") == ("Network", "MTU"))
        #expect(try NetworkKeys.resolve("network.mtu") == ("Network", "MTU"))
        #expect(try NetworkKeys.resolve("Stack.MaxConnections") == ("Stack", "MaxConnections"))
        #expect(try NetworkKeys.resolve("allowusers") == ("Access", "AllowUsers"))
        #expect(try NetworkKeys.resolve(" TCPSendBuffer ") == ("Stack", "TCPSendBuffer"))
        let e = configError { () throws(ConfigError) in _ = try NetworkKeys.resolve("Stack.MTU") }
        #expect(e?.description == "unknown key \"Stack.MTU\"; valid keys: Network.Interface, Network.MACAddress, "
                + "Network.MTU, Network.Address, Network.KernelAddress, Network.Gateway, Network.DefaultRoute, "
                + "Network.Route, Network.Bridge, Network.Services, Stack.TCPReceiveBuffer, Stack.TCPSendBuffer, "
                + "Stack.MaxConnections, Stack.Offload, Stack.BusyPoll, Access.AllowUsers, Access.AllowGroups, Access.AllowPrivilegedPorts, VXLAN.VNI, VXLAN.Local, "
                + "VXLAN.Remote, VXLAN.DestinationPort, VXLAN.Device")
        #expect(NetworkKeys.all.count == 23)
        #expect(try NetworkKeys.resolve("remote") == ("VXLAN", "Remote"))
        #expect(NetworkKeys.all.allSatisfy { !$0.help.isEmpty })
    }
}

@Suite struct NetworkConfigEditorTests {
    let original = """
        # my network
        ; notes: keep this
        [Network]
          MTU = 1500
        Address=10.0.0.2/24

        # kernel side
        KernelAddress=10.0.0.1/24
        Services=echo

        [Stack]
        # big buffers
        TCPReceiveBuffer=8M

        """

    func setup(_ dir: String, _ text: String? = nil) throws -> String {
        let path = dir + "/lab.conf"
        try write(text ?? original, to: path)
        return path
    }

    func apply(_ path: String, _ a: [(String, String)]) throws(ConfigError) -> (old: NetworkConfig, new: NetworkConfig) {
        try NetworkConfigEditor.apply(path: path, assignments: a.map { (key: $0.0, value: $0.1) })
    }

    func applyError(_ path: String, _ a: [(String, String)]) -> String? {
        configError { () throws(ConfigError) in _ = try apply(path, a) }?.description
    }

    @Test func setKeepsEverythingElseByteForByte() throws {
        try withTempDir { dir in
            let path = try setup(dir)
            let (old, new) = try apply(path, [("mtu", "9000"), ("Stack.MaxConnections", "100"), ("Gateway", "10.0.0.1")])
            #expect(old.mtu == 1500 && new.mtu == 9000 && new.maxConnections == 100 && new.gateway == "10.0.0.1")
            #expect(try read(path) == """
                # my network
                ; notes: keep this
                [Network]
                  MTU = 9000
                Address=10.0.0.2/24

                # kernel side
                KernelAddress=10.0.0.1/24
                Services=echo
                Gateway=10.0.0.1

                [Stack]
                # big buffers
                TCPReceiveBuffer=8M
                MaxConnections=100

                """)
            #expect(try NetworkConfig.load(path: path) == new)
        }
    }

    @Test func listKeysOneLinePerItemAndClearing() throws {
        try withTempDir { dir in
            let path = try setup(dir)
            _ = try apply(path, [("Address", "10.0.0.2/24  10.0.1.2/24"), ("Services", "echo discard")])
            var text = try read(path)
            #expect(text.contains("\nAddress=10.0.0.2/24\nAddress=10.0.1.2/24\n\n# kernel side\n"))
            #expect(text.contains("\nServices=echo\nServices=discard\n"))
            // Repeating a list key in one call appends; an empty one resets.
            let (_, new) = try apply(path, [("Address", "10.7.0.2/24"), ("Address", "10.8.0.2/24"),
                                            ("AllowUsers", "alice"), ("AllowUsers", ""), ("AllowUsers", "bob")])
            #expect(new.addresses.map(\.description) == ["10.7.0.2/24", "10.8.0.2/24"])
            #expect(new.allowUsers == ["bob"])
            // KEY= clears (back to the default).
            let (_, cleared) = try apply(path, [("Services", ""), ("MTU", ""), ("AllowUsers", " ")])
            #expect(cleared.services.isEmpty && cleared.mtu == 2800 && cleared.allowUsers.isEmpty)
            text = try read(path)
            #expect(!text.contains("Services") && !text.contains("MTU") && !text.contains("AllowUsers"))
            #expect(text.hasPrefix("# my network\n; notes: keep this\n[Network]\n"))
            #expect(text.contains("\n# big buffers\nTCPReceiveBuffer=8M\n"))
        }
    }

    @Test func canonicalValuesAreWritten() throws {
        try withTempDir { dir in
            let path = try setup(dir)
            _ = try apply(path, [("MACAddress", "02-AB-CD-EF-00-01"), ("TCPSendBuffer", "1048576"), ("DefaultRoute", "true")])
            let text = try read(path)
            #expect(text.contains("MACAddress=02:ab:cd:ef:00:01\n"))
            #expect(text.contains("TCPSendBuffer=1M\n"))
            #expect(text.contains("DefaultRoute=yes\n"))
        }
    }

    @Test func errorsLeaveFileByteIdentical() throws {
        try withTempDir { dir in
            let path = try setup(dir)
            var before = stat()
            stat(path, &before)
            let cases: [([(String, String)], String)] = [
                ([("MTU", "9000"), ("Colour", "blue")], "\(path): unknown key \"Colour\"; valid keys: "
                    + NetworkConfig.specs.map(\.canonicalName).joined(separator: ", ")),
                ([("MTU", "9000"), ("MTU", "1500")], "\(path): Network.MTU is given twice; it takes one value"),
                ([("MTU", "99999")], "\(path): invalid MTU=99999: expected an integer in 1280...65521"),
                ([("Address", "10.0.0.2/24 10.0.0.300/24")],
                 "\(path): invalid Address=10.0.0.300/24: expected ADDRESS/PREFIX like 10.200.0.2/24 (prefix 0-32) or fd00::2/64 (0-128)"),
                ([("Gateway", "192.168.1.1")],
                 "\(path): change rejected: invalid Gateway=192.168.1.1: must be inside an IPv4 Address= subnet (Address= has 10.0.0.2/24)"),
                ([("Interface", "zt0\nMTU=1")], "\(path): invalid Interface=: the value contains control characters or line breaks"),
                ([("KernelAddress", "10.0.0.2/24")],
                 "\(path): change rejected: KernelAddress=10.0.0.2/24 has the same address as Address=10.0.0.2/24 on line 5; the kernel side and the stack are two different hosts"),
            ]
            for (assignments, expected) in cases {
                #expect(applyError(path, assignments) == expected)
                #expect(try read(path) == original)
            }
            var after = stat()
            stat(path, &after)
            #expect(after.st_ino == before.st_ino, "the file was never replaced")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["lab.conf"], "no temp files left")
        }
    }

    @Test func brokenFileIsReportedWithItsLine() throws {
        try withTempDir { dir in
            let path = try setup(dir, "[Network]\nMTU=1500\nBogus=1\n")
            #expect(applyError(path, [("MTU", "9000")]) == "\(path):3: unknown key Bogus= in [Network]; allowed: "
                    + "Interface= MACAddress= MTU= Address= KernelAddress= Gateway= DefaultRoute= Route= Bridge= Services=")
            #expect(try read(path) == "[Network]\nMTU=1500\nBogus=1\n")
            #expect(applyError(dir + "/missing.conf", [("MTU", "9000")])
                    == "\(dir)/missing.conf: cannot open: No such file or directory (errno 2)")
            #expect(applyError(dir + "/Bad_Name.conf", [("MTU", "9000")])
                    == "\(dir)/Bad_Name.conf: invalid network name \"Bad_Name\": expected 1 to 32 characters [a-z0-9-], not starting with -")
        }
    }

    @Test func atomicWriteKeepsModeAndOwnerAndReplacesInode() throws {
        try withTempDir { dir in
            let path = try setup(dir)
            #expect(chmod(path, 0o640) == 0)
            let canChown = geteuid() == 0
            if canChown { #expect(chown(path, 1234, 5678) == 0) }
            var before = stat()
            stat(path, &before)
            _ = try apply(path, [("MTU", "2000")])
            var after = stat()
            stat(path, &after)
            #expect(after.st_ino != before.st_ino, "written to a new file and renamed over")
            #expect(after.st_mode & 0o7777 == 0o640)
            if canChown { #expect(after.st_uid == 1234 && after.st_gid == 5678) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["lab.conf"])
            // A no-op change does not rewrite the file.
            _ = try apply(path, [("MTU", "2000")])
            var again = stat()
            stat(path, &again)
            #expect(again.st_ino == after.st_ino)
        }
    }

    @Test func symlinkedFileIsEditedThroughTheLink() throws {
        try withTempDir { dir in
            let target = dir + "/real.conf.txt"
            try write(original, to: target)
            let link = dir + "/lab.conf"
            #expect(symlink(target, link) == 0)
            _ = try apply(link, [("MTU", "1300")])
            var st = stat()
            #expect(lstat(link, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK, "still a symlink")
            #expect(try read(target).contains("  MTU = 1300\n"))
        }
    }

    @Test func concurrentEditsAreSerialised() throws {
        try withTempDir { dir in
            let path = try setup(dir)
            let edits: [(String, String)] = [("MTU", "1400"), ("MaxConnections", "7"), ("TCPSendBuffer", "128K"),
                                             ("Bridge", "br9"), ("Interface", "ztlab"), ("AllowGroups", "g1"),
                                             ("Route", "10.50.0.0/16"), ("DefaultRoute", "yes")]
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: edits.count) { i in
                do {
                    _ = try NetworkConfigEditor.apply(path: path, assignments: [(key: edits[i].0, value: edits[i].1)])
                } catch {
                    failures.withLock { $0.append(String(describing: error)) }
                }
            }
            #expect(failures.withLock { $0 } == [])
            let c = try NetworkConfig.load(path: path)
            #expect(c.mtu == 1400 && c.maxConnections == 7 && c.tcpSendBuffer == 128 << 10 && c.bridge == "br9")
            #expect(c.interface == "ztlab" && c.allowGroups == ["g1"] && c.routes.count == 1 && c.defaultRoute)
            #expect(try read(path).hasPrefix("# my network\n; notes: keep this\n"))
        }
    }

    @Test func get() throws {
        try withTempDir { dir in
            let path = try setup(dir)
            _ = try apply(path, [("Address", "10.0.0.2/24 fd00::2/64")])
            let one = try NetworkConfigEditor.get(path: path, key: "address")
            #expect(one.count == 1 && one[0].key == "Network.Address" && one[0].value == "10.0.0.2/24 fd00::2/64")
            let all = try NetworkConfigEditor.get(path: path, key: nil)
            #expect(all.map(\.key) == NetworkConfig.specs.map(\.canonicalName))
            let dict = Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0.value) })
            #expect(dict["Network.MTU"] == "1500" && dict["Network.Interface"] == "" && dict["Stack.TCPReceiveBuffer"] == "8M")
            #expect(dict["Stack.MaxConnections"] == "4096" && dict["Network.DefaultRoute"] == "no")
            // get's output feeds set unchanged.
            _ = try apply(path, all.map { ($0.key, $0.value) })
            #expect(try NetworkConfigEditor.get(path: path, key: nil).map(\.value) == all.map(\.value))
        }
    }

    @Test func createForJoin() throws {
        try withTempDir { dir in
            var c = NetworkConfig(name: "joined")
            c.addresses = [IPPrefix("10.9.0.2/24")!]
            c.services = [.echo]
            let path = try NetworkConfigEditor.create(directory: dir, config: c)
            #expect(path == dir + "/joined.conf")
            #expect(try NetworkConfig.load(path: path) == c)
            var st = stat()
            stat(path, &st)
            #expect(st.st_mode & 0o777 == 0o644)
            #expect(configError { () throws(ConfigError) in _ = try NetworkConfigEditor.create(directory: dir, config: c) }?.description
                    == "\(path): already exists")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["joined.conf"])
        }
    }
}

import Synchronization
