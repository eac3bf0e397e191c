import Foundation
import NetStack
import Testing
@testable import ZTService

/// ztapd's stacks take the default congestion control of its network namespace
/// (net.ipv4.tcp_congestion_control) when the stack has it, as the kernel's sockets there do.
/// Tests/diff's opt_tcp_congestion checks the whole path against Linux with the sysctl at reno.
@Suite struct CongestionDefaultTests {
    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "ztap-cc-\(UUID().uuidString)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func theStacksAlgorithmsAreTaken() throws {
        for (text, want) in [("cubic\n", CongestionControl.cubic), ("reno\n", .newReno), ("reno", .newReno)] {
            let p = try write(text)
            defer { try? FileManager.default.removeItem(atPath: p) }
            #expect(NetStackDriver.systemCongestionControl(path: p) == .stack(want))
        }
    }

    @Test func othersAreNamedAndKeepCubic() throws {
        let p = try write("bbr\n")
        defer { try? FileManager.default.removeItem(atPath: p) }
        #expect(NetStackDriver.systemCongestionControl(path: p) == .unsupported("bbr"))
        #expect(NetStackDriver.systemCongestionControl(path: "/nonexistent/tcp_congestion_control") == .unreadable)
        let e = try write("\n")
        defer { try? FileManager.default.removeItem(atPath: e) }
        #expect(NetStackDriver.systemCongestionControl(path: e) == .unreadable)
    }

    @Test func aStackUsesThisNamespacesDefault() {
        // Whatever this namespace says: the stack's default is that algorithm when the stack
        // has it, else cubic.
        let want: CongestionControl
        if case .stack(let cc) = NetStackDriver.systemCongestionControl() { want = cc } else { want = .cubic }
        var random = XorShiftRandom(seed: 7)
        let settings = StackSettings(stackMAC: MACAddress(0x02, 0, 0, 0, 0, 2), mtu: 1500,
                                     addresses: [IPv4CIDR(address: IPv4Address(10, 0, 0, 2), prefixLength: 24)],
                                     gateway: nil, services: [], tcpReceiveBuffer: 256 << 10,
                                     tcpSendBuffer: 256 << 10, maxConnections: 16)
        // Nothing is sent: the device is never written to.
        let stack = NetStackDriver.makeStack(settings, sink: TapSink(device: PairDevice(fd: -1, offloads: [])),
                                             random: &random)
        #expect(stack.tcp.config.congestionControl == want)
    }
}
