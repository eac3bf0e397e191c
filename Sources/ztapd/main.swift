import ArgumentParser
import CSandbox
import Logging
import ZTService

@main
struct ZTapd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ztapd",
        abstract: "The ztap daemon: per-network TAP devices bridged to a userspace TCP/IP stack.",
        discussion: """
        Runs in the foreground and logs to stderr (journald-friendly when not a terminal). \
        Joins every network that has a file in CONFIG_DIR/networks.d and serves ztctl on \
        RUN_DIR/control.sock. SIGTERM/SIGINT stop it cleanly (interfaces and sockets removed); \
        SIGHUP reloads the configuration. Under systemd (Type=notify) it reports READY=1.

        Exit status: 0 after a clean stop, 1 when it cannot start. See ztapd(8), ztapd.conf(5).
        """,
        version: ztapVersion)

    @Option(name: .long, help: "Directory holding ztapd.conf and networks.d/.")
    var configDir = "/etc/ztapd"

    @Option(name: .long, help: "Directory for control.sock and the per-network RPC sockets.")
    var runDir = "/run/ztapd"

    @Flag(name: .long, help: "Install the system-call filter, show that it works, then trip it on purpose: ztapd ends with status 159 and the line the journal would show.")
    var checkSandbox = false

    mutating func run() throws {
        if checkSandbox {
            let r = zt_sandbox_selftest()
            throw ExitCode(r == 0 ? 1 : -r)
        }
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: .info) }
        let logger = Logger(label: "ztapd")
        let daemon = Daemon(options: DaemonOptions(configDir: configDir, runDir: runDir), logger: logger)
        let status = daemon.run()
        if status != 0 { throw ExitCode(status) }
    }
}
