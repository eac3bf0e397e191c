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

/// Runs a command (absolute path in `args[0]` or found in /usr/sbin, /sbin, /usr/bin, /bin) and
/// returns its stdout. posix_spawn + waitpid rather than Foundation.Process: Process waits through
/// a CFRunLoop wake-up socket that cannot be created in a fresh namespace whose lo is down.
@discardableResult
func run(_ args: [String], extraEnvironment: [String] = []) throws -> String {
    let exe = args[0].hasPrefix("/") ? args[0] :
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(args[0])" }
            .first { access($0, X_OK) == 0 } ?? args[0]
    var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
    guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else {
        throw CommandError(command: args, status: -1, stderr: "pipe failed: errno \(errno)")
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
    for fd in outPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }
    let argv: [UnsafeMutablePointer<CChar>?] = ([exe] + args.dropFirst()).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var envp: [UnsafeMutablePointer<CChar>?] = extraEnvironment.map { strdup($0) }
    var i = 0
    while let e = environ[i] { envp.append(strdup(e)); i += 1 }
    envp.append(nil)
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    let r = posix_spawn(&pid, exe, &actions, nil, argv, envp)
    close(outPipe[1])
    close(errPipe[1])
    defer { close(outPipe[0]); close(errPipe[0]) }
    guard r == 0 else { throw CommandError(command: args, status: -1, stderr: "posix_spawn failed: \(r)") }
    // Outputs of the commands used here are far below a pipe's capacity, so reading one after
    // the other cannot deadlock.
    let out = readAll(outPipe[0]), err = readAll(errPipe[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let exited = status & 0x7f == 0
    let code = exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    if code != 0 { throw CommandError(command: args, status: code, stderr: err) }
    return out
}

private func readAll(_ fd: Int32) -> String {
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        data += chunk[0..<n]
    }
    return String(decoding: data, as: UTF8.self)
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
