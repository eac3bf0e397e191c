import ArgumentParser
import Foundation
import ZTConfig
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

// ztctl — control ztapd over RUN_DIR/control.sock.

enum Exit {
    static let failed: Int32 = 1        // ztapd refused or the operation failed
    static let unreachable: Int32 = 3   // no daemon at the control socket
    static let denied: Int32 = 4        // ztapd refused this user
}

struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "ztapd's run directory (default: $ZTAPD_RUN_DIR or /run/ztapd).")
    var runDir: String?

    @Flag(name: [.short, .long], help: "Print the daemon's answer as JSON.")
    var json = false

    /// Global options may stand before or after the subcommand (`ztctl -j list`, `ztctl list -j`).
    func merged(_ o: GlobalOptions) -> GlobalOptions {
        var m = self
        m.json = json || o.json
        m.runDir = o.runDir ?? runDir
        return m
    }

    var resolvedRunDir: String {
        runDir ?? ProcessInfo.processInfo.environment["ZTAPD_RUN_DIR"] ?? "/run/ztapd"
    }
}

/// Sends one request and prints the answer; exits non-zero with the reason on failure.
func perform(_ request: ControlRequest, _ g: GlobalOptions, render: (ControlResponse) -> String) throws {
    let client = ControlClient(runDir: g.resolvedRunDir)
    let response: ControlResponse
    do {
        response = try client.send(request)
    } catch {
        FileHandle.standardError.write(Data("ztctl: \(error)\n".utf8))
        throw ExitCode(Exit.unreachable)
    }
    if g.json {
        FileHandle.standardOutput.write(Data(ControlCodec.encodeLine(response)))
    } else if response.ok {
        let text = render(response)
        if !text.isEmpty { print(text) }
    }
    if !response.ok {
        if !g.json { FileHandle.standardError.write(Data("ztctl: \(response.error ?? "failed")\n".utf8)) }
        throw ExitCode(response.errno == 13 ? Exit.denied : Exit.failed)
    }
}

/// Aligned columns, like `ip -br`: widths from the widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

