// PrivilegedTapTests.swift - frames through a real TAP, and capability reduction on a dedicated
// thread. Only inside the private namespace of the test process (see Support.swift).

import Foundation
import Testing
@testable import LinuxNet

private let fakeMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02]

/// Reads frames until `match` accepts one or ~3 s pass (bounded iterations, no blocking read).
private func readFrame(_ tap: TapDevice, _ match: ([UInt8]) -> Bool) throws -> [UInt8]? {
    var buf = [UInt8](repeating: 0, count: 2048)
    for _ in 0..<300 {
        let n = try buf.withUnsafeMutableBytes { try tap.read(into: $0) }
        if let n {
            let frame = Array(buf[0..<n])
            if match(frame) { return frame }
        } else {
            usleep(10_000)
        }
    }
    return nil
}

private func be16(_ f: [UInt8], _ at: Int) -> UInt16 { UInt16(f[at]) << 8 | UInt16(f[at + 1]) }

/// Sends one UDP datagram from the kernel side, to an address that lives behind the TAP.
private func sendUDP(to ip: String, port: UInt16, payload: [UInt8]) throws {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    #expect(fd >= 0)
    defer { close(fd) }
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    #expect(inet_pton(AF_INET, ip, &sa.sin_addr) == 1)
    let sent = withUnsafePointer(to: &sa) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            sendto(fd, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    #expect(sent == payload.count, "sendto errno \(errno)")
}

@Suite struct PrivilegedTapTests {
    @Test func frameReadAndWriteThroughTap() throws {
        guard Privileged.check("frameReadAndWriteThroughTap") else { return }
        let tap = try TapDevice.open(name: "zt-rw")
        defer { tap.close() }
        let nl = try Netlink()
        try InterfaceSetup(name: "zt-rw", mtu: 1500, kernelAddresses: ["10.78.0.1/24"]).apply(using: nl)
        let macText = try #require(try nl.linkInfo(interface: "zt-rw")?.mac)
        let kernelMAC = try #require(MACText.parse(macText))

        // Nothing is queued yet that we care about; a read must not block.
        var scratch = [UInt8](repeating: 0, count: 2048)
        _ = try scratch.withUnsafeMutableBytes { try tap.read(into: $0) }

        // The kernel must resolve 10.78.0.2 first: an ARP request comes out of the TAP.
        let payload = Array("ztap-tap-test".utf8)
        try sendUDP(to: "10.78.0.2", port: 9, payload: payload)
        let request = try #require(try readFrame(tap) { f in
            f.count >= 42 && be16(f, 12) == 0x0806 && be16(f, 20) == 1 && Array(f[38..<42]) == [10, 78, 0, 2]
        })
        #expect(Array(request[0..<6]) == [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        #expect(Array(request[6..<12]) == kernelMAC)
        #expect(Array(request[28..<32]) == [10, 78, 0, 1])

        // Answer it by writing a frame into the TAP; the kernel then sends the queued datagram.
        var reply = [UInt8](repeating: 0, count: 60)
        reply.replaceSubrange(0..<6, with: kernelMAC)
        reply.replaceSubrange(6..<12, with: fakeMAC)
        reply.replaceSubrange(12..<22, with: [0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02])
        reply.replaceSubrange(22..<28, with: fakeMAC)
        reply.replaceSubrange(28..<32, with: [10, 78, 0, 2])
        reply.replaceSubrange(32..<38, with: kernelMAC)
        reply.replaceSubrange(38..<42, with: [10, 78, 0, 1])
        #expect(try reply.withUnsafeBytes { try tap.write($0) })

        let datagram = try #require(try readFrame(tap) { f in
            f.count >= 42 && Array(f[0..<6]) == fakeMAC && be16(f, 12) == 0x0800 && f[23] == 17
        })
        let ihl = Int(datagram[14] & 0x0f) * 4
        #expect(Array(datagram[30..<34]) == [10, 78, 0, 2])
        #expect(be16(datagram, 14 + ihl + 2) == 9)
        #expect(Array(datagram[(14 + ihl + 8)...].prefix(payload.count)) == payload)
    }

    @Test func writeAfterDeleteIsATypedError() throws {
        guard Privileged.check("writeAfterDeleteIsATypedError") else { return }
        let tap = try TapDevice.open(name: "zt-gone")
        defer { tap.close() }
        try Netlink().deleteLink(interface: "zt-gone")
        let frame = [UInt8](repeating: 0, count: 60)
        do {
            _ = try frame.withUnsafeBytes { try tap.write($0) }
            Issue.record("writing to a deleted TAP should fail")
        } catch {
            let e = try #require(error as? LinuxError)
            #expect(e.operation == "write 60-byte frame to TAP zt-gone")
            #expect(e.errno != 0)
        }
    }

    /// Capability sets are per thread, so the reduction runs on a thread of its own and the rest of
    /// the test process keeps its privileges. (The daemon-wide result, /proc/PID/status of ztapd,
    /// is checked by the lead's integration test.)
    @Test func reduceToNetAdminKeepsNetlinkAndTapWorking() throws {
        guard Privileged.check("reduceToNetAdminKeepsNetlinkAndTapWorking") else { return }
        let before = Capabilities.current()
        let outcome = runOnFreshThread { () -> Result<[String: UInt64], LinuxError> in
            do throws(LinuxError) {
                try Capabilities.reduceToNetAdmin()
                let caps = Capabilities.current(ofCallingThread: true)
                // Still able to do the daemon's work with only CAP_NET_ADMIN:
                let tap = try TapDevice.open(name: "zt-caps")
                defer { tap.close() }
                try InterfaceSetup(name: "zt-caps", mac: "02:00:00:00:00:33", mtu: 2800,
                                   kernelAddresses: ["10.82.0.1/24"]).apply(using: try Netlink())
                return .success(caps)
            } catch {
                return .failure(error)
            }
        }
        let caps = try outcome.get()
        #expect(caps["CapEff"] == Capabilities.netAdminMask)
        #expect(caps["CapPrm"] == Capabilities.netAdminMask)
        #expect(caps["CapInh"] == 0)
        #expect(caps["CapAmb"] == 0)
        #expect(caps["CapBnd"] == Capabilities.netAdminMask)
        // The main thread (and so the other tests) kept theirs.
        #expect(Capabilities.current() == before)
    }
}

