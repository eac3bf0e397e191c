// Support.swift - gating and `ip` helpers for the privileged tests.
//
// Privileged tests change interfaces, so they run only as root AND with ZTAP_PRIVATE_NETNS=1,
// which the test script sets after `unshare --net`, i.e. the whole test process sits in its own
// throwaway network namespace. Never setns here: tests run in parallel on shared threads.
//
// Try: unshare --net env ZTAP_PRIVATE_NETNS=1 swift test --filter LinuxNetTests

import Foundation
import Testing

enum Privileged {
    /// nil when privileged tests may run; otherwise the reason they skip.
    static let skipReason: String? = {
        if geteuid() != 0 { return "not root" }
        if ProcessInfo.processInfo.environment["ZTAP_PRIVATE_NETNS"] != "1" {
            return "ZTAP_PRIVATE_NETNS=1 not set (run under `unshare --net`)"
        }
        return nil
    }()

    /// True when the test may go on; otherwise prints one line and records why it skipped.
    static func check(_ test: String) -> Bool {
        guard let reason = skipReason else { return true }
        print("LinuxNetTests.\(test): skipped, \(reason)")
        #expect(!reason.isEmpty)
        return false
    }
}

struct CommandError: Error, CustomStringConvertible {
    var command: [String]
    var status: Int32
    var stderr: String
    var description: String { "\(command.joined(separator: " ")) exited \(status): \(stderr)" }
}

/// Runs a command (absolute path in `args[0]` or found in /usr/sbin, /sbin, /usr/bin, /bin).
@discardableResult
func run(_ args: [String]) throws -> String {
    // posix_spawn + waitpid instead of Foundation.Process: Process.waitUntilExit can hang when
    // tests spawn processes concurrently (seen here with Swift Testing's parallel runner).
    let exe = args[0].hasPrefix("/") ? args[0] :
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(args[0])" }
            .first { FileManager.default.isExecutableFile(atPath: $0) } ?? args[0]
    let tmp = FileManager.default.temporaryDirectory.path + "/lnt-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    let outPath = tmp + ".out", errPath = tmp + ".err"
    defer { unlink(outPath); unlink(errPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    let argv: [UnsafeMutablePointer<CChar>?] = ([exe] + args.dropFirst()).map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, exe, &actions, nil, argv, environ)
    guard rc == 0 else {
        throw CommandError(command: args, status: -1, stderr: String(cString: strerror(rc)))
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let o = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let e = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    let exited = status & 0x7f == 0
    let code = exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    if code != 0 {
        throw CommandError(command: args, status: code, stderr: e)
    }
    return o
}

/// `ip -j <args>` parsed as an array of objects.
func ipJSON(_ args: [String]) throws -> [[String: Any]] {
    let text = try run(["ip", "-j"] + args)
    let obj = try JSONSerialization.jsonObject(with: Data(text.utf8))
    return obj as? [[String: Any]] ?? []
}

/// The `ip -j link show dev` object of one interface, nil if absent.
func ipLink(_ name: String) -> [String: Any]? {
    (try? ipJSON(["link", "show", "dev", name]))?.first
}

/// "local/prefixlen" strings from `ip -j addr show dev`.
func ipAddresses(_ name: String) throws -> [String] {
    guard let obj = try ipJSON(["addr", "show", "dev", name]).first,
          let infos = obj["addr_info"] as? [[String: Any]] else { return [] }
    return infos.compactMap { info in
        guard let local = info["local"] as? String, let p = info["prefixlen"] as? Int else { return nil }
        return "\(local)/\(p)"
    }
}
