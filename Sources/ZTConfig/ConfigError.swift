// ZTConfig: systemd-style INI config files for ztapd (parse, validate, edit in place).
//
// Layers: `INIDocument` is the syntax (sections, assignments, comments kept byte-for-byte);
// `DaemonConfig` / `NetworkConfig` are the validated models built from a document through a
// table of key specs (KeySpec.swift); `NetworkConfigEditor` changes keys in place for ztctl and
// writes atomically. Nothing here touches the network; Foundation is fine (not a hot path).

/// A config problem, located in a file (and a line when there is one).
///
/// `description` is `FILE:LINE: message` (or `FILE: message` without a line, or just the message
/// when no file is involved, e.g. an unknown key name given to ztctl).
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String
    public var line: Int?
    public var message: String

    public init(file: String, line: Int? = nil, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        if file.isEmpty { return message }
        if let line { return "\(file):\(line): \(message)" }
        return "\(file): \(message)"
    }
}

/// A reason without a location; the parser adds file and line when it wraps it in ConfigError.
struct Reason: Error {
    var message: String
    init(_ message: String) { self.message = message }

    func at(_ file: String, _ line: Int?) -> ConfigError {
        ConfigError(file: file, line: line, message: message)
    }
}
