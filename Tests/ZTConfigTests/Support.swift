import Foundation
import Testing
@testable import ZTConfig

/// Runs `body` with a fresh temporary directory, removed afterwards.
func withTempDir<T>(_ body: (String) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ztconfig-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

func write(_ text: String, to path: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}

func read(_ path: String) throws -> String {
    String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self)
}

/// The ConfigError thrown by `body`, or nil.
func configError(_ body: () throws(ConfigError) -> Void) -> ConfigError? {
    do { try body(); return nil } catch { return error }
}

/// Parses a network file body under the name "net" and file "net.conf".
func parseNet(_ text: String) throws(ConfigError) -> NetworkConfig {
    try NetworkConfig.parse(text: text, name: "net", file: "net.conf")
}

/// The error description for a network file body (nil when it parses).
func netError(_ text: String) -> String? {
    configError { () throws(ConfigError) in _ = try parseNet(text) }?.description
}

/// Repository root, from this file's path (Tests/ZTConfigTests/Support.swift).
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path
