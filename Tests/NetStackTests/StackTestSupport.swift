import Testing
@testable import NetStack

/// Records every frame the stack sends.
final class FrameRecorder: FrameSink {
    var frames: [[UInt8]] = []
    func sendFrame(_ frame: UnsafeRawBufferPointer) { frames.append(Array(frame)) }
    func take() -> [[UInt8]] { defer { frames.removeAll() }; return frames }
}

let ourMAC = MACAddress(0x02, 0, 0, 0, 0, 0x01)
let peerMAC = MACAddress(0x02, 0, 0, 0, 0, 0x02)
let ourIP = IPv4Address(10, 0, 0, 1)
let peerIP = IPv4Address(10, 0, 0, 2)
let t0 = Instant.milliseconds(10_000)

func makeStack(mtu: Int = 1500, services: Set<DiagnosticService> = [], gateway: IPv4Address? = nil,
               configure: (inout StackConfig) -> Void = { _ in }) -> (NetStack, FrameRecorder) {
    var cfg = StackConfig(mac: ourMAC, mtu: mtu, addresses: [IPv4CIDR(address: ourIP, prefixLength: 24)],
                          gateway: gateway, services: services)
    configure(&cfg)
    let rec = FrameRecorder()
    let stack = NetStack(config: cfg, sink: rec, random: XorShiftRandom(seed: 42))
    return (stack, rec)
}

extension NetStack {
    func receive(_ frame: [UInt8], now: Instant = t0) { frame.withUnsafeBytes { receive(frame: $0, now: now) } }
    /// Teaches the stack the peer's MAC (an ARP request from the peer for our address).
    func learnPeer(_ ip: IPv4Address = peerIP, mac: MACAddress = peerMAC, now: Instant = t0) {
        receive(Build.ethernet(dst: .broadcast, src: mac, type: EtherType.arp,
                               Build.arp(op: ARPOperation.request, sha: mac, spa: ip, tha: .zero, tpa: ourIP)), now: now)
    }
    func collectEvents() -> [SocketEvent] {
        var out: [SocketEvent] = []
        drainEvents { out.append($0) }
        return out
    }
}

enum Build {
    static func ethernet(dst: MACAddress = ourMAC, src: MACAddress = peerMAC, type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + payload.count)
        f.withUnsafeMutableBytes { EthernetHeaderView.emit(into: $0.baseAddress!, destination: dst, source: src, etherType: type) }
        f.replaceSubrange(14..., with: payload)
        return f
    }
    static func arp(op: UInt16, sha: MACAddress, spa: IPv4Address, tha: MACAddress, tpa: IPv4Address) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 28)
        b.withUnsafeMutableBytes {
            ARPPacketView.emit(into: $0.baseAddress!, operation: op, senderMAC: sha, senderIP: spa, targetMAC: tha, targetIP: tpa)
        }
        return b
    }
    static func ipv4(src: IPv4Address = peerIP, dst: IPv4Address = ourIP, proto: UInt8, _ payload: [UInt8],
                     id: UInt16 = 1, mf: Bool = false, offset: Int = 0, df: Bool = false, options: [UInt8] = []) -> [UInt8] {
        precondition(options.count % 4 == 0)
        var b = [UInt8](repeating: 0, count: 20 + options.count + payload.count)
        b.withUnsafeMutableBytes { p in
            IPv4HeaderView.emit(into: p.baseAddress!, source: src, destination: dst, protocolNumber: proto,
                                payloadLength: options.count + payload.count, identification: id,
                                dontFragment: df, moreFragments: mf, fragmentOffset: offset)
        }
        if !options.isEmpty {
            b[0] = 0x40 | UInt8(5 + options.count / 4)
            b.replaceSubrange(20..<20 + options.count, with: options)
            b[10] = 0; b[11] = 0
            let c = b.withUnsafeBytes { Checksum.compute($0.baseAddress!, count: 20 + options.count) }
            b[10] = UInt8(c >> 8); b[11] = UInt8(c & 0xFF)
        }
        b.replaceSubrange((20 + options.count)..., with: payload)
        return b
    }
    static func udp(src: IPEndpoint, dst: IPEndpoint, _ payload: [UInt8], checksum: Bool = true) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8 + payload.count)
        b.replaceSubrange(8..., with: payload)
        b.withUnsafeMutableBytes { p in
            UDPHeaderView.emit(into: p.baseAddress!, sourcePort: src.port, destinationPort: dst.port, payloadLength: payload.count)
            if checksum {
                let c = UDPHeaderView.checksum(source: src.address, destination: dst.address, header: UnsafeRawPointer(p.baseAddress!),
                                               payload: UnsafeRawBufferPointer(rebasing: p[8...]))
                wireStore16(p.baseAddress!, 6, c)
            }
        }
        return b
    }
    static func icmp(type: UInt8, code: UInt8 = 0, rest: UInt32 = 0, _ body: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8 + body.count)
        b.replaceSubrange(8..., with: body)
        b.withUnsafeMutableBytes { ICMPv4View.emit(into: $0.baseAddress!, type: type, code: code, rest: rest, bodyLength: body.count) }
        return b
    }
    static func udpFrame(from: IPEndpoint, to: IPEndpoint, _ payload: [UInt8]) -> [UInt8] {
        ethernet(type: EtherType.ipv4, ipv4(src: from.address.v4, dst: to.address.v4, proto: IPProtocol.udp, udp(src: from, dst: to, payload)))
    }
    static func pingFrame(id: UInt16 = 7, seq: UInt16 = 1, _ data: [UInt8], dst: IPv4Address = ourIP) -> [UInt8] {
        ethernet(type: EtherType.ipv4, ipv4(dst: dst, proto: IPProtocol.icmp,
                                            icmp(type: ICMPv4Type.echoRequest, rest: UInt32(id) << 16 | UInt32(seq), data)))
    }
}

