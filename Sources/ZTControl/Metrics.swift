// Metrics.swift - the `metrics` answer and its Prometheus text rendering.
//
// ztapd opens no IP sockets, so there is no scrape endpoint: ztapd answers `metrics` on the
// control socket with structured families, and `ztctl metrics` prints them in the Prometheus
// text exposition format (version 0.0.4), e.g. into node_exporter's textfile collector
// directory from a systemd timer (docs/OPERATIONS.md).

import Foundation

/// A sample's labels and value.
public struct MetricSample: Codable, Sendable, Equatable {
    public var labels: [String: String]
    public var value: Double
    public init(labels: [String: String] = [:], value: Double) {
        self.labels = labels
        self.value = value
    }
}

/// One metric: its name (counters end in `_total`), help text, type and samples.
public struct MetricFamily: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case counter, gauge }
    public var name: String
    public var help: String
    public var type: Kind
    public var samples: [MetricSample]
    public init(name: String, help: String, type: Kind, samples: [MetricSample] = []) {
        self.name = name; self.help = help; self.type = type; self.samples = samples
    }
}

/// Collects samples into families, each family once, in the order first added.
public struct MetricsBuilder: Sendable {
    public private(set) var families: [MetricFamily] = []
    private var index: [String: Int] = [:]

    public init() {}

    public mutating func add(_ name: String, _ type: MetricFamily.Kind, _ help: String, _ value: Double,
                             _ labels: [String: String] = [:]) {
        declare(name, type, help)
        families[index[name]!].samples.append(MetricSample(labels: labels, value: value))
    }

    public mutating func add(_ name: String, _ type: MetricFamily.Kind, _ help: String, _ value: some BinaryInteger,
                             _ labels: [String: String] = [:]) {
        add(name, type, help, Double(value), labels)
    }

    /// A family that may end up with no samples (still printed with HELP and TYPE).
    public mutating func declare(_ name: String, _ type: MetricFamily.Kind, _ help: String) {
        if index[name] == nil {
            index[name] = families.count
            families.append(MetricFamily(name: name, help: help, type: type))
        }
    }
}

public enum PrometheusText {
    /// The text exposition format: `# HELP`, `# TYPE`, then one line per sample, labels sorted.
    public static func render(_ families: [MetricFamily]) -> String {
        var out = ""
        for f in families {
            out += "# HELP \(f.name) \(escapeHelp(f.help))\n"
            out += "# TYPE \(f.name) \(f.type.rawValue)\n"
            for s in f.samples {
                out += f.name
                if !s.labels.isEmpty {
                    out += "{" + s.labels.sorted { $0.key < $1.key }
                        .map { "\($0.key)=\"\(escapeLabel($0.value))\"" }.joined(separator: ",") + "}"
                }
                out += " " + format(s.value) + "\n"
            }
        }
        return out
    }

    /// Integers as integers (exact up to 2^53), the rest as Go's ParseFloat reads them.
    public static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 9_007_199_254_740_992 { return String(Int64(v)) }
        return "\(v)"
    }

    static func escapeHelp(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func escapeLabel(_ s: String) -> String {
        escapeHelp(s).replacingOccurrences(of: "\"", with: "\\\"")
    }

    /// Metric and label names must match [a-zA-Z_:][a-zA-Z0-9_:]* (labels: no colon).
    public static func isValidName(_ s: String, label: Bool = false) -> Bool {
        guard let first = s.unicodeScalars.first else { return false }
        func ok(_ c: Unicode.Scalar, first: Bool) -> Bool {
            (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_" || (!label && c == ":")
                || (!first && c >= "0" && c <= "9")
        }
        return ok(first, first: true) && s.unicodeScalars.dropFirst().allSatisfy { ok($0, first: false) }
    }
}
