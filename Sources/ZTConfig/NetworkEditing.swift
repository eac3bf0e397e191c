/// The settable keys of a network file, for `ztctl get/set`.
public enum NetworkKeys {
    /// Resolves `MTU`, `Network.MTU`, `network.mtu` ... to the canonical (section, key).
    public static func resolve(_ key: String) throws(ConfigError) -> (section: String, key: String) {
        let spec = try spec(for: key)
        return (spec.section, spec.key)
    }

    /// Every key as (section, key, one-line help), in file order.
    public static var all: [(section: String, key: String, help: String)] {
        NetworkConfig.specs.map { ($0.section, $0.key, $0.help) }
    }

    static func spec(for key: String, file: String = "") throws(ConfigError) -> KeySpec<NetworkConfig> {
        let wanted = key.trimmingBlanks.lowercased()
        let parts = wanted.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let match = NetworkConfig.specs.first { spec in
            parts.count == 2
                ? spec.section.lowercased() == parts[0] && spec.key.lowercased() == parts[1]
                : spec.key.lowercased() == wanted
        }
        guard let match else {
            throw ConfigError(file: file, message: "unknown key \"\(key)\"; valid keys: "
                                  + NetworkConfig.specs.map(\.canonicalName).joined(separator: ", "))
        }
        return match
    }
}

/// `ztctl set/get` on a network file.
///
/// `apply` changes keys in place (comments, blank lines, order and the spelling of untouched
/// lines stay byte-for-byte), validates every value and then the whole re-parsed result, and
/// writes atomically (temporary file with the same mode and owner, fsync, rename) while holding
/// an flock on the directory. On any error the file is left exactly as it was.
///
/// Assignment semantics (the same as repeating the key in the file):
/// - `KEY=` (empty) removes the key, so it falls back to its default.
/// - a list key takes whitespace-separated items, `Address=10.0.0.2/24 10.0.1.2/24`, written
///   back as one line per item; the given items replace all old ones. Repeating a list key in
///   one call adds to the list (`Address=a Address=b`); an empty one in between resets it.
/// - a single-valued key may appear once per call (after an optional reset).
/// - values are written back in canonical form (`MACAddress=02:AB:...` as lowercase, `4194304`
///   as `4M`, `true` as `yes`).
public enum NetworkConfigEditor {
    public static func apply(path: String, assignments: [(key: String, value: String)])
        throws(ConfigError) -> (old: NetworkConfig, new: NetworkConfig)
    {
        let name = try NetworkConfig.nameFromPath(path)
        // Validate the assignments before touching (or even reading) the file.
        var changes: [(spec: KeySpec<NetworkConfig>, scratch: NetworkConfig, set: Bool)] = []
        for a in assignments {
            let spec = try NetworkKeys.spec(for: a.key, file: path)
            if a.value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                throw ConfigError(file: path, message: "invalid \(spec.key)=: the value contains control characters or line breaks")
            }
            let value = a.value.trimmingBlanks
            let index: Int
            if let i = changes.firstIndex(where: { $0.spec.key == spec.key }) {
                index = i
            } else {
                changes.append((spec, NetworkConfig(name: name), false))
                index = changes.count - 1
            }
            if value.isEmpty {
                spec.reset(&changes[index].scratch)
                changes[index].set = false
                continue
            }
            do throws(Reason) {
                switch spec.arity {
                case .single:
                    if changes[index].set {
                        throw Reason("\(spec.canonicalName) is given twice; it takes one value")
                    }
                    try spec.apply(&changes[index].scratch, value)
                case .list:
                    for item in KeySpec<NetworkConfig>.items(value) { try spec.apply(&changes[index].scratch, item) }
                }
                changes[index].set = true
            } catch {
                throw error.at(path, nil)
            }
        }
        return try FileIO.withDirectoryLock(path: path) { () throws(ConfigError) in
            guard let text = try FileIO.readText(path: path) else {
                throw ConfigError(file: path, message: "cannot open")
            }
            var doc = try INIDocument(text: text, file: path)
            let old = try NetworkConfig.parse(doc, name: name)
            for c in changes {
                doc.set(section: c.spec.section, key: c.spec.key, values: c.set ? c.spec.render(c.scratch) : [])
            }
            let newText = doc.render()
            let new: NetworkConfig
            do throws(ConfigError) {
                new = try NetworkConfig.parse(INIDocument(text: newText, file: path), name: name)
            } catch {
                // Line numbers would point into text that was never written.
                throw ConfigError(file: path, message: "change rejected: \(error.message)")
            }
            if newText != text {
                try FileIO.writeAtomically(path: path, text: newText)
            }
            return (old, new)
        }
    }

    /// Current values as canonical `Section.Key` names: one key, or every key when `key` is nil.
    /// List values are joined with single spaces (ready to pass back to `set`); an unset
    /// optional key has an empty value; defaults are shown as their value (MTU 2800).
    public static func get(path: String, key: String?) throws(ConfigError) -> [(key: String, value: String)] {
        let config = try NetworkConfig.load(path: path)
        let specs = try key.map { k throws(ConfigError) in [try NetworkKeys.spec(for: k, file: path)] } ?? NetworkConfig.specs
        return specs.map { ($0.canonicalName, $0.render(config).joined(separator: " ")) }
    }

    /// Writes `config.renderNewFile()` to `directory/NAME.conf` atomically (mode 0644), failing if
    /// the file exists. Returns the path. For `ztctl join`.
    @discardableResult
    public static func create(directory: String, config: NetworkConfig) throws(ConfigError) -> String {
        let path = directory + "/" + config.name + ".conf"
        guard NetworkConfig.isValidName(config.name) else {
            throw ConfigError(file: path, message: NetworkConfig.nameReason(config.name))
        }
        let text = config.renderNewFile()
        // Never write a file that would not load back.
        _ = try NetworkConfig.parse(text: text, name: config.name, file: path)
        try FileIO.writeAtomically(path: path, text: text, mode: 0o644, exclusive: true)
        return path
    }
}

