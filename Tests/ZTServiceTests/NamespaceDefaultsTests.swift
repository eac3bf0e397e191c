import Foundation
import Logging
import NetStack
import Testing
@testable import ZTService

/// A file standing in for one of /proc/sys's (the caller removes it).
private func sysctlFile(_ text: String) throws -> String {
    let path = NSTemporaryDirectory() + "ztap-sysctl-\(UUID().uuidString)"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// ztapd's stacks take the ephemeral range of its network namespace, as the kernel's sockets do.
@Suite struct EphemeralRangeTests {

    @Test func readFromProcFormat() throws {
        let p = try sysctlFile("40000\t40999\n")
        defer { try? FileManager.default.removeItem(atPath: p) }
        #expect(NetStackDriver.systemEphemeralPorts(path: p) == 40000...40999)
    }

    @Test func unreadableOrMalformedFallsBackToTheDefault() throws {
        #expect(NetStackDriver.systemEphemeralPorts(path: "/nonexistent/ip_local_port_range") == nil)
        let p = try sysctlFile("60999 32768\n")
        defer { try? FileManager.default.removeItem(atPath: p) }
        #expect(NetStackDriver.systemEphemeralPorts(path: p) == nil)
    }

    @Test func thisNamespacesRangeIsReadable() {
        // Linux always has the file; its range is what a fresh stack uses.
        let r = NetStackDriver.systemEphemeralPorts()
        #expect(r != nil)
        #expect(r.map { $0.lowerBound > 0 && $0.lowerBound <= $0.upperBound } ?? false)
    }
}

/// ztapd's stacks take the default congestion control of its network namespace
/// (net.ipv4.tcp_congestion_control) when the stack has it, as the kernel's sockets there do.
/// Tests/diff's opt_tcp_congestion checks the whole path against Linux with the sysctl at reno.
@Suite struct CongestionDefaultTests {
    @Test func theStacksAlgorithmsAreTaken() throws {
        for (text, want) in [("cubic\n", CongestionControl.cubic), ("reno\n", .newReno), ("reno", .newReno)] {
            let p = try sysctlFile(text)
            defer { try? FileManager.default.removeItem(atPath: p) }
            #expect(NetStackDriver.systemCongestionControl(path: p) == .stack(want))
        }
    }

    @Test func othersAreNamedAndKeepCubic() throws {
        let p = try sysctlFile("bbr\n")
        defer { try? FileManager.default.removeItem(atPath: p) }
        #expect(NetStackDriver.systemCongestionControl(path: p) == .unsupported("bbr"))
        #expect(NetStackDriver.systemCongestionControl(path: "/nonexistent/tcp_congestion_control") == .unreadable)
        let e = try sysctlFile("\n")
        defer { try? FileManager.default.removeItem(atPath: e) }
        #expect(NetStackDriver.systemCongestionControl(path: e) == .unreadable)
    }

    @Test func aStackTakesTheDefaultItHas() {
        let settings = StackSettings(stackMAC: MACAddress(0x02, 0, 0, 0, 0, 2), mtu: 1500,
                                     addresses: [IPv4CIDR(address: IPv4Address(10, 0, 0, 2), prefixLength: 24)],
                                     gateway: nil, services: [], tcpReceiveBuffer: 256 << 10,
                                     tcpSendBuffer: 256 << 10, maxConnections: 16)
        let cases: [(NetStackDriver.SystemCongestion, CongestionControl)] = [
            (.stack(.newReno), .newReno), (.stack(.cubic), .cubic), (.unsupported("bbr"), .cubic), (.unreadable, .cubic),
        ]
        for (system, want) in cases {
            var random = XorShiftRandom(seed: 7)
            // Nothing is sent: the device is never written to.
            let stack = NetStackDriver.makeStack(settings, sink: TapSink(device: PairDevice(fd: -1, offloads: [])),
                                                 random: &random, congestion: system)
            #expect(stack.tcp.config.congestionControl == want, "\(system)")
        }
        // A driver reads this namespace's.
        let expected: CongestionControl
        if case .stack(let cc) = NetStackDriver.systemCongestionControl() { expected = cc } else { expected = .cubic }
        let driver = NetStackDriver(settings: settings, sink: TapSink(device: PairDevice(fd: -1, offloads: [])),
                                    logger: Logger(label: "test"))
        #expect(driver.netStack?.tcp.config.congestionControl == expected)
    }
}
