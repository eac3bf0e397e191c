// PrivilegedOffloadTests.swift - a TAP with IFF_VNET_HDR and TUNSETOFFLOAD against the kernel:
// what it negotiates, the virtio header on frames it hands us, and that it takes what we write
// with partial checksums and as super-frames. Only inside the private namespace of the test
// process (see Support.swift).

import Foundation
import Testing
@testable import LinuxNet

private let stackMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x05]

private func be16(_ f: [UInt8], _ at: Int) -> UInt16 { UInt16(f[at]) << 8 | UInt16(f[at + 1]) }
private func le16(_ f: [UInt8], _ at: Int) -> UInt16 { UInt16(f[at]) | UInt16(f[at + 1]) << 8 }

/// Kernel release as (major, minor).
private func kernelVersion() -> (Int, Int) {
    var u = utsname()
    uname(&u)
    let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let parts = release.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
    return (parts.first ?? 0, parts.count > 1 ? parts[1] : 0)
}

/// Reads frames (virtio header first) until `match` accepts one or ~3 s pass.
private func readFrame(_ tap: TapDevice, _ match: ([UInt8]) -> Bool) throws -> [UInt8]? {
    var buf = [UInt8](repeating: 0, count: 70000)
    for _ in 0..<300 {
        if let n = try buf.withUnsafeMutableBytes({ try tap.read(into: $0) }) {
            let frame = Array(buf[0..<n])
            if match(frame) { return frame }
        } else {
            usleep(10_000)
        }
    }
    return nil
}

private func checksum(_ b: [UInt8], initial: UInt32 = 0) -> UInt32 {
    var s = initial
    var i = 0
    while i + 1 < b.count { s += UInt32(b[i]) << 8 | UInt32(b[i + 1]); i += 2 }
    if i < b.count { s += UInt32(b[i]) << 8 }
    return s
}

private func fold(_ s: UInt32) -> UInt16 {
    var s = s
    while s >> 16 != 0 { s = (s & 0xFFFF) + (s >> 16) }
    return UInt16(s)
}

/// An IPv4/UDP frame from the stack side (10.79.0.2:port) to the kernel (10.79.0.1:dport) with
/// `payload`; the UDP checksum field holds only the pseudo-header sum (NEEDS_CSUM).
private func partialUDPFrame(to kernelMAC: [UInt8], sport: UInt16, dport: UInt16, payload: [UInt8]) -> [UInt8] {
    let udpLen = 8 + payload.count
    var ip: [UInt8] = [0x45, 0, UInt8((20 + udpLen) >> 8), UInt8((20 + udpLen) & 0xFF), 0, 1, 0x40, 0, 64, 17, 0, 0,
                       10, 79, 0, 2, 10, 79, 0, 1]
    let c = ~fold(checksum(ip))
    ip[10] = UInt8(c >> 8); ip[11] = UInt8(c & 0xFF)
    let pseudo = fold(checksum([10, 79, 0, 2, 10, 79, 0, 1, 0, 17, UInt8(udpLen >> 8), UInt8(udpLen & 0xFF)]))
    let udp: [UInt8] = [UInt8(sport >> 8), UInt8(sport & 0xFF), UInt8(dport >> 8), UInt8(dport & 0xFF),
                        UInt8(udpLen >> 8), UInt8(udpLen & 0xFF), UInt8(pseudo >> 8), UInt8(pseudo & 0xFF)]
    return kernelMAC + stackMAC + [0x08, 0x00] + ip + udp + payload
}

