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
    let p = Process()
    let exe = args[0].hasPrefix("/") ? args[0] :
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(args[0])" }
            .first { FileManager.default.isExecutableFile(atPath: $0) } ?? args[0]
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = Array(args.dropFirst())
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    if p.terminationStatus != 0 {
        throw CommandError(command: args, status: p.terminationStatus, stderr: String(decoding: e, as: UTF8.self))
    }
    return String(decoding: o, as: UTF8.self)
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
