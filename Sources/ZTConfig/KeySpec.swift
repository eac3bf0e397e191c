/// One settable key of a config model: where it lives, how it is parsed, reset and printed.
///
/// The models are built by feeding a document's assignments through a table of these, so
/// parsing, `ztctl get/set` validation and `renderNewFile` share one definition per key.
struct KeySpec<Model>: Sendable {
    enum Arity: Sendable {
        /// One value; a second assignment without a reset in between is an error.
        case single
        /// Repeatable, and each value may hold several whitespace-separated items.
        case list
    }

    var section: String
    var key: String
    var arity: Arity
    var help: String
    /// Takes one value (single) or one item (list); throws a reason naming key, value and what is allowed.
    var apply: @Sendable (inout Model, String) throws(Reason) -> Void
    /// Back to the default (what an empty assignment `Key=` does).
    var reset: @Sendable (inout Model) -> Void
    /// Current value(s) in canonical text; empty when unset.
    var render: @Sendable (Model) -> [String]
    /// Whether the current value equals the default (renderNewFile leaves such keys out).
    var isDefault: @Sendable (Model) -> Bool

    var canonicalName: String { "\(section).\(key)" }

    /// Splits a list value into its items.
    static func items(_ value: String) -> [String] {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
    }
}

/// Lines on which keys (or each item of list keys) were set; used to place cross-key errors.
struct KeyLines {
    var lines: [String: [Int]] = [:]
    func first(_ key: String) -> Int? { lines[key]?.first }
    func item(_ key: String, _ i: Int) -> Int? {
        guard let l = lines[key], i < l.count else { return nil }
        return l[i]
    }
}

enum ModelParser {
    /// Applies every assignment of `doc` to `model` through `specs`. Unknown sections and keys,
    /// bad values and repeated single-valued keys are errors at their line.
    static func apply<Model>(_ doc: INIDocument, specs: [KeySpec<Model>], to model: inout Model)
        throws(ConfigError) -> KeyLines
    {
        let file = doc.file
        let sections = specs.reduce(into: [String]()) { if !$0.contains($1.section) { $0.append($1.section) } }
        var keyLines = KeyLines()
        var setOn: [String: Int] = [:]  // single-valued keys: line of the assignment in force
        // One pass in file order, so the error reported is the first one in the file.
        for (index, l) in doc.lines.enumerated() {
            let e: INIDocument.Entry
            switch l.kind {
            case .section(let name):
                guard sections.contains(name) else {
                    throw ConfigError(file: file, line: index + 1,
                                      message: "unknown section [\(name)]; allowed: "
                                          + sections.map { "[\($0)]" }.joined(separator: ", "))
                }
                continue
            case .assignment(let key, let value, _):
                guard let section = l.section else { continue }  // INIDocument rejects these already
                e = INIDocument.Entry(section: section, key: key, value: value, line: index + 1)
            case .blank, .comment:
                continue
            }
            guard let spec = specs.first(where: { $0.section == e.section && $0.key == e.key }) else {
                throw ConfigError(file: file, line: e.line, message: unknownKeyMessage(e.key, e.section, specs))
            }
            if e.value.isEmpty {
                spec.reset(&model)
                setOn[spec.key] = nil
                keyLines.lines[spec.key] = []
                continue
            }
            do throws(Reason) {
                switch spec.arity {
                case .single:
                    if let previous = setOn[spec.key] {
                        throw Reason("duplicate \(spec.key)=\(e.value): \(spec.key)= takes one value and is already set "
                                     + "on line \(previous) (an empty \(spec.key)= line resets it)")
                    }
                    try spec.apply(&model, e.value)
                    setOn[spec.key] = e.line
                    keyLines.lines[spec.key] = [e.line]
                case .list:
                    for item in KeySpec<Model>.items(e.value) {
                        try spec.apply(&model, item)
                        keyLines.lines[spec.key, default: []].append(e.line)
                    }
                }
            } catch {
                throw error.at(file, e.line)
            }
        }
        return keyLines
    }

    static func unknownKeyMessage<Model>(_ key: String, _ section: String, _ specs: [KeySpec<Model>]) -> String {
        var msg = "unknown key \(key)= in [\(section)]"
        if let elsewhere = specs.first(where: { $0.key == key }) {
            return msg + "; \(key)= belongs in [\(elsewhere.section)]"
        }
        if let near = specs.first(where: { $0.section == section && $0.key.lowercased() == key.lowercased() }) {
            return msg + "; did you mean \(near.key)= (keys are case-sensitive)?"
        }
        let allowed = specs.filter { $0.section == section }.map { "\($0.key)=" }
        msg += "; allowed: " + allowed.joined(separator: " ")
        return msg
    }
}
