import CShims
import Foundation
import LinuxNet
import Logging
import NetStack
import PhyLoop
import ZTConfig
import ZTControl

/// A joined network as the main thread sees it: its config, TAP, and the thread running its loop.
final class Network {
    var config: NetworkConfig
    let tap: TapDevice
    let inbox = Inbox<NetworkCommand>()
    var waker: PhyWaker?
    private var finished: DispatchSemaphore?
    /// Set while a loop thread exists: it decides who closes the TAP (TapCloser.swift).
    private var closer: TapCloser?
    /// How long `stop` waits for the loop thread.
    var stopTimeout: DispatchTimeInterval = .seconds(10)
    private var logger: Logger?
    let stackMAC: MACAddress

    var interfaceName: String { tap.name }

    init(config: NetworkConfig, tap: TapDevice) {
        self.config = config
        self.tap = tap
        stackMAC = Network.stackMAC(for: config.name + config.hostSalt)  // per host with [VXLAN]
    }

    /// The stack is its own host on the segment, so it needs a MAC distinct from the TAP's:
    /// derived from the name (FNV-1a, salted), locally administered, unicast.
    static func stackMAC(for name: String) -> MACAddress {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in (name + "#stack").utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return MACAddress(0x02, UInt8(truncatingIfNeeded: h >> 8), UInt8(truncatingIfNeeded: h >> 16),
                          UInt8(truncatingIfNeeded: h >> 24), UInt8(truncatingIfNeeded: h >> 32),
                          UInt8(truncatingIfNeeded: h >> 40))
    }

    static func settings(for config: NetworkConfig, mac: MACAddress) -> StackSettings {
        let v4 = config.addresses.compactMap { p -> IPv4CIDR? in
            guard let v = p.ipv4Value else { return nil }
            return IPv4CIDR(address: IPv4Address(v), prefixLength: p.prefixLength)
        }
        let v6 = config.addresses.compactMap { p -> IPv6CIDR? in
            guard p.family == .v6 else { return nil }
            return IPv6CIDR(address: IPAddress(bytes: p.bytes), prefixLength: p.prefixLength)
        }
        return StackSettings(stackMAC: mac, mtu: config.mtu, addresses: v4, addresses6: v6,
                             gateway: config.gateway.flatMap { IPv4Address($0) },
                             gateway6: config.gateway6.flatMap { IPAddress($0) },
                             services: config.services.map(\.rawValue),
                             tcpReceiveBuffer: config.tcpReceiveBuffer, tcpSendBuffer: config.tcpSendBuffer,
                             maxConnections: config.maxConnections, busyPoll: config.busyPoll)
    }

    /// [Access] resolved to numeric ids (names that do not resolve are skipped).
    static func access(for config: NetworkConfig) -> AccessList {
        var a = AccessList(users: config.allowUsers, groups: config.allowGroups)
        a.privilegedPorts = config.allowPrivilegedPorts
        return a
    }

    /// Starts the network's loop thread, with the intercept's RPC socket at RUN_DIR/NAME.sock.
    /// Throws if the loop cannot be created.
    func start(logger: Logger, runDir: String, budgets: UserBudgets = UserBudgets()) throws(ServiceError) {
        let name = config.name
        let rpcPath = runDir + "/" + name + ".sock"
        let access = Network.access(for: config)
        let device: any FrameDevice = tap
        let settings = Network.settings(for: config, mac: stackMAC)
        let inbox = self.inbox
        let started = Reply<Result<PhyWaker, ServiceError>>()
        let done = DispatchSemaphore(value: 0)
        let tap = self.tap
        let closer = TapCloser { tap.close() }
        self.closer = closer
        self.logger = logger
        let thread = Thread {
            // Everything the loop owns is created on its own thread and never leaves it.
            do {
                let driver = makeStackDriver(settings: settings, device: device, logger: logger)
                let loop = try NetworkLoop(name: name, device: device, inbox: inbox, driver: driver, logger: logger,
                                           rpcPath: rpcPath, access: access, budgets: budgets,
                                           busyPoll: settings.busyPoll)
                started.fulfill(.success(loop.waker))
                loop.run()
            } catch {
                started.fulfill(.failure(ServiceError("network \(name): cannot create event loop: \(error)")))
            }
            // Done with the TAP fd first, so a `stop` woken by `done` finds it finished.
            closer.threadFinished()
            done.signal()
        }
        thread.name = "net-\(name)"
        thread.start()
        switch started.wait(seconds: 10) {
        case .success(let w)?:
            waker = w
            finished = done
        case .failure(let e)?:
            throw e
        case nil:
            throw ServiceError("network \(name): event loop did not start")
        }
    }

    func post(_ command: NetworkCommand) {
        inbox.post(command)
        waker?.wake()
    }

    /// Stops the loop and waits for its thread; then closes the TAP (which removes the interface).
    /// A thread that does not finish in time keeps the fd and closes it itself when it does.
    func stop() {
        if let done = finished {
            post(.stop)
            _ = done.wait(timeout: .now() + stopTimeout)
            finished = nil
            waker = nil
        }
        if let closer {
            self.closer = nil
            if !closer.release() {
                logger?.error("network \(config.name): loop thread did not stop in time; its TAP \(tap.name) stays open until it does")
            }
        } else {
            tap.close()
        }
    }

    func ask<T: Sendable>(_ make: (Reply<T>) -> NetworkCommand) -> T? {
        guard waker != nil else { return nil }
        let reply = Reply<T>()
        post(make(reply))
        return reply.wait(seconds: 5)
    }
}
