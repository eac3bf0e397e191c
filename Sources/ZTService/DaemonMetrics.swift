import CShims
import Foundation
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

/// Control requests by command and result, for `ztap_control_requests_total`. Main thread only.
final class ControlStats {
    private(set) var counts: [String: [String: UInt64]] = [:]
    func count(_ command: String, _ result: String) { counts[command, default: [:]][result, default: 0] &+= 1 }
}

extension Daemon {
    /// `ztctl metrics`: the daemon's gauges and every network's counters (networks that do not
    /// answer within the usual timeout are reported as down).
    func metrics() -> ControlResponse {
        var nets: [(name: String, metrics: NetworkMetrics?)] = networks.map { name, n in (name, n.ask { .metrics($0) }) }
        for name in failed.keys where networks[name] == nil { nets.append((name, nil)) }
        let proc = Self.processFigures()
        let d = DaemonGauges(version: ztapVersion, startTime: startTime.timeIntervalSince1970,
                             uptime: Date().timeIntervalSince(startTime), networksUp: networks.count,
                             networksFailed: failed.keys.filter { networks[$0] == nil }.count,
                             controlClients: controlPeers, controlRequests: controlStats.counts,
                             openFDs: Int(cshim_count_open_fds()), residentBytes: proc.rss, threads: proc.threads)
        var r = ControlResponse(ok: true)
        r.metrics = MetricsExport.families(daemon: d, networks: nets)
        return r
    }

    /// Resident bytes and thread count from /proc/self/status.
    static func processFigures() -> (rss: Int, threads: Int) {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
        var rss = 0, threads = 0
        for line in text.split(separator: "\n") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard parts.count >= 2 else { continue }
            if parts[0] == "VmRSS:" { rss = (Int(parts[1]) ?? 0) * 1024 }
            if parts[0] == "Threads:" { threads = Int(parts[1]) ?? 0 }
        }
        return (rss, threads)
    }
}
