import Testing
@testable import ZTConfig

@Suite struct DaemonConfigTests {
    func err(_ text: String) -> String? {
        configError { () throws(ConfigError) in _ = try DaemonConfig.parse(text: text, file: "ztapd.conf") }?.description
    }

    @Test func defaults() throws {
        #expect(try DaemonConfig.parse(text: "", file: "f") == .default)
        #expect(DaemonConfig.default.logLevel == .info && DaemonConfig.default.user == nil)
        #expect(DaemonConfig.default.controlUsers.isEmpty && DaemonConfig.default.controlGroups.isEmpty)
    }

    @Test func everyKey() throws {
        let c = try DaemonConfig.parse(text: """
            [Daemon]
            User=ztapd
            LogLevel=debug
            ControlUsers=alice 1001
            ControlUsers=bob
            ControlGroup=ztap
            ControlGroups=wheel 10
            """, file: "f")
        #expect(c == DaemonConfig(user: "ztapd", logLevel: .debug, controlUsers: ["alice", "1001", "bob"],
                                  controlGroups: ["ztap", "wheel", "10"]))
        #expect(try DaemonConfig.parse(text: "[Daemon]\nUser=0", file: "f").user == "0")
        #expect(try DaemonConfig.parse(text: "[Daemon]\nControlUsers=a\nControlUsers=\nControlUsers=b", file: "f").controlUsers == ["b"])
        #expect(try DaemonConfig.parse(text: "[Daemon]\nLogLevel=error\nLogLevel=\n", file: "f").logLevel == .info)
    }

    @Test func badValues() {
        #expect(err("[Daemon]\nLogLevel=verbose")
                == "ztapd.conf:2: invalid LogLevel=verbose: expected one of trace, debug, info, notice, warning, error, critical")
        #expect(err("[Daemon]\nLogLevel=Info")
                == "ztapd.conf:2: invalid LogLevel=Info: expected one of trace, debug, info, notice, warning, error, critical")
        #expect(err("[Daemon]\nUser=a b")
                == "ztapd.conf:2: invalid User=a b: expected a user name ([A-Za-z_][A-Za-z0-9_.-]{0,31}) or a numeric uid")
        #expect(err("[Daemon]\nControlGroup=x y:z")
                == "ztapd.conf:2: invalid ControlGroup=y:z: expected a group name ([A-Za-z_][A-Za-z0-9_.-]{0,31}) or a numeric gid")
        #expect(err("[Daemon]\nControlUsers=a a") == "ztapd.conf:2: duplicate ControlUsers=a: already listed")
        #expect(err("[Daemon]\nUser=a\nUser=b")
                == "ztapd.conf:3: duplicate User=b: User= takes one value and is already set on line 2 (an empty User= line resets it)")
        #expect(err("[Daemon]\nLoglevel=info")
                == "ztapd.conf:2: unknown key Loglevel= in [Daemon]; did you mean LogLevel= (keys are case-sensitive)?")
        #expect(err("[Network]\nMTU=1500") == "ztapd.conf:1: unknown section [Network]; allowed: [Daemon], [Limits]")
    }

    @Test func loadMissingIsDefaultAndShippedFileParses() throws {
        try withTempDir { dir in
            #expect(try DaemonConfig.load(path: dir + "/none.conf") == .default)
            try write("[Daemon]\nLogLevel=trace\n", to: dir + "/ztapd.conf")
            #expect(try DaemonConfig.load(path: dir + "/ztapd.conf").logLevel == .trace)
            try write("[Daemon]\nLogLevel=x\n", to: dir + "/bad.conf")
            #expect(configError { () throws(ConfigError) in _ = try DaemonConfig.load(path: dir + "/bad.conf") }?.line == 2)
        }
        // The shipped file has every key commented out: defaults.
        #expect(try DaemonConfig.load(path: repoRoot + "/config/ztapd.conf") == .default)
        let text = try read(repoRoot + "/config/ztapd.conf")
        for key in ["User", "LogLevel", "ControlUsers", "ControlGroup", "SyscallFilter"] + DaemonLimits.specs.map(\.key) {
            #expect(text.contains("\n#\(key)="), "\(key) documented in config/ztapd.conf")
        }
    }

    @Test func limitsDefaultsAndEveryKey() throws {
        let d = DaemonConfig.default
        #expect(d.syscallFilter && d.limits == .default)
        #expect(d.limits.controlClients == 64 && d.limits.controlClientsPerUser == 8)
        #expect(d.limits.controlIdleTimeoutMs == 30_000 && d.limits.controlOutputBuffer == 1 << 20)
        #expect(d.limits.pendingRequestsPerUser == 512 && d.limits.tcpSocketsPerUser == 1024)
        #expect(d.limits.udpSocketsPerUser == 1024 && d.limits.bufferMemoryPerUser == nil)
        let c = try DaemonConfig.parse(text: """
            [Daemon]
            SyscallFilter=no
            [Limits]
            ControlClients=10
            ControlClientsPerUser=2
            ControlIdleTimeout=2min
            ControlOutputBuffer=256K
            PendingRequestsPerUser=7
            TCPSocketsPerUser=100
            UDPSocketsPerUser=50
            BufferMemoryPerUser=2G
            """, file: "f")
        #expect(!c.syscallFilter)
        #expect(c.limits == DaemonLimits(controlClients: 10, controlClientsPerUser: 2, controlIdleTimeoutMs: 120_000,
                                         controlOutputBuffer: 256 << 10, pendingRequestsPerUser: 7, tcpSocketsPerUser: 100,
                                         udpSocketsPerUser: 50, bufferMemoryPerUser: 2 << 30))
        #expect(try DaemonConfig.parse(text: "[Limits]\nBufferMemoryPerUser=1G\nBufferMemoryPerUser=\n", file: "f").limits == .default)
        #expect(try DaemonConfig.parse(text: "[Limits]\nBufferMemoryPerUser=auto", file: "f").limits.bufferMemoryPerUser == nil)
        for (text, ms) in [("250ms", 250), ("30", 30_000), ("30s", 30_000), ("1h", 3_600_000), ("24h", 86_400_000)] {
            #expect(try DaemonConfig.parse(text: "[Limits]\nControlIdleTimeout=\(text)", file: "f").limits.controlIdleTimeoutMs == ms)
        }
    }

    @Test func limitsBadValues() {
        let duration = "expected a duration in 100ms...24h (digits with ms, s, min or h; bare digits are seconds, e.g. 30s)"
        #expect(err("[Limits]\nControlIdleTimeout=99ms") == "ztapd.conf:2: invalid ControlIdleTimeout=99ms: " + duration)
        #expect(err("[Limits]\nControlIdleTimeout=25h") == "ztapd.conf:2: invalid ControlIdleTimeout=25h: " + duration)
        #expect(err("[Limits]\nControlIdleTimeout=5 s") == "ztapd.conf:2: invalid ControlIdleTimeout=5 s: " + duration)
        #expect(err("[Limits]\nControlIdleTimeout=s") == "ztapd.conf:2: invalid ControlIdleTimeout=s: " + duration)
        #expect(err("[Limits]\nControlIdleTimeout=99999999999999h") == "ztapd.conf:2: invalid ControlIdleTimeout=99999999999999h: " + duration)
        #expect(err("[Limits]\nControlClients=0") == "ztapd.conf:2: invalid ControlClients=0: expected an integer in 1...4096")
        #expect(err("[Limits]\nTCPSocketsPerUser=-1") == "ztapd.conf:2: invalid TCPSocketsPerUser=-1: expected an integer in 1...1048576")
        #expect(err("[Limits]\nControlOutputBuffer=1K")
                == "ztapd.conf:2: invalid ControlOutputBuffer=1K: expected a size in 64K...1G (bytes, or with suffix K or M, e.g. 4M)")
        #expect(err("[Limits]\nBufferMemoryPerUser=Auto")
                == "ztapd.conf:2: invalid BufferMemoryPerUser=Auto: expected a size in 1M...1048576G (bytes, or with suffix K or M, e.g. 4M)")
        #expect(err("[Daemon]\nSyscallFilter=maybe")
                == "ztapd.conf:2: invalid SyscallFilter=maybe: expected yes or no (also 1/0, true/false, on/off)")
        #expect(err("[Daemon]\nControlClients=3") == "ztapd.conf:2: unknown key ControlClients= in [Daemon]; ControlClients= belongs in [Limits]")
    }

    @Test func unreadableAndNonUTF8Files() throws {
        try withTempDir { dir in
            let path = dir + "/bin.conf"
            try Data([0x5B, 0x44, 0xFF, 0x5D]).write(to: URL(fileURLWithPath: path))
            #expect(configError { () throws(ConfigError) in _ = try DaemonConfig.load(path: path) }?.description
                    == "\(path): file is not valid UTF-8")
            #expect(configError { () throws(ConfigError) in _ = try DaemonConfig.load(path: dir) }?.description
                    == "\(dir): cannot read: Is a directory (errno 21)")
        }
    }
}

import Foundation