/// Filled by exactly one thread, read after that thread signalled.
private final class ResultBox<T>: @unchecked Sendable { var value: T? }

/// Runs `body` on a new thread (Foundation.Thread is one new pthread) and waits for it.
private func runOnFreshThread<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        box.value = body()
        done.signal()
    }
    thread.start()
    done.wait()
    return box.value!
}

/// switchUser changes the uid of every thread (glibc broadcasts setuid), so it runs in a child: this
/// same test binary, re-run with only this test selected and ZTAP_SWITCHUSER_CHILD=1. The child
/// drops to `nobody` + CAP_NET_ADMIN and configures a TAP the parent created, then prints one
/// result line that the parent checks. Same network namespace, so still the throwaway one.
@Suite struct SwitchUserTests {
    static let childMarker = "ZTAP_SWITCHUSER_CHILD=1"

    @Test func switchUserThenReduceKeepsNetAdmin() throws {
        if ProcessInfo.processInfo.environment["ZTAP_SWITCHUSER_CHILD"] == "1" {
            print(runChild())
            #expect(Bool(true), "child mode: the parent process checks the printed result")
            return
        }
        guard Privileged.check("switchUserThenReduceKeepsNetAdmin") else { return }
        let nobody = try #require(UserDB.uid(forUser: "nobody"))
        let tap = try TapDevice.open(name: "zt-user")
        defer { tap.close() }
        let out = try run(["/proc/self/exe", "--testing-library", "swift-testing",
                           "--filter", "switchUserThenReduceKeepsNetAdmin"],
                          extraEnvironment: [SwitchUserTests.childMarker])
        let line = try #require(out.split(separator: "\n").first { $0.hasPrefix("ZTAP-CHILD ") })
        var fields: [String: String] = [:]
        for kv in line.dropFirst("ZTAP-CHILD ".count).split(separator: " ") {
            let parts = kv.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        #expect(fields["error"] == nil, "child failed: \(line)")
        #expect(fields["uid"] == "\(nobody)")
        #expect(fields["euid"] == "\(nobody)")
        #expect(fields["gid"] == UserDB.entry(uid: nobody).map { "\($0.gid)" })
        #expect(fields["capeff"] == "1000")
        #expect(fields["capprm"] == "1000")
        #expect(fields["capbnd"] == "1000")
        #expect(fields["capinh"] == "0")
        #expect(fields["capamb"] == "0")
        #expect(fields["netlink"] == "ok")
        // Done by the unprivileged child through netlink:
        let nl = try Netlink()
        #expect(try nl.linkInfo(interface: "zt-user")?.mtu == 2800)
        #expect(try nl.addresses(interface: "zt-user").contains("10.84.0.1/24"))
    }

    /// In the child: drop privileges, report ids/caps, configure zt-user. Never throws.
    private func runChild() -> String {
        runOnFreshThread { () -> String in
            do throws(LinuxError) {
                try Capabilities.dropPrivileges(to: "nobody")
                let c = Capabilities.current(ofCallingThread: true)
                func hex(_ k: String) -> String { String(c[k] ?? 0xdead, radix: 16) }
                var result = "ZTAP-CHILD uid=\(getuid()) euid=\(geteuid()) gid=\(getgid())"
                    + " capeff=\(hex("CapEff")) capprm=\(hex("CapPrm")) capbnd=\(hex("CapBnd"))"
                    + " capinh=\(hex("CapInh")) capamb=\(hex("CapAmb"))"
                try InterfaceSetup(name: "zt-user", mtu: 2800, kernelAddresses: ["10.84.0.1/24"])
                    .apply(using: try Netlink())
                result += " netlink=ok"
                return result
            } catch {
                return "ZTAP-CHILD error=\(error.description.replacingOccurrences(of: " ", with: "_"))"
            }
        }
    }
}
