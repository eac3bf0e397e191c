/// A systemd-style INI file kept line by line, so that edits leave every other byte alone.
///
/// Syntax: `[Section]` headers, `Key=Value` assignments (whitespace around `=` and at both ends
/// is trimmed), comment lines whose first non-blank character is `#` or `;`, and blank lines.
/// There are no inline comments, quotes or line continuations: `Key=a # b` has the value `a # b`.
/// Sections may appear more than once; their assignments are read in file order as one section.
/// This type only checks syntax; which sections and keys exist is the models' business.
public struct INIDocument: Sendable {
    enum Kind: Sendable, Equatable {
        case blank
        case comment
        case section(String)
        /// `valueStart` is the UTF-8 offset of the value in `raw`; the prefix before it
        /// (indentation, key, `=`, spacing) is reused when the key is rewritten.
        case assignment(key: String, value: String, valueStart: Int)
    }

    struct Line: Sendable {
        var raw: String
        var kind: Kind
        /// Section the line belongs to (nil before the first header).
        var section: String?
    }

    /// One `Key=Value` in file order, with its 1-based line number.
    struct Entry {
        var section: String
        var key: String
        var value: String
        var line: Int
    }

    let file: String
    var lines: [Line]
    /// Whether the text ended with a newline; kept so that render() reproduces it.
    var endsWithNewline: Bool

    /// Parses `text`; errors are syntax errors only (a line that is neither a comment, a header nor
    /// an assignment, an empty key, or an assignment before the first header).
    public init(text: String, file: String) throws(ConfigError) {
        self.file = file
        lines = []
        let bytes = Array(text.utf8)
        endsWithNewline = bytes.last == UInt8(ascii: "\n")
        var pieces = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if endsWithNewline || bytes.isEmpty { pieces.removeLast() }
        var section: String?
        for (i, piece) in pieces.enumerated() {
            let raw = String(decoding: piece, as: UTF8.self)
            let kind = try INIDocument.classify(raw, line: i + 1, file: file, section: section)
            if case .section(let name) = kind { section = name }
            lines.append(Line(raw: raw, kind: kind, section: section))
        }
    }

    static func classify(_ raw: String, line: Int, file: String, section: String?) throws(ConfigError) -> Kind {
        let t = trim(Substring(raw))
        guard let first = t.first else { return .blank }
        if first == "#" || first == ";" { return .comment }
        if first == "[" {
            guard t.last == "]" else {
                throw ConfigError(file: file, line: line, message: "bad section header \(t): expected [Section]")
            }
            let name = t.dropFirst().dropLast()
            guard !name.isEmpty, !name.contains("["), !name.contains("]") else {
                throw ConfigError(file: file, line: line, message: "bad section header \(t): expected [Section]")
            }
            return .section(String(name))
        }
        guard let eq = raw.firstIndex(of: "=") else {
            throw ConfigError(file: file, line: line,
                              message: "expected Key=Value, [Section], or a comment starting with # or ;, got \(t)")
        }
        let key = trim(raw[..<eq])
        guard !key.isEmpty else {
            throw ConfigError(file: file, line: line, message: "missing key name before = in \(t)")
        }
        guard section != nil else {
            throw ConfigError(file: file, line: line,
                              message: "\(key)= appears before any [Section] header")
        }
        let afterEq = raw[raw.index(after: eq)...]
        let valueStartIndex = afterEq.firstIndex(where: { $0 != " " && $0 != "\t" }) ?? raw.endIndex
        let valueStart = raw.utf8.distance(from: raw.startIndex, to: valueStartIndex)
        return .assignment(key: String(key), value: String(trim(afterEq)), valueStart: valueStart)
    }

    static func isBlank(_ c: Character) -> Bool { c == " " || c == "\t" || c == "\r" || c == "\r\n" }

    static func trim(_ s: Substring) -> Substring {
        var s = s
        while let c = s.first, isBlank(c) { s.removeFirst() }
        while let c = s.last, isBlank(c) { s.removeLast() }
        return s
    }

    /// Every assignment in file order.
    var entries: [Entry] {
        lines.enumerated().compactMap { i, l in
            guard case .assignment(let key, let value, _) = l.kind, let section = l.section else { return nil }
            return Entry(section: section, key: key, value: value, line: i + 1)
        }
    }

    /// The effective values of `key` in `section`, in order, with systemd reset semantics: an
    /// empty assignment drops everything before it. Values are returned as written (not split).
    public func values(section: String, key: String) -> [String] {
        var out: [String] = []
        for e in entries where e.section == section && e.key == key {
            if e.value.isEmpty { out.removeAll() } else { out.append(e.value) }
        }
        return out
    }

    /// Replaces all assignments of `key` in `section` with one line per value. The new lines go
    /// where the first old one was (reusing its `Key = ` spelling); without an old one, after the
    /// last assignment of the section; without the section, in a new section at the end. An empty
    /// array removes the key. Values must not contain line breaks (callers validate user input).
    public mutating func set(section: String, key: String, values: [String]) {
        precondition(values.allSatisfy { !$0.contains("\n") && !$0.contains("\r") },
                     "INIDocument.set: value with a line break for \(key)")
        var firstIndex: Int?
        var prefix = "\(key)="
        var lineEnd = ""  // keeps CRLF files CRLF on the rewritten lines
        var kept: [Line] = []
        for l in lines {
            if case .assignment(let k, _, let valueStart) = l.kind, k == key, l.section == section {
                if firstIndex == nil {
                    firstIndex = kept.count
                    prefix = String(decoding: l.raw.utf8.prefix(valueStart), as: UTF8.self)
                    if l.raw.utf8.last == UInt8(ascii: "\r") { lineEnd = "\r" }
                }
                continue
            }
            kept.append(l)
        }
        let newLines = values.map { v in
            Line(raw: prefix + v + lineEnd, kind: .assignment(key: key, value: v, valueStart: prefix.utf8.count),
                 section: section)
        }
        if let at = firstIndex {
            kept.insert(contentsOf: newLines, at: at)
            lines = kept
            return
        }
        lines = kept
        guard !newLines.isEmpty else { return }
        // Insert after the last header or assignment of the section's last occurrence, so a
        // trailing comment block (often documenting the next section) stays below.
        if let lastHeader = lines.lastIndex(where: { $0.kind == .section(section) }) {
            var at = lastHeader + 1
            var i = at
            while i < lines.count, lines[i].section == section {
                if case .section = lines[i].kind, i != lastHeader { break }
                if case .assignment = lines[i].kind { at = i + 1 }
                i += 1
            }
            lines.insert(contentsOf: newLines, at: at)
            return
        }
        if !lines.isEmpty {
            endsWithNewline = true
            if lines.last?.kind != .blank {
                lines.append(Line(raw: "", kind: .blank, section: lines.last?.section))
            }
        }
        lines.append(Line(raw: "[\(section)]", kind: .section(section), section: section))
        lines.append(contentsOf: newLines)
        endsWithNewline = true
    }

    /// The text, byte-for-byte as parsed apart from the lines changed by `set`.
    public func render() -> String {
        var out = lines.map(\.raw).joined(separator: "\n")
        if endsWithNewline && !lines.isEmpty { out += "\n" }
        return out
    }
}
