import CShims
import Logging
import PhyLoop
#if canImport(Glibc)
import Glibc
#endif

/// swift-log handler writing one line per record to stderr with write(2).
///
/// On a terminal: `HH:MM:SS.mmm level [label] message key=value`. Otherwise (journald, files):
/// an sd-daemon priority prefix `<N>` that journald turns into the record's priority, no
/// timestamp (the journal adds its own) and never any colour.
public struct StderrLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let isTTY: Bool

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
        isTTY = isatty(2) == 1
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let m = event.metadata { merged.merge(m) { _, new in new } }
        let meta = merged.isEmpty ? "" : " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        var line: String
        if isTTY {
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            var t = time_t(ts.tv_sec)
            var tmv = tm()
            localtime_r(&t, &tmv)
            let ms = ts.tv_nsec / 1_000_000
            func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
            let msText = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
            line = "\(two(tmv.tm_hour)):\(two(tmv.tm_min)):\(two(tmv.tm_sec)).\(msText) \(event.level) [\(label)] \(event.message)\(meta)\n"
        } else {
            line = "<\(Self.priority(event.level))>[\(label)] \(event.message)\(meta)\n"
        }
        line.withUTF8 { buf in
            // EINTR is retried by Sys; a non-blocking stderr that is full drops the rest of the
            // line (EAGAIN) rather than spinning.
            var off = 0
            while off < buf.count {
                guard case .processed(let n)? = try? Sys.live.write(2, UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buf[off...]))),
                      n > 0 else { break }
                off += n
            }
        }
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}