@main
struct ZTCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ztctl",
        abstract: "Control ztapd: join and leave networks, inspect and edit their configuration.",
        discussion: """
        Every command talks to ztapd over RUN_DIR/control.sock (--run-dir or $ZTAPD_RUN_DIR, \
        default /run/ztapd). The global options -j/--json (print the daemon's answer as JSON) \
        and --run-dir may stand before or after the command: `ztctl -j list` = `ztctl list -j`.

        EXIT STATUS
          0   success
          1   ztapd refused the request or it failed (the reason is printed)
          3   ztapd is not reachable (not running, or another --run-dir)
          4   permission denied: this user may not control ztapd
          64  usage error (unknown command or option)
        """,
        version: "0.1.0",
        subcommands: [Status.self, List.self, Join.self, Leave.self, Get.self, Set.self, Reload.self, Connections.self,
                      Run.self, Capture.self, Metrics.self])

    @OptionGroup var global: GlobalOptions
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the daemon's state.")
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    func run() throws {
        try perform(ControlRequest(command: .status), g) { r in
            guard let s = r.status else { return "" }
            return table(["KEY", "VALUE"], [
                ["version", s.version], ["pid", "\(s.pid)"], ["uptime", String(format: "%.0fs", s.uptimeSeconds)],
                ["networks", "\(s.networksUp) up / \(s.networks) configured"], ["config", s.configDir],
                ["run", s.runDir], ["user", s.user], ["capabilities", s.capabilities],
            ])
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List networks with their interface, addresses and state.")
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    func run() throws {
        try perform(ControlRequest(command: .list), g) { r in
            let rows = (r.networks ?? []).map { n in
                [n.name, n.state.rawValue, n.interface, "\(n.mtu)", n.mac,
                 (n.stackAddresses ?? n.addresses).joined(separator: ","), n.kernelAddresses.joined(separator: ","),
                 n.error ?? (n.services.isEmpty ? "" : "services: " + n.services.joined(separator: " "))]
            }
            return table(["NAME", "STATE", "INTERFACE", "MTU", "MAC", "ADDRESSES", "KERNEL", "NOTE"], rows)
        }
    }
}

struct Join: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join a network: write networks.d/NAME.conf if missing, then bring it up.",
        discussion: "Options are used only when the file does not exist yet; edit an existing network with `set`.")
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    @Argument(help: "Network name: [a-z0-9][a-z0-9-]{0,31}.") var name: String
    @Option(name: .customLong("address"), help: "The stack's own address (CIDR), repeatable.") var addresses: [String] = []
    @Option(name: .customLong("kernel-address"), help: "Address of the kernel side of the TAP (CIDR, IPv4 or IPv6), repeatable.")
    var kernelAddresses: [String] = []
    @Option(help: "MTU, 1280-65521 (default 2800).") var mtu: Int?
    @Option(help: "MAC address of the TAP interface.") var mac: String?
    @Option(help: "Interface name (at most 15 characters).") var interface: String?
    @Option(help: "Existing Linux bridge to enslave the TAP into.") var bridge: String?
    @Option(help: "Span hosts over the kernel's VXLAN with this VNI (0-16777215): writes [VXLAN] (docs/MULTIHOST.md).")
    var vxlan: Int?
    @Option(help: "With --vxlan: this host's underlay address.") var local: String?
    @Option(name: .customLong("remote"), parsing: .upToNextOption,
            help: "With --vxlan: underlay address of every other host (one or more, repeatable).")
    var remotes: [String] = []
    @Option(name: .customLong("vxlan-port"), help: "With --vxlan: UDP destination port (default 4789).") var vxlanPort: Int?
    @Option(name: .customLong("underlay-device"), help: "With --vxlan: underlay device, like eth0 or wg0 (Device=).")
    var underlayDevice: String?
    func run() throws {
        var req = ControlRequest(command: .join, name: name)
        var o = JoinOptions()
        o.addresses = addresses; o.kernelAddresses = kernelAddresses; o.mtu = mtu; o.mac = mac
        o.interface = interface; o.bridge = bridge
        if vxlan != nil || local != nil || !remotes.isEmpty || vxlanPort != nil || underlayDevice != nil {
            guard vxlan != nil, local != nil else {
                throw ValidationError("--local, --remote, --vxlan-port and --underlay-device need --vxlan VNI and --local IP")
            }
            var v = VXLANJoinOptions()
            v.vni = vxlan; v.local = local; v.remotes = remotes; v.destinationPort = vxlanPort; v.device = underlayDevice
            o.vxlan = v
        }
        req.join = o
        try perform(req, g) { r in
            guard let n = r.networks?.first else { return "joined \(name)" }
            return "joined \(n.name): interface \(n.interface), MTU \(n.mtu), MAC \(n.mac)"
        }
    }
}

struct Leave: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Leave a network: remove its interface and its config file.")
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    @Argument(help: "Network name.") var name: String
    func run() throws { try perform(ControlRequest(command: .leave, name: name), g) { $0.message ?? "" } }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a network's configuration, or one key (e.g. MTU or Network.MTU).")
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    @Argument(help: "Network name.") var name: String
    @Argument(help: "Key to show.") var key: String?
    func run() throws {
        var req = ControlRequest(command: .get, name: name)
        req.key = key
        try perform(req, g) { r in
            let v = r.values ?? []
            if key != nil { return v.map(\.value).joined(separator: "\n") }
            return table(["KEY", "VALUE"], v.map { [$0.key, $0.value] })
        }
    }
}

struct Set: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Edit keys of a network's file in place (comments kept) and apply them live.",
        discussion: "MTU, addresses and VXLAN Remote= apply live; interface, MAC, bridge and the other [VXLAN] keys restart the network. An unknown key or invalid value changes nothing.")
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    @Argument(help: "Network name.") var name: String
    @Argument(help: "KEY=VALUE assignments.") var assignments: [String]
    func run() throws {
        var req = ControlRequest(command: .set, name: name)
        req.assignments = assignments
        try perform(req, g) { r in table(["KEY", "VALUE"], (r.values ?? []).map { [$0.key, $0.value] }) }
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Re-read ztapd.conf and networks.d (like SIGHUP); a broken file keeps its running config.")
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    func run() throws { try perform(ControlRequest(command: .reload), g) { $0.message ?? "" } }
}

