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
        Every command talks to ztapd over RUN_DIR/control.sock (--run-dir or $ZTAPD_RUN_DIR,
        default /run/ztapd) and accepts -j/--json to print the raw answer.

        EXIT STATUS
          0   success
          1   ztapd refused the request or it failed (the reason is printed)
          3   ztapd is not reachable (not running, or another --run-dir)
          4   permission denied: this user may not control ztapd
          64  usage error (unknown command or option)
        """,
        version: "0.1.0",
        subcommands: [Status.self, List.self, Join.self, Leave.self, Get.self, Set.self, Reload.self, Connections.self,
                      Run.self])
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the daemon's state.")
    @OptionGroup var g: GlobalOptions
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
    @OptionGroup var g: GlobalOptions
    func run() throws {
        try perform(ControlRequest(command: .list), g) { r in
            let rows = (r.networks ?? []).map { n in
                [n.name, n.state.rawValue, n.interface, "\(n.mtu)", n.mac,
                 n.addresses.joined(separator: ","), n.kernelAddresses.joined(separator: ","),
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
    @OptionGroup var g: GlobalOptions
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
    @OptionGroup var g: GlobalOptions
    @Argument(help: "Network name.") var name: String
    func run() throws { try perform(ControlRequest(command: .leave, name: name), g) { $0.message ?? "" } }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a network's configuration, or one key (e.g. MTU or Network.MTU).")
    @OptionGroup var g: GlobalOptions
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
    @OptionGroup var g: GlobalOptions
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
    @OptionGroup var g: GlobalOptions
    func run() throws { try perform(ControlRequest(command: .reload), g) { $0.message ?? "" } }
}

struct Connections: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the connections of all networks, or of one.")
    @OptionGroup var g: GlobalOptions
    @Argument(help: "Network name.") var name: String?
    func run() throws {
        try perform(ControlRequest(command: .connections, name: name), g) { r in
            let rows = (r.connections ?? []).map { c in
                [c.network, c.proto, c.local, c.remote, c.state, c.pid.map(String.init) ?? "-",
                 c.uid.map(String.init) ?? "-", "\(c.bytesIn)", "\(c.bytesOut)"]
            }
            return table(["NETWORK", "PROTO", "LOCAL", "REMOTE", "STATE", "PID", "UID", "BYTES-IN", "BYTES-OUT"], rows)
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a program with its sockets on a network (the intercept library, LD_PRELOAD).",
        discussion: """
        Sets LD_PRELOAD to libztintercept.so, ZTAP_RPC=RUN_DIR/NAME.sock, ZTAP_NETWORK=NAME, \
        ZTAP_ROUTES (the network's Address= subnets and Route=s) and ZTAP_DEFAULT_ROUTE (from \
        DefaultRoute=), then executes COMMAND: its exit status is ztctl's. Connections and \
        datagrams to the network's destinations (and binds to its addresses) go through ztapd's \
        stack; everything else stays on the kernel.

        The routes come from ztapd (list, and get Route= where [Access] admits the user); if ztapd does not answer they are read \
        from CONFIG_DIR/networks.d/NAME.conf (--config-dir, $ZTAPD_CONFIG_DIR, /etc/ztapd). The \
        library is $ZTAP_INTERCEPT, else ../lib/ztap/libztintercept.so next to ztctl, else the \
        build tree's .build/intercept/libztintercept.so (scripts/build-intercept.sh).

        EXAMPLES
          ztctl run lab -- curl -o out.bin http://10.70.0.1:8000/big.bin
          ztctl run lab -- python3 -m http.server --bind 10.70.0.2 8080
          ztctl run lab --bind-any -- iperf3 -s
        """)
    @OptionGroup var g: GlobalOptions
    @Option(help: "ztapd's config directory, used when the daemon does not answer (default: $ZTAPD_CONFIG_DIR or /etc/ztapd).")
    var configDir: String?
    @Flag(help: "Also send bind(0.0.0.0) to the network (ZTAP_BIND_ANY=1).") var bindAny = false
    @Flag(help: "Log interception decisions to stderr (ZTAP_DEBUG=1).") var debug = false
    @Argument(help: "Network name.") var name: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments (after --).") var command: [String] = []

    func run() throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard let program = argv.first else {
            throw ValidationError("missing COMMAND: ztctl run NAME -- COMMAND [ARGS...]")
        }
        guard NetworkConfig.isValidName(name) else { throw ValidationError("invalid network name \(name)") }
        let (routes, defaultRoute) = try networkRoutes()
        guard let lib = Run.libraryPath() else {
            FileHandle.standardError.write(Data("ztctl: libztintercept.so not found (set ZTAP_INTERCEPT or run scripts/build-intercept.sh)\n".utf8))
            throw ExitCode(Exit.failed)
        }
        let env = ProcessInfo.processInfo.environment
        let preload = [lib] + (env["LD_PRELOAD"].map { [$0] } ?? [])
        setenv("LD_PRELOAD", preload.joined(separator: " "), 1)
        setenv("ZTAP_RPC", g.resolvedRunDir + "/" + name + ".sock", 1)
        setenv("ZTAP_NETWORK", name, 1)
        setenv("ZTAP_ROUTES", routes.joined(separator: ","), 1)
        if defaultRoute { setenv("ZTAP_DEFAULT_ROUTE", "1", 1) } else { unsetenv("ZTAP_DEFAULT_ROUTE") }
        if bindAny { setenv("ZTAP_BIND_ANY", "1", 1) }
        if debug { setenv("ZTAP_DEBUG", "1", 1) }
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cargs.append(nil)
        execvp(program, &cargs)
        let e = errno
        FileHandle.standardError.write(Data("ztctl: cannot run \(program): \(String(cString: strerror(e)))\n".utf8))
        // Like a shell: 127 for a missing command, 126 for one that cannot be executed.
        throw ExitCode(e == ENOENT ? 127 : 126)
    }

    /// The network's IPv4 subnets and Route=s, and DefaultRoute=: from ztapd, else from the file.
    func networkRoutes() throws -> ([String], Bool) {
        let client = ControlClient(runDir: g.resolvedRunDir)
        if let listed = try? client.send(ControlRequest(command: .list, name: name)), listed.ok,
           let n = listed.networks?.first {
            var routes = n.addresses.compactMap { IPPrefix($0) }.filter { $0.ipv4Value != nil }.map { $0.network.description }
            var defaultRoute = false
            var req = ControlRequest(command: .get, name: name)
            req.key = "Route"
            if let r = try? client.send(req), r.ok {
                for v in r.values ?? [] {
                    for part in v.value.split(whereSeparator: { $0 == " " || $0 == "," }) {
                        if let p = IPPrefix(String(part), defaultsToHost: true), p.ipv4Value != nil { routes.append(p.description) }
                    }
                }
            }
            req.key = "DefaultRoute"
            if let r = try? client.send(req), r.ok, let v = r.values?.first?.value {
                defaultRoute = ["yes", "true", "1", "on"].contains(v.lowercased())
            }
            return (Array(NSOrderedSet(array: routes)) as? [String] ?? routes, defaultRoute)
        }
        let dir = configDir ?? ProcessInfo.processInfo.environment["ZTAPD_CONFIG_DIR"] ?? "/etc/ztapd"
        let path = dir + "/networks.d/" + name + ".conf"
        do {
            let c = try NetworkConfig.load(path: path)
            var routes = c.addresses.filter { $0.ipv4Value != nil }.map { $0.network.description }
            routes += c.routes.filter { $0.ipv4Value != nil }.map(\.description)
            return (routes, c.defaultRoute)
        } catch {
            FileHandle.standardError.write(Data("ztctl: network \(name): ztapd did not answer and \(path) is unreadable: \(error)\n".utf8))
            throw ExitCode(Exit.unreachable)
        }
    }

    /// $ZTAP_INTERCEPT, else an installed copy next to ztctl, else the build tree's.
    static func libraryPath() -> String? {
        let fm = FileManager.default
        if let p = ProcessInfo.processInfo.environment["ZTAP_INTERCEPT"], !p.isEmpty { return p }
        let exe = URL(fileURLWithPath: CommandLine.arguments[0].contains("/")
            ? CommandLine.arguments[0] : (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        let real = (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe")).map(URL.init(fileURLWithPath:)) ?? exe
        var candidates: [String] = []
        for bin in [real.deletingLastPathComponent(), exe.deletingLastPathComponent()] {
            candidates.append(bin.appendingPathComponent("../lib/ztap/libztintercept.so").standardized.path)
            // .build/<config>/ztctl -> .build/intercept/libztintercept.so
            candidates.append(bin.appendingPathComponent("../intercept/libztintercept.so").standardized.path)
            candidates.append(bin.appendingPathComponent("../../intercept/libztintercept.so").standardized.path)
        }
        return candidates.first { fm.isReadableFile(atPath: $0) }
    }
}