/// A parsed IPv4 frame the stack sent (values copied out of the views).
struct SentIP {
    var ethDst: MACAddress
    var src: IPv4Address, dst: IPv4Address
    var proto: UInt8, id: UInt16, ttl: UInt8
    var df: Bool, mf: Bool, offset: Int
    var payload: [UInt8]
}

func parseIP(_ f: [UInt8]) -> SentIP? {
    f.withUnsafeBytes { raw -> SentIP? in
        guard let eth = try? EthernetHeaderView(raw), eth.etherType == EtherType.ipv4,
              let ip = try? IPv4HeaderView(eth.payload) else { return nil }
        return SentIP(ethDst: eth.destination, src: ip.source, dst: ip.destination, proto: ip.protocolNumber,
                      id: ip.identification, ttl: ip.ttl, df: ip.dontFragment, mf: ip.moreFragments,
                      offset: ip.fragmentOffset, payload: Array(ip.payload))
    }
}

struct SentARP { var ethDst: MACAddress; var op: UInt16; var sha: MACAddress; var spa: IPv4Address; var tha: MACAddress; var tpa: IPv4Address }

func parseARP(_ f: [UInt8]) -> SentARP? {
    f.withUnsafeBytes { raw -> SentARP? in
        guard let eth = try? EthernetHeaderView(raw), eth.etherType == EtherType.arp,
              let a = try? ARPPacketView(eth.payload) else { return nil }
        return SentARP(ethDst: eth.destination, op: a.operation, sha: a.senderHardwareAddress, spa: a.senderProtocolAddress,
                       tha: a.targetHardwareAddress, tpa: a.targetProtocolAddress)
    }
}

/// Joins fragments (any order) into the whole L4 payload; nil if incomplete.
func reassemble(_ frags: [SentIP]) -> [UInt8]? {
    let sorted = frags.sorted { $0.offset < $1.offset }
    var out: [UInt8] = []
    for f in sorted {
        guard f.offset == out.count else { return nil }
        out += f.payload
    }
    guard let last = sorted.last, !last.mf else { return nil }
    return out
}

func pattern(_ n: Int, seed: Int = 0) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ ($0 >> 8) &+ seed) } }

// IPv4 conveniences for tests written against the IPv4-only API.
extension TCPLayer {
    func receive(src: IPv4Address, dst: IPv4Address, segment: UnsafeRawBufferPointer, now: Instant,
                 tx: some IPTransmitter) {
        receive(src: IPAddress(src), dst: IPAddress(dst), segment: segment, now: now, tx: tx)
    }
}
func == (a: IPAddress, b: IPv4Address) -> Bool { a == IPAddress(b) }
func == (a: IPAddress?, b: IPv4Address) -> Bool { a == IPAddress(b) }
