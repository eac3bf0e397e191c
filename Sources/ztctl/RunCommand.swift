import ArgumentParser
import Foundation
import ZTConfig
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

extension InterceptMode: ExpressibleByArgument {}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a program with its sockets on a network (LD_PRELOAD library or seccomp supervisor).",
        discussion: """
        Sets ZTAP_RPC=RUN_DIR/NAME.sock, ZTAP_NETWORK=NAME, ZTAP_ROUTES (the network's Address= \
        subnets and Route=s), ZTAP_BROADCAST (its IPv4 subnets' broadcast addresses) and \
        ZTAP_DEFAULT_ROUTE (from DefaultRoute=), then executes COMMAND: \
        its exit status is ztctl's. Connections and datagrams to the network's destinations (and \
        binds to its addresses) go through ztapd's stack; everything else stays on the kernel.

        MODES (--mode, default auto)
          preload  libztintercept.so through LD_PRELOAD: programs linked
                   against a dynamic libc.
          seccomp  ztap-seccomp, a supervisor serving seccomp user
                   notifications: static programs (busybox), Go programs,
                   anything that makes system calls itself. No root, no
                   namespaces, no ptrace attach; ztctl stays the program's
                   parent until its last process exits.
          both     the library where it is loaded, the supervisor for every
                   other process: a dynamic program that runs static ones.
          auto     seccomp for static and Go executables, both for scripts
                   and launchers (sh, bash, env, timeout, xargs, ...),
                   preload for other dynamic executables.
        `ztctl connections` shows which mode each socket came from.

        The routes come from ztapd (list, and get Route= where [Access] admits the user); if ztapd \
        does not answer they are read from CONFIG_DIR/networks.d/NAME.conf (--config-dir, \
        $ZTAPD_CONFIG_DIR, /etc/ztapd). The library is $ZTAP_INTERCEPT, the supervisor \
        $ZTAP_SECCOMP; else both are looked up in ../lib/ztap/ next to ztctl, then in the build \
        tree's .build/intercept/ (scripts/build-intercept.sh).

        EXAMPLES
          ztctl run lab -- curl -o out.bin http://10.70.0.1:8000/big.bin
          ztctl run lab -- busybox wget -O out.bin http://10.70.0.1:8000/big.bin
          ztctl run lab -- python3 -m http.server --bind 10.70.0.2 8080
          ztctl run lab --bind-any -- iperf3 -s
          ztctl run lab --mode seccomp -- ./server
        """)
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    @Option(help: "ztapd's config directory, used when the daemon does not answer (default: $ZTAPD_CONFIG_DIR or /etc/ztapd).")
    var configDir: String?
    @Flag(help: "Also send bind(0.0.0.0) to the network (ZTAP_BIND_ANY=1).") var bindAny = false
    @Flag(help: "Log interception decisions to stderr (ZTAP_DEBUG=1).") var debug = false
    @Option(help: "auto, preload, seccomp or both (see MODES).") var mode: InterceptMode = .auto
    @Argument(help: "Network name.") var name: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments (after --).") var command: [String] = []

    func run() throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard let program = argv.first else {
            throw ValidationError("missing COMMAND: ztctl run NAME -- COMMAND [ARGS...]")
        }
        guard NetworkConfig.isValidName(name) else { throw ValidationError("invalid network name \(name)") }
        let env = ProcessInfo.processInfo.environment
        let chosen = Run.chooseMode(mode, program: program, searchPath: env["PATH"])
        let (routes, broadcasts, defaultRoute) = try networkRoutes()

        var lib: String?
        if chosen != .seccomp {
            lib = Run.helperPath(env: "ZTAP_INTERCEPT", file: "libztintercept.so")
            guard lib != nil else {
                fail("""
                    libztintercept.so not found (looked at $ZTAP_INTERCEPT if set, ../lib/ztap/ next to ztctl \
                    and the build tree's .build/intercept/). `swift build` does not build it (it is plain C without the Swift \
                    runtime): run scripts/build-intercept.sh in the source tree, or set ZTAP_INTERCEPT.
                    """)
            }
        }
        var supervisor: String?
        if chosen == .seccomp || chosen == .both {
            supervisor = Run.helperPath(env: "ZTAP_SECCOMP", file: "ztap-seccomp")
            guard supervisor != nil else {
                fail("""
                    ztap-seccomp not found (looked in ../lib/ztap/ next to ztctl and the build tree's \
                    .build/intercept/): run scripts/build-intercept.sh in the source tree, or set ZTAP_SECCOMP.
                    """)
            }
        }
        setenv("ZTAP_RPC", g.resolvedRunDir + "/" + name + ".sock", 1)
        setenv("ZTAP_NETWORK", name, 1)
        setenv("ZTAP_ROUTES", routes.joined(separator: ","), 1)
        setenv("ZTAP_BROADCAST", broadcasts.joined(separator: ","), 1)
        if defaultRoute { setenv("ZTAP_DEFAULT_ROUTE", "1", 1) } else { unsetenv("ZTAP_DEFAULT_ROUTE") }
        if bindAny { setenv("ZTAP_BIND_ANY", "1", 1) }
        if debug {
            setenv("ZTAP_DEBUG", "1", 1)
            FileHandle.standardError.write(Data("ztctl: running \(program) in \(chosen.rawValue) mode\n".utf8))
        }

        var execArgv = argv
        var execPath = program
        if let supervisor {
            // The supervisor sets LD_PRELOAD for the program itself (not for its own process).
            execArgv = [supervisor] + (chosen == .both ? ["--preload", lib!] : []) + ["--"] + argv
            execPath = supervisor
        } else if let lib {
            let preload = [lib] + (env["LD_PRELOAD"].map { [$0] } ?? [])
            setenv("LD_PRELOAD", preload.joined(separator: " "), 1)
        }
        var cargs: [UnsafeMutablePointer<CChar>?] = execArgv.map { strdup($0) }
        cargs.append(nil)
        execvp(execPath, &cargs)
        let e = errno
        FileHandle.standardError.write(Data("ztctl: cannot run \(execPath): \(String(cString: strerror(e)))\n".utf8))
        // Like a shell: 127 for a missing command, 126 for one that cannot be executed.
        throw ExitCode(e == ENOENT ? 127 : 126)
    }

    private func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("ztctl: \(message)\n".utf8))
        Foundation.exit(Exit.failed)
    }

    /// The mode for `program`: as forced, or (auto) from what the executable is.
    static func chooseMode(_ mode: InterceptMode, program: String, searchPath: String?) -> InterceptMode {
        guard mode == .auto else { return mode }
        guard let path = ProgramInspector.resolve(program, searchPath: searchPath) else { return .preload }
        let kind = ProgramInspector.kind(path: path)
        if kind == .elf32 {
            FileHandle.standardError.write(Data("ztctl: \(program) is a 32-bit program: its sockets cannot be intercepted\n".utf8))
        }
        return kind.autoMode(programName: program)
    }

    /// The network's subnets and Route=s (IPv4 and IPv6), its subnets' broadcast addresses, and
    /// DefaultRoute=: from ztapd, else from the file.
    func networkRoutes() throws -> ([String], [String], Bool) {
        let client = ControlClient(runDir: g.resolvedRunDir)
        if let listed = try? client.send(ControlRequest(command: .list, name: name)), listed.ok,
           let n = listed.networks?.first {
            let subnets = n.addresses.compactMap { IPPrefix($0) }
            var routes = subnets.map { $0.network.description }
            var defaultRoute = false
            var req = ControlRequest(command: .get, name: name)
            req.key = "Route"
            if let r = try? client.send(req), r.ok {
                for v in r.values ?? [] {
                    for part in v.value.split(whereSeparator: { $0 == " " || $0 == "," }) {
                        if let p = IPPrefix(String(part), defaultsToHost: true) { routes.append(p.description) }
                    }
                }
            }
            req.key = "DefaultRoute"
            if let r = try? client.send(req), r.ok, let v = r.values?.first?.value {
                defaultRoute = ["yes", "true", "1", "on"].contains(v.lowercased())
            }
            return (Array(NSOrderedSet(array: routes)) as? [String] ?? routes, Self.broadcasts(subnets), defaultRoute)
        }
        let dir = configDir ?? ProcessInfo.processInfo.environment["ZTAPD_CONFIG_DIR"] ?? "/etc/ztapd"
        let path = dir + "/networks.d/" + name + ".conf"
        do {
            let c = try NetworkConfig.load(path: path)
            var routes = c.addresses.map { $0.network.description }
            routes += c.routes.map(\.description)
            return (routes, Self.broadcasts(c.addresses), c.defaultRoute)
        } catch {
            FileHandle.standardError.write(Data("ztctl: network \(name): ztapd did not answer and \(path) is unreadable: \(error)\n".utf8))
            throw ExitCode(Exit.unreachable)
        }
    }

    /// The directed broadcast address of each IPv4 subnet that has one (up to /30): Linux refuses
    /// to send a datagram there without SO_BROADCAST (EACCES), and so must the library, which
    /// cannot tell the subnets from the Route=s in ZTAP_ROUTES.
    static func broadcasts(_ subnets: [IPPrefix]) -> [String] {
        var out: [String] = []
        for p in subnets where p.prefixLength <= 30 {
            guard let v = p.ipv4Value else { continue }
            let b = v | (UInt32.max >> UInt32(p.prefixLength))
            let text = "\(b >> 24).\((b >> 16) & 0xFF).\((b >> 8) & 0xFF).\(b & 0xFF)"
            if !out.contains(text) { out.append(text) }
        }
        return out
    }

    /// $ENV, else an installed copy next to ztctl (../lib/ztap/FILE), else the build tree's
    /// (.build/intercept/FILE).
    static func helperPath(env: String, file: String) -> String? {
        let fm = FileManager.default
        if let p = ProcessInfo.processInfo.environment[env], !p.isEmpty {
            // Named explicitly: used only if it is there (else the caller explains what is missing).
            return fm.isReadableFile(atPath: p) ? p : nil
        }
        let exe = URL(fileURLWithPath: CommandLine.arguments[0].contains("/")
            ? CommandLine.arguments[0] : (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        let real = (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe")).map(URL.init(fileURLWithPath:)) ?? exe
        var candidates: [String] = []
        for bin in [real.deletingLastPathComponent(), exe.deletingLastPathComponent()] {
            candidates.append(bin.appendingPathComponent("../lib/ztap/" + file).standardized.path)
            // .build/<config>/ztctl -> .build/intercept/FILE
            candidates.append(bin.appendingPathComponent("../intercept/" + file).standardized.path)
            candidates.append(bin.appendingPathComponent("../../intercept/" + file).standardized.path)
        }
        return candidates.first { fm.isReadableFile(atPath: $0) }
    }
}
