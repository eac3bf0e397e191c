import CShims
import Foundation
import Glibc
import NetStack
import SystemPackage
import Testing
@testable import ZTService

/// SocketOptionMap against answers recorded from a Linux 6.18 kernel socket by
/// Tests/integration/sockopt_probe.py (Fixtures/sockopts-linux-6.18.json, a subset; set
/// ZTAP_SOCKOPT_FIXTURE to a full probe output to replay all of it). Each recorded case is
/// replayed on a simulated socket in the same state; answers that depend on the machine rather
/// than on the option semantics are listed in `Replay.environmental` and skipped here (the
/// integration test compares them against a live kernel socket where it can).
@Suite struct SocketOptionReplayTests {
    static var fixtures: [String] {
        if let p = ProcessInfo.processInfo.environment["ZTAP_SOCKOPT_FIXTURE"] { return [p] }
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        return ["sockopts-linux-6.18.json", "sockopts-linux-6.18-unprivileged.json"].map { dir.appendingPathComponent($0).path }
    }

    @Test(arguments: fixtures) func answersMatchTheRecordedKernel(path: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let cases = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let meta = cases["_meta"] as? [String: Any]
        let caps = UInt64(meta?["capeff"] as? Int ?? 0x3000)
        let r = Replay(ifindex: Int32(meta?["ifindex"] as? Int ?? 2), capabilities: caps)
        var checked = 0
        var mismatches: [String] = []
        for key in cases.keys.sorted() where !key.hasPrefix("_") {
            guard let want = cases[key] as? String, let got = r.answer(key) else { continue }
            checked += 1
            if got != want { mismatches.append("\(key): kernel \(want), ours \(got)") }
        }
        #expect(checked > 1000, "only \(checked) cases replayed")
        if let out = ProcessInfo.processInfo.environment["ZTAP_SOCKOPT_MISMATCHES"] {
            try mismatches.joined(separator: "\n").write(toFile: out, atomically: true, encoding: .utf8)
        }
        let n = mismatches.count
        #expect(n == 0, "\(n) of \(checked) differ: \(mismatches.prefix(40).joined(separator: "; "))")
    }
}

/// Replays one probe case ("kind|LEVEL|name|step") on a simulated socket.
struct Replay {
    let ifindex: Int32
    /// The prober's CapEff: CAP_NET_ADMIN (bit 12) and CAP_NET_RAW (bit 13) decide some answers.
    var capabilities: UInt64 = 1 << 12 | 1 << 13

    static let levels: [String: Int32] = ["SOL": SOL_SOCKET, "IP": Int32(IPPROTO_IP), "TCP": Int32(IPPROTO_TCP),
                                          "UDP": Int32(IPPROTO_UDP)]

    /// (level, name) pairs whose answers depend on this machine, not on the semantics: buffer
    /// autotuning, the CPU and cookies, ports, clocks, the host's default congestion control
    /// (bbr here) and its CA info, the stack's own RTO maximum, interfaces other than the
    /// network's, and struct tcp_info (compared field by field by the integration test).
    static let environmental: Set<String> = [
        "SOL:7", "SOL:8", "SOL:49", "SOL:55", "SOL:57", "SOL:71", "SOL:28", "IP:52", "TCP:11", "TCP:24",
        "TCP:13", "TCP:26", "TCP:44", "TCP:10",
    ]

    /// Values given as "@IF" become the interface; only the network's interface binds.
    func answer(_ key: String) -> String? {
        let p = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        guard p.count >= 4, let level = Self.levels[p[1]], let name = Int32(p[2]) else { return nil }
        if p.last == "socket" || p.last == "get" && p.count == 4 { return nil }
        let kind = p[0]
        let step = p[3]
        let id = "\(p[1]):\(p[2])"
        // Defaults and read-backs of machine-dependent options are skipped; their set results
        // (errnos, accepted values) are still compared.
        let isRead = step.hasPrefix("get") || p.count == 5
        if Self.environmental.contains(id) && isRead { return nil }
        // TCP_REPAIR on as root: the kernel enters repair mode; we refuse it (documented).
        if id == "TCP:19" && (step == "set:i1" || step == "set:q1" || step.hasPrefix("set:p1,")) { return nil }
        // bbr is this host's module and default; the stack has cubic and reno only, and its
        // own default (cubic) is always allowed, as Linux allows its default (documented).
        if id == "TCP:13" && (step.contains("bbr") || step.contains("cubic")) { return nil }
        // TCP_MAXSEG read after connect is the connection's MSS (the integration test's).
        if id == "TCP:2" && (kind == "tcp-pre" || kind == "inherit") && p.count == 5 { return nil }
        // Multicast joins with a real group need a device; junk structs are compared.

        var o = kind == "accepted" ? SocketOptions().inheritedByAccepted : SocketOptions()
        var ctx = context(kind: kind, connected: !kind.hasSuffix("-pre"))
        if step.hasPrefix("get") {
            let len = Int(step.dropFirst(3)) ?? 512
            return show(SocketOptionMap.get(level: level, name: name, len: len, options: o, context: ctx))
        }
        guard step.hasPrefix("set:"), let value = value(String(step.dropFirst(4))) else { return nil }
        if kind.hasSuffix("-pre") || kind == "inherit" {
            // Set on the unconnected socket, read after connect (or bind), or on a connection
            // the listener accepted; a refused option is forgotten.
            ctx = context(kind: kind, connected: false)
            let r = SocketOptionMap.set(level: level, name: name, value: value, optlen: value.count, options: &o, context: ctx)
            if p.count == 4 { return show(r) }
            if kind == "inherit" { o = o.inheritedByAccepted } else { o.connected() }
            return show(SocketOptionMap.get(level: level, name: name, len: 512, options: o,
                                            context: context(kind: kind == "inherit" ? "accepted" : kind, connected: true)))
        }
        let r = SocketOptionMap.set(level: level, name: name, value: value, optlen: value.count, options: &o, context: ctx)
        if p.count == 4 { return show(r) }
        return show(SocketOptionMap.get(level: level, name: name, len: 512, options: o, context: ctx))
    }