/// All networks of a `networks.d` directory.
public enum NetworkDirectory {
    /// Loads every `*.conf` (sorted by name; hidden files and non-regular files skipped). Each
    /// bad file gives one error and never hides the others. A second network resolving to an
    /// interface name already used by an earlier file (its TAP, or with [VXLAN] its bridge and
    /// VXLAN device), or to the same VXLAN segment (VNI, port, address family), is an error for the
    /// later file. A missing directory means no networks.
    public static func load(directory: String) -> (networks: [NetworkConfig], errors: [ConfigError]) {
        var networks: [NetworkConfig] = []
        var errors: [ConfigError] = []
        var interfaces: [String: String] = [:]  // interface -> file that claimed it
        var segments: [String: String] = [:]    // "VNI port family" -> file that claimed it
        let names: [String]
        do {
            guard let list = try FileIO.listDirectory(directory) else { return ([], []) }
            names = list
        } catch {
            return ([], [error])
        }
        for file in names where file.hasSuffix(".conf") && !file.hasPrefix(".") {
            let path = directory + "/" + file
            guard FileIO.isRegularFile(path) else { continue }
            do {
                let config = try NetworkConfig.load(path: path)
                if let (name, other) = config.claimedInterfaces.lazy.compactMap({ n in interfaces[n].map { (n, $0) } }).first {
                    errors.append(ConfigError(file: path, message: "interface \(name) is already used by \(other)"))
                    continue
                }
                if let v = config.vxlan {
                    // The kernel allows one VXLAN device per VNI, port and address family.
                    let key = "\(v.vni) \(v.destinationPort) \(v.local.family)"
                    if let other = segments[key] {
                        errors.append(ConfigError(file: path, message: "VNI=\(v.vni) on port \(v.destinationPort) is already "
                                                      + "used by \(other) (one VXLAN device per VNI and port)"))
                        continue
                    }
                    segments[key] = path
                }
                for n in config.claimedInterfaces { interfaces[n] = path }
                networks.append(config)
            } catch {
                errors.append(error)
            }
        }
        return (networks, errors)
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and carriage returns.
    var trimmingBlanks: String { String(INIDocument.trim(Substring(self))) }
}
