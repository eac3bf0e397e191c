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
        #expect(err("[Network]\nMTU=1500") == "ztapd.conf:1: unknown section [Network]; allowed: [Daemon]")
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
        for key in ["User", "LogLevel", "ControlUsers", "ControlGroup"] {
            #expect(text.contains("\n#\(key)="), "\(key) documented in config/ztapd.conf")
        }
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
