import CShims
import Foundation
import Glibc
import Testing
@testable import ZTControl

/// Pure formats of the operator commands: the capture socket's records, the pcap file header,
/// frame summaries, Prometheus text, and answers from an older ztapd.
@Suite struct OperatorFormatTests {
    @Test func pcapFileHeaderIsLibpcap24LittleEndian() {
        let h = Pcap.fileHeader()
        #expect(h.count == 24)
        #expect(Array(h[0..<4]) == [0xd4, 0xc3, 0xb2, 0xa1])       // magic, microseconds
        #expect(Array(h[4..<8]) == [2, 0, 4, 0])                   // version 2.4
        #expect(Array(h[16..<20]) == [0xff, 0xff, 0, 0])           // snaplen 65535
        #expect(Array(h[20..<24]) == [1, 0, 0, 0])                 // LINKTYPE_ETHERNET
    }

    @Test func captureRecordRoundTripsAndItsTailIsAPcapRecord() throws {
        var m = [UInt8](repeating: 0, count: CaptureWire.headerSize + 60)
        m.withUnsafeMutableBytes {
            CaptureWire.encodeHeader($0.baseAddress!, dropped: 3, outbound: true, seconds: 1_700_000_000, micros: 123_456,
                                     length: 60)
        }
        let d = try #require(m.withUnsafeBytes { CaptureWire.decode($0) })
        #expect(d == CaptureWire.Message(dropped: 3, outbound: true, seconds: 1_700_000_000, micros: 123_456,
                                         capturedLength: 60, originalLength: 60))
        // Bytes 8..24 are exactly libpcap's record header: ts_sec, ts_usec, incl_len, orig_len.
        let rec = Array(m[8..<24])
        #expect(rec == [0x00, 0xf1, 0x53, 0x65, 0x40, 0xe2, 0x01, 0x00, 60, 0, 0, 0, 60, 0, 0, 0])
    }

    @Test func malformedCaptureRecordsAreRejected() {
        var m = [UInt8](repeating: 0, count: CaptureWire.headerSize + 10)
        m.withUnsafeMutableBytes { CaptureWire.encodeHeader($0.baseAddress!, dropped: 0, outbound: false, seconds: 1, micros: 0, length: 11) }
        #expect(m.withUnsafeBytes { CaptureWire.decode($0) } == nil)               // length disagrees with the message
        #expect(Array(m.prefix(10)).withUnsafeBytes { CaptureWire.decode($0) } == nil)  // shorter than a header
        m.withUnsafeMutableBytes { CaptureWire.encodeHeader($0.baseAddress!, dropped: 0, outbound: false, seconds: 1, micros: 2_000_000, length: 10) }
        #expect(m.withUnsafeBytes { CaptureWire.decode($0) } == nil)               // microseconds out of range
    }

    static func frame(_ hex: String) -> [UInt8] {
        let digits = Array(hex.filter { !$0.isWhitespace })
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0..<$0 + 2]), radix: 16)! }
    }

    @Test func summariesOfCommonFrames() {
        let eth = "020000000002 020000000001"
        let echo = Self.frame(eth + "0800 4500001c0001000040010000 0a490001 0a490002 0800f7fe0001 0002")
        #expect(echo.withUnsafeBytes { FrameSummary.describe($0) }
                == "02:00:00:00:00:01 > 02:00:00:00:00:02 IP 10.73.0.1 > 10.73.0.2: ICMP echo request id 1 seq 2, length 28")
        let syn = Self.frame(eth + "0800 450000280001000040060000 0a490001 0a490002"
                             + "d431 0050 00000064 00000000 5002ffff00000000")
        #expect(syn.withUnsafeBytes { FrameSummary.describe($0) }.hasSuffix(
            "IP 10.73.0.1.54321 > 10.73.0.2.80: TCP [S] seq 100 win 65535 len 0"))
        let arp = Self.frame("ffffffffffff 020000000001 0806 0001 0800 06 04 0001 020000000001 0a490001 000000000000 0a490002")
        #expect(arp.withUnsafeBytes { FrameSummary.describe($0) }.hasSuffix("ARP who-has 10.73.0.2 tell 10.73.0.1"))
        #expect([UInt8](repeating: 0, count: 5).withUnsafeBytes { FrameSummary.describe($0) } == "truncated frame, 5 bytes")
        // A header that claims more than the frame holds is described, not read past its end.
        let short = Self.frame(eth + "0800 4f00ffff0001000040060000 0a490001 0a490002")
        #expect(short.withUnsafeBytes { FrameSummary.describe($0) }.contains("fragment"))
    }

    @Test func prometheusTextIsWellFormedAndEscaped() {
        var b = MetricsBuilder()
        b.add("ztap_x_total", .counter, "Frames\nin \\ total.", 3, ["network": "lab", "reason": "a\"b\\c\nd"])
        b.add("ztap_x_total", .counter, "ignored second help", 4, ["network": "a"])
        b.add("ztap_g", .gauge, "A gauge.", 1.5)
        b.declare("ztap_empty", .gauge, "Nothing yet.")
        let text = PrometheusText.render(b.families)
        #expect(text == """
            # HELP ztap_x_total Frames\\nin \\\\ total.
            # TYPE ztap_x_total counter
            ztap_x_total{network="lab",reason="a\\"b\\\\c\\nd"} 3
            ztap_x_total{network="a"} 4
            # HELP ztap_g A gauge.
            # TYPE ztap_g gauge
            ztap_g 1.5
            # HELP ztap_empty Nothing yet.
            # TYPE ztap_empty gauge

            """)
        #expect(PrometheusText.format(.nan) == "NaN" && PrometheusText.format(-.infinity) == "-Inf")
        #expect(PrometheusText.format(Double(UInt64.max)) == "1.8446744073709552e+19")
        #expect(PrometheusText.isValidName("ztap_frames_total") && !PrometheusText.isValidName("9x")
                && !PrometheusText.isValidName("a:b", label: true))
    }

    @Test func answersOfAnOlderZtapdStillDecode() throws {
        // A connection as ztapd 0.1.0 sent it, before the TCP internals existed.
        let old = #"{"ok":true,"connections":[{"network":"lab","proto":"tcp","local":"10.0.0.2:80","remote":"10.0.0.1:5000","state":"ESTABLISHED","bytesIn":1,"bytesOut":2}]}"#
        let r = try ControlCodec.decode(ControlResponse.self, from: Array(old.utf8))
        let c = try #require(r.connections?.first)
        #expect(c.rttMicros == nil && c.cwnd == nil && c.retransmits == nil && c.bytesIn == 1)
        #expect(r.metrics == nil && r.capture == nil)
    }

    @Test func metricsAndCaptureAnswersRoundTrip() throws {
        var r = ControlResponse(ok: true)
        var b = MetricsBuilder()
        b.add("ztap_up", .gauge, "Up.", 1, ["network": "lab"])
        r.metrics = b.families
        r.capture = CaptureInfo(network: "lab", interface: "ztlab0", bufferBytes: 4 << 20)
        let back = try ControlCodec.decode(ControlResponse.self, from: ControlCodec.encodeLine(r).dropLast())
        #expect(back == r)
    }
}
