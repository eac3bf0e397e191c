import ArgumentParser
import Foundation
import ZTControl

// ztctl connections and ztctl metrics: what runs on the networks, for people and for scrapers.

struct Connections: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the connections of all networks, or of one, with TCP internals like `ss -ti`.",
        discussion: """
        Columns: MODE says how the owning program was intercepted (preload: libztintercept.so; \
        seccomp: ztctl run's supervisor); RECV-Q and SEND-Q are the bytes in the stack's receive buffer (not yet read) and \
        send buffer (not yet acknowledged); RTT is the smoothed round-trip time in ms; CWND the \
        congestion window in bytes; RETRANS the segments retransmitted so far. A listener's RECV-Q \
        is its accept queue. -i adds a line per TCP connection with every figure the stack has: \
        rtt/rttvar, rto, cwnd, ssthresh, bytes in flight, peer window, mss, options. --json has \
        the same fields (times in microseconds: rttMicros, rtoMicros; sizes in bytes).

        Users who may not control ztapd see only their own sockets, on networks whose [Access] admits them.
        """)
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    @Flag(name: [.short, .customLong("info")], help: "Show a line of TCP internals under each TCP connection.")
    var info = false
    @Argument(help: "Network name.") var name: String?

    func run() throws {
        let detail = info
        try perform(ControlRequest(command: .connections, name: name), g) { r in
            Connections.render(r.connections ?? [], detail: detail)
        }
    }

    static func render(_ list: [ConnectionInfo], detail: Bool) -> String {
        var rows: [[String]] = []
        var details: [Int: String] = [:]
        for c in list {
            rows.append([c.network, c.proto, c.local, c.remote, c.state, c.pid.map(String.init) ?? "-",
                         c.uid.map(String.init) ?? "-", c.mode ?? "-", c.receiveQueue.map(String.init) ?? "-",
                         c.sendQueue.map(String.init) ?? "-", c.rttMicros.map(ms) ?? "-", c.cwnd.map(String.init) ?? "-",
                         c.retransmits.map(String.init) ?? "-", "\(c.bytesIn)", "\(c.bytesOut)"])
            if detail, c.proto == "tcp", c.rtoMicros != nil { details[rows.count - 1] = "    " + internals(c) }
        }
        let header = ["NETWORK", "PROTO", "LOCAL", "REMOTE", "STATE", "PID", "UID", "MODE", "RECV-Q", "SEND-Q", "RTT", "CWND",
                      "RETRANS", "BYTES-IN", "BYTES-OUT"]
        let lines = table(header, rows).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var out: [String] = [lines[0]]
        for (i, l) in lines.dropFirst().enumerated() {
            out.append(l)
            if let d = details[i] { out.append(d) }
        }
        return out.joined(separator: "\n")
    }

    /// `ss -ti`-style: rtt:SRTT/RTTVAR ms, sizes in bytes, "-" for what is unknown.
    static func internals(_ c: ConnectionInfo) -> String {
        var f: [String] = []
        f.append("rtt:" + (c.rttMicros.map(ms) ?? "-") + "/" + (c.rttvarMicros.map(ms) ?? "-"))
        f.append("rto:" + (c.rtoMicros.map(ms) ?? "-"))
        f.append("cwnd:" + (c.cwnd.map(String.init) ?? "-"))
        f.append("ssthresh:" + (c.ssthresh.map(String.init) ?? "-"))
        f.append("retrans:" + (c.retransmits.map(String.init) ?? "-"))
        f.append("inflight:" + (c.bytesInFlight.map(String.init) ?? "-"))
        f.append("wnd:" + (c.peerWindow.map(String.init) ?? "-"))
        f.append("mss:" + (c.mss.map(String.init) ?? "-"))
        if let cc = c.congestionControl { f.append(cc) }
        if let o = c.options, !o.isEmpty { f.append(o.joined(separator: ",")) }
        return f.joined(separator: " ")
    }

    /// Microseconds as milliseconds with three decimals.
    static func ms(_ us: UInt64) -> String { String(format: "%.3f", Double(us) / 1000) }
}

struct Metrics: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print counters and gauges of ztapd and every network in the Prometheus text format.",
        discussion: """
        ztapd opens no IP sockets, so nothing listens for a scraper: write this output where one \
        reads it, e.g. node_exporter's textfile collector from a systemd timer (docs/OPERATIONS.md):

          ztctl metrics > /var/lib/node_exporter/textfile/ztap.prom.tmp && \\
            mv /var/lib/node_exporter/textfile/ztap.prom.tmp /var/lib/node_exporter/textfile/ztap.prom

        Every per-network series has a network="NAME" label. --json prints the same families as JSON.
        """)
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }

    func run() throws {
        try perform(ControlRequest(command: .metrics), g) { r in
            var text = PrometheusText.render(r.metrics ?? [])
            if text.hasSuffix("\n") { text.removeLast() }
            return text
        }
    }
}