    func context(kind: String, connected: Bool) -> OptionContext {
        let tcp = !kind.hasPrefix("udp")
        var c = OptionContext(isTCP: tcp)
        c.interface = ("ztnet0", ifindex)
        let caps = capabilities
        c.capable = { caps & ($0 == .netAdmin ? 1 << 12 : 1 << 13) != 0 }
        // The probe has stdin, stdout, stderr open, and fd 5 while accepting.
        c.callerHasFD = { $0 < 3 || kind == "accepted" && $0 == 5 }
        c.tcpRmemMax = 33554432
        c.local = IPv4Endpoint(IPv4Address(10, 71, 0, 2), 40000)
        c.mtu = 2800
        c.defaultReceiveBuffer = tcp ? 131072 : 212992
        c.defaultSendBuffer = tcp ? 16384 : 212992
        guard connected else { return c }
        switch kind {
        case "listen":
            c.state = .listen
            var i = TCPSocketInfo(state: .listen, local: c.local!, remote: nil, bytesReceived: 0, bytesSent: 0, srtt: nil,
                                  rto: .seconds(1), cwnd: 0, ssthresh: 0, retransmissions: 0, sendQueue: 16,
                                  receiveQueue: 0, peerWindow: 0)
            i.mss = 536
            c.tcpInfo = i
        case "udp", "udp-pre":
            c.peer = IPv4Endpoint(IPv4Address(10, 71, 0, 1), 9)
        default:
            c.state = .established
            c.peer = IPv4Endpoint(IPv4Address(10, 71, 0, 1), 7777)
            var i = TCPSocketInfo(state: .established, local: c.local!, remote: c.peer, bytesReceived: 0, bytesSent: 0,
                                  srtt: .microseconds(50), rto: .milliseconds(200), cwnd: 27480, ssthresh: Int(Int32.max),
                                  retransmissions: 0, sendQueue: 0, receiveQueue: 0, peerWindow: 63488)
            i.mss = 2748
            i.pathMTU = 2800
            c.tcpInfo = i
        }
        return c
    }

    /// The bytes a probe step passes (its tag, see sockopt_probe.py `values`).
    func value(_ tag: String) -> [UInt8]? {
        func le32(_ v: Int32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        switch tag.first {
        case "i": return Int32(tag.dropFirst()).map(le32)
        case "b": return Int(tag.dropFirst()).map { [5] + [UInt8](repeating: 0, count: $0 - 1) }
        case "p":
            let xs = tag.dropFirst().split(separator: ",").compactMap { Int32($0) }
            return xs.count == 2 ? le32(xs[0]) + le32(xs[1]) : nil
        case "q": return UInt64(tag.dropFirst()).map { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        case "z": return [UInt8](repeating: 0, count: Int(tag.dropFirst()) ?? 0)
        case "s": return pythonLiteral(String(tag.dropFirst()))
        default: return nil
        }
    }

    /// A Python repr of a str or bytes literal ('ab', b'\x01\x00'), "@IF" replaced.
    func pythonLiteral(_ s: String) -> [UInt8]? {
        var t = Substring(s)
        if t.hasPrefix("b") { t = t.dropFirst() }
        guard let q = t.first, q == "'" || q == "\"", t.last == q else { return nil }
        t = t.dropFirst().dropLast()
        var out: [UInt8] = []
        var i = t.startIndex
        while i < t.endIndex {
            let ch = t[i]
            if ch == "\\" {
                let n = t.index(after: i)
                switch t[n] {
                case "x":
                    let h = t[t.index(after: n)...].prefix(2)
                    out.append(UInt8(h, radix: 16) ?? 0)
                    i = t.index(n, offsetBy: 3)
                    continue
                case "0": out.append(0)
                case "\\": out.append(0x5C)
                case "'": out.append(0x27)
                default: out.append(UInt8(ascii: t[n].unicodeScalars.first!))
                }
                i = t.index(after: n)
                continue
            }
            out += Array(String(ch).utf8)
            i = t.index(after: i)
        }
        return out
    }

    func show(_ r: Result<[UInt8], Errno>) -> String {
        switch r {
        case .success(let v): return v.map { String(format: "%02x", $0) }.joined()
        case .failure(let e): return "E:" + (Self.errnoNames[e.rawValue] ?? "\(e.rawValue)")
        }
    }

    func show(_ r: Result<[TCPOption], Errno>) -> String {
        switch r {
        case .success: return "ok"
        case .failure(let e): return "E:" + (Self.errnoNames[e.rawValue] ?? "\(e.rawValue)")
        }
    }

    static let errnoNames: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EBADF: "EBADF", EACCES: "EACCES", EFAULT: "EFAULT", EINVAL: "EINVAL",
        ENODEV: "ENODEV", ENOPROTOOPT: "ENOPROTOOPT", EOPNOTSUPP: "ENOTSUP", ENOTCONN: "ENOTCONN",
        EADDRNOTAVAIL: "EADDRNOTAVAIL", EPROTO: "EPROTO", ENODATA: "ENODATA", EBADMSG: "EBADMSG",
        EEXIST: "EEXIST", ETIMEDOUT: "ETIMEDOUT", ECONNREFUSED: "ECONNREFUSED", EHOSTUNREACH: "EHOSTUNREACH",
    ]
}
