import Foundation
import NetStack
import Testing
@testable import ZTService

/// ztapd's stacks take the ephemeral range of its network namespace, as the kernel's sockets do.
@Suite struct EphemeralRangeTests {
    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "ztap-portrange-\(UUID().uuidString)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func readFromProcFormat() throws {
        let p = try write("40000\t40999\n")
        defer { try? FileManager.default.removeItem(atPath: p) }
        #expect(NetStackDriver.systemEphemeralPorts(path: p) == 40000...40999)
    }

    @Test func unreadableOrMalformedFallsBackToTheDefault() throws {
        #expect(NetStackDriver.systemEphemeralPorts(path: "/nonexistent/ip_local_port_range") == nil)
        let p = try write("60999 32768\n")
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
