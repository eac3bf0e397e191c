import Glibc
import CShims
import Foundation
@testable import NetStack
import PhyLoop
import Testing
import ZTControl
@testable import ZTService

/// FrameCaptures against a real SEQPACKET pair (delivery, bounded drops, a reader that leaves)
/// and the metric families built from snapshots.
@Suite struct CaptureAndMetricsTests {
    static func pair() throws -> (daemon: Int32, reader: Int32) {
        let (a, b) = try Sys.live.socketpair(type: Int32(SOCK_SEQPACKET.rawValue))
        try Sys.setNonBlocking(a)
        return (a, b)
    }

    /// One message from the reader end (non-blocking); nil when none is queued.
    static func read(_ fd: Int32) -> (CaptureWire.Message, [UInt8])? {
        var buf = [UInt8](repeating: 0, count: 20000)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        guard n > 0 else { return nil }
        guard let m = buf.withUnsafeBytes({ CaptureWire.decode(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) else { return nil }
        return (m, Array(buf[CaptureWire.headerSize..<n]))
    }

    @Test func framesReachEveryReaderWithTheirDirection() throws {
        let caps = FrameCaptures()
        let frame: [UInt8] = (0..<60).map { UInt8($0) }
        frame.withUnsafeBytes { caps.record($0, outbound: false) }   // no reader: nothing happens
        let r1 = try Self.pair(), r2 = try Self.pair()
        defer { for fd in [r1.daemon, r1.reader, r2.daemon, r2.reader] { close(fd) } }
        _ = caps.add(r1.daemon)
        _ = caps.add(r2.daemon)
        frame.withUnsafeBytes { caps.record($0, outbound: false) }
        frame.withUnsafeBytes { caps.record(UnsafeRawBufferPointer(rebasing: $0[0..<42]), outbound: true) }
        for r in [r1, r2] {
            let (a, fa) = try #require(Self.read(r.reader))
            #expect(!a.outbound && a.capturedLength == 60 && a.dropped == 0 && fa == frame)
            let (b, fb) = try #require(Self.read(r.reader))
            #expect(b.outbound && b.originalLength == 42 && fb == Array(frame.prefix(42)))
            #expect(Self.read(r.reader) == nil)
        }
        #expect(caps.framesTotal == 4 && caps.droppedTotal == 0 && caps.sessionsTotal == 2)
    }

    @Test func aReaderThatDoesNotReadLosesFramesNotTheNetwork() throws {
        let caps = FrameCaptures()
        let r = try Self.pair()
        defer { close(r.daemon); close(r.reader) }
        let c = caps.add(r.daemon)
        let frame = [UInt8](repeating: 0xab, count: 1514)
        var recorded = 0
        // The buffer is bounded (4 MiB, or wmem_max without CAP_NET_ADMIN): drops must start.
        while caps.droppedTotal < 10 && recorded < 50_000 {
            frame.withUnsafeBytes { caps.record($0, outbound: true) }
            recorded += 1
        }
        #expect(caps.droppedTotal == 10 && c.unreported == 10)
        // Drain; the next frame that fits reports the drops in its header.
        var delivered = 0
        while Self.read(r.reader) != nil { delivered += 1 }
        #expect(delivered + 10 == recorded)
        frame.withUnsafeBytes { caps.record($0, outbound: true) }
        let (m, _) = try #require(Self.read(r.reader))
        #expect(m.dropped == 10 && c.unreported == 0 && caps.sessions.count == 1)
    }

    @Test func aReaderThatLeavesIsForgotten() throws {
        let caps = FrameCaptures()
        let r = try Self.pair()
        defer { close(r.daemon) }
        let c = caps.add(r.daemon)
        close(r.reader)
        [UInt8](repeating: 1, count: 60).withUnsafeBytes { caps.record($0, outbound: false) }
        #expect(caps.isEmpty && c.closed)
    }

    @Test func metricFamiliesAreValidAndLabelledPerNetwork() {
        var m = NetworkMetrics()
        m.stack.framesIn = 7
        m.stack.droppedChecksum = 2
        m.tcpStates = ["established": 3, "listen": 1]
        m.tapDropped = 5
        (m.busyPolls, m.busyPollHits) = (10, 4)
        var rpc = RPCCounters()
        rpc.replied(op: 1, failed: true)
        rpc.replied(op: 1, failed: false)
        rpc.replied(op: 99, failed: false)
        m.rpc = rpc
        let d = DaemonGauges(version: "9.9", startTime: 1000, uptime: 5, networksUp: 1, networksFailed: 1,
                             controlClients: 1, controlRequests: ["list": ["ok": 2, "error": 1]], openFDs: 10,
                             residentBytes: 4096, threads: 2)
        let fams = MetricsExport.families(daemon: d, networks: [("lab", m), ("bad", nil)])
        var seen = Set<String>()
        for f in fams {
            #expect(PrometheusText.isValidName(f.name), "\(f.name)")
            #expect(seen.insert(f.name).inserted, "\(f.name) twice")
            #expect((f.type == .counter) == f.name.hasSuffix("_total"), "\(f.name)")
            for s in f.samples { for k in s.labels.keys { #expect(PrometheusText.isValidName(k, label: true)) } }
        }
        func value(_ name: String, _ labels: [String: String]) -> Double? {
            fams.first { $0.name == name }?.samples.first { $0.labels == labels }?.value
        }
        #expect(value("ztap_network_up", ["network": "lab"]) == 1)
        #expect(value("ztap_network_up", ["network": "bad"]) == 0)
        #expect(value("ztap_frames_received_total", ["network": "bad"]) == nil)
        #expect(value("ztap_frames_received_total", ["network": "lab"]) == 7)
        #expect(value("ztap_frames_dropped_total", ["network": "lab", "reason": "checksum"]) == 2)
        #expect(value("ztap_frames_dropped_total", ["network": "lab", "reason": "tap_full"]) == 5)
        #expect(value("ztap_tcp_connections", ["network": "lab", "state": "established"]) == 3)
        #expect(value("ztap_tcp_connections", ["network": "lab", "state": "time_wait"]) == 0)
        #expect(fams.first { $0.name == "ztap_tcp_connections" }?.samples.count == NetworkMetrics.tcpStateLabels.count)
        #expect(value("ztap_rpc_requests_total", ["network": "lab", "op": "connect"]) == 2)
        #expect(value("ztap_rpc_errors_total", ["network": "lab", "op": "connect"]) == 1)
        #expect(value("ztap_rpc_requests_total", ["network": "lab", "op": "other"]) == 1)
        #expect(value("ztap_control_requests_total", ["command": "list", "result": "error"]) == 1)
        #expect(value("ztap_networks", ["state": "failed"]) == 1)
        #expect(value("ztap_build_info", ["version": "9.9"]) == 1)
        #expect(value("ztap_loop_busy_polls_total", ["network": "lab", "outcome": "hit"]) == 4)
        #expect(value("ztap_loop_busy_polls_total", ["network": "lab", "outcome": "idle"]) == 6)
        // Every TCP state the stack can report has a label.
        for s: TCPState in [.closed, .listen, .synSent, .synReceived, .established, .finWait1, .finWait2, .closeWait,
                            .closing, .lastAck, .timeWait] {
            #expect(NetworkMetrics.tcpStateLabels.contains(NetworkMetrics.label(s)), "\(s)")
        }
    }

    @Test func connectionInternalsFromTheStackView() {
        var i = TCPSocketInfo(state: .established, local: IPEndpoint(IPv4Address(10, 0, 0, 2), 80),
                              remote: IPEndpoint(IPv4Address(10, 0, 0, 1), 5000), bytesReceived: 1, bytesSent: 2,
                              srtt: .microseconds(1500), rto: .milliseconds(200), cwnd: 14600, ssthresh: Int(Int32.max),
                              retransmissions: 3, sendQueue: 10, receiveQueue: 20, peerWindow: 65535)
        i.mss = 1460
        i.sack = true
        i.rttVariance = .microseconds(700)
        i.bytesInFlight = 2920
        var c = ConnectionInfo(network: "n", proto: "tcp", local: "", remote: "", state: "", pid: nil, uid: nil,
                               bytesIn: 0, bytesOut: 0)
        c.addInternals(i)
        #expect(c.rttMicros == 1500 && c.rtoMicros == 200_000 && c.cwnd == 14600 && c.ssthresh == nil)
        #expect(c.retransmits == 3 && c.sendQueue == 10 && c.receiveQueue == 20 && c.mss == 1460)
        #expect(c.options == ["sack"] && c.rttvarMicros == 700 && c.bytesInFlight == 2920)
        i.srtt = nil
        i.rttVariance = nil
        i.ssthresh = 30000
        c.addInternals(i)
        #expect(c.rttMicros == nil && c.rttvarMicros == nil && c.ssthresh == 30000)
    }
}