@Suite struct PrivilegedOffloadTests {
    /// IFF_VNET_HDR and the whole TUNSETOFFLOAD set on this kernel (USO from Linux 6.2 on);
    /// without asking, none of it.
    @Test func negotiatesOffloads() throws {
        guard Privileged.check("negotiatesOffloads") else { return }
        let tap = try TapDevice.open(name: "zt-off", offloads: true)
        defer { tap.close() }
        #expect(tap.offloads.isSuperset(of: [.vnetHeader, .checksum, .tso4, .tso6, .tsoECN]), "\(tap.offloads)")
        let (major, minor) = kernelVersion()
        if major > 6 || (major == 6 && minor >= 2) {
            #expect(tap.offloads.contains(.uso), "\(tap.offloads)")
            #expect(tap.offloadRefusals.isEmpty, "\(tap.offloadRefusals)")
        }
        // ethtool's view of the same: the TAP now takes TSO and checksum offload from the stack.
        let features = (try? run(["ethtool", "-k", "zt-off"])) ?? ""
        if !features.isEmpty {
            #expect(features.contains("tcp-segmentation-offload: on"), "\(features)")
            #expect(features.contains("tx-checksumming: on"), "\(features)")
        }
        // The largest MTU config allows is the largest a TAP takes; one more is the kernel's error.
        let nl = try Netlink()
        try nl.setMTU(interface: "zt-off", mtu: 65521)
        #expect(try nl.linkInfo(interface: "zt-off")?.mtu == 65521)
        do {
            try nl.setMTU(interface: "zt-off", mtu: 65522)
            Issue.record("MTU 65522 on a TAP should be refused")
        } catch {
            #expect(error.errno == EINVAL, "\(error)")
        }
        let plain = try TapDevice.open(name: "zt-plain")
        defer { plain.close() }
        #expect(plain.offloads == [])
        #expect(plain.offloadRefusals.isEmpty)
    }

    /// Frames both ways carry the virtio header: the kernel's UDP datagram arrives with
    /// NEEDS_CSUM at the UDP checksum field, and a datagram we write with only the
    /// pseudo-header sum in its checksum field (NEEDS_CSUM) reaches a kernel socket.
    @Test func virtioHeaderBothWays() throws {
        guard Privileged.check("virtioHeaderBothWays") else { return }
        let tap = try TapDevice.open(name: "zt-vnet", offloads: true)
        defer { tap.close() }
        let nl = try Netlink()
        try InterfaceSetup(name: "zt-vnet", mtu: 1500, kernelAddresses: ["10.79.0.1/24"]).apply(using: nl)
        let macText = try #require(try nl.linkInfo(interface: "zt-vnet")?.mac)
        let kernelMAC = try #require(MACText.parse(macText))
        // The stack side's neighbor entry, so the kernel sends at once.
        try run(["ip", "neigh", "replace", "10.79.0.2", "lladdr", "02:00:00:00:00:05", "dev", "zt-vnet"])

        // A kernel socket bound on its side, to send from and to receive our datagram.
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = UInt16(7001).bigEndian
        sa.sin_addr.s_addr = inet_addr("10.79.0.1")
        let bound = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(bound == 0, "bind errno \(errno)")
        var to = sockaddr_in()
        to.sin_family = sa_family_t(AF_INET)
        to.sin_port = UInt16(9).bigEndian
        to.sin_addr.s_addr = inet_addr("10.79.0.2")
        let out = Array("to the stack".utf8)
        let sent = withUnsafePointer(to: &to) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, out, out.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(sent == out.count, "sendto errno \(errno)")
        let v = TapOffloads.vnetHeaderLength
        let got = try #require(try readFrame(tap) { f in
            f.count >= v + 42 && be16(f, v + 12) == 0x0800 && f[v + 23] == 17 && Array(f[v..<v + 6]) == stackMAC
        })
        // flags NEEDS_CSUM, no segmentation, csum_start at the UDP header, csum_offset 6.
        #expect(got[0] == 1 && got[1] == 0, "\(Array(got[0..<v]))")
        #expect(le16(got, 6) == 34 && le16(got, 8) == 6)
        #expect(Array(got[(v + 42)...]) == out)

        // Our datagram with a partial checksum: the kernel takes it as CHECKSUM_PARTIAL.
        let payload = Array("from the stack, checksum left to the kernel".utf8)
        let frame = partialUDPFrame(to: kernelMAC, sport: 9, dport: 7001, payload: payload)
        var header = [UInt8](repeating: 0, count: v)
        header[0] = 1
        header[6] = 34; header[8] = 6
        let written = try header.withUnsafeBytes { h in
            try frame.withUnsafeBytes { f in try tap.write(h, f, UnsafeRawBufferPointer(start: nil, count: 0),
                                                           UnsafeRawBufferPointer(start: nil, count: 0)) }
        }
        #expect(written)
        var buf = [UInt8](repeating: 0, count: 256)
        var n = -1
        for _ in 0..<300 {
            n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
            if n >= 0 { break }
            usleep(10_000)
        }
        #expect(n == payload.count)
        if n > 0 { #expect(Array(buf[0..<n]) == payload) }
    }
}
