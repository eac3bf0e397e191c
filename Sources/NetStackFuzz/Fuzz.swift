// NetStackFuzz — feeds arbitrary bytes to NetStack.receive as Ethernet frames.
//
// Built two ways (see scripts/fuzz.sh):
//  * fuzzing: `-D NETSTACK_LIBFUZZER -sanitize=fuzzer,address`: no @main, libFuzzer provides
//    `main` and calls `LLVMFuzzerTestOneInput` below;
//  * plain `swift build`: a small replayer (`NetStackFuzz FILE...`) that runs the same harness
//    on corpus or crash files, so the target always links and crashes can be reproduced.
//
// Input format: a sequence of records `[advance: 1 byte][length: 2 bytes LE][frame bytes]`;
// a short tail is fed as one last frame. The advance byte's low 7 bits are milliseconds; its
// high bit makes the record a TAP frame with a virtio header (`receive(virtioFrame:)`: header
// parse, partial/verified checksums, TCP super-segments, UDP super-datagrams). Each input gets a
// fresh stack (reproducible runs), dual stack (10.0.0.1/24 and fd00::1/64, addresses usable at
// once, no DAD), with TCP listeners, a UDP socket, all diagnostic services (all on `::`, so both
// families reach them), and an ARP entry for the peer; when the first record is a virtio one the stack's sink has every
// offload too (TSO super-segments and partial checksums out, payload gathered from the rings).
import NetStack

final class CountingSink: FrameSink {
    var frames = 0
    var bytes = 0
    let transmitOffloads: TransmitOffloads
    init(offloads: TransmitOffloads) { transmitOffloads = offloads }
    func sendFrame(_ frame: UnsafeRawBufferPointer) {
        frames &+= 1
        bytes &+= frame.count
    }
    func sendFrame(head: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, _ more: UnsafeRawBufferPointer,
                   offload: FrameOffload) {
        frames &+= 1
        bytes &+= head.count &+ payload.count &+ more.count
        // Touch every byte the stack claims to send: a dangling region shows up under ASan.
        var x: UInt8 = 0
        for b in payload { x ^= b }
        for b in more { x ^= b }
        bytes &+= Int(x & 1)
    }
}

func runFuzzInput(_ input: UnsafeRawBufferPointer) {
    let sink = CountingSink(offloads: input.count > 0 && input[0] & 0x80 != 0 ? .all : [])
    var cfg = StackConfig(mac: MACAddress(0x02, 0, 0, 0, 0, 0x01), mtu: 1500,
                          addresses: [IPv4CIDR(address: IPv4Address(10, 0, 0, 1), prefixLength: 24)],
                          gateway: IPv4Address(10, 0, 0, 254), services: [.echo, .discard, .chargen])
    cfg.addresses6 = [IPv6CIDR(address: IPAddress(hi: 0xFD00_0000_0000_0000, lo: 1), prefixLength: 64)]
    cfg.gateway6 = IPAddress(hi: 0xFE80_0000_0000_0000, lo: 0xFE)
    cfg.dadTransmits = 0
    let stack = NetStack(config: cfg, sink: sink, random: XorShiftRandom(seed: 1))
    var now = Instant.milliseconds(1000)
    _ = try? stack.tcp.listen(local: IPEndpoint(.v6Any, 80), backlog: 8, now: now)
    let udp = try? stack.udpOpen(local: IPEndpoint(.v6Any, 5000))
    stack.up(now: now)
    var scratch = [UInt8](repeating: 0, count: 2048)
    var i = 0
    while i < input.count {
        guard i &+ 3 <= input.count else {
            stack.receive(frame: UnsafeRawBufferPointer(rebasing: input[i...]), now: now)
            break
        }
        now = now + .milliseconds(UInt64(input[i] & 0x7F))
        let virtio = input[i] & 0x80 != 0
        let len = Int(input[i &+ 1]) | Int(input[i &+ 2]) << 8
        let start = i &+ 3
        let end = min(input.count, start &+ len)
        let frame = UnsafeRawBufferPointer(rebasing: input[start..<end])
        if virtio { stack.receive(virtioFrame: frame, now: now) } else { stack.receive(frame: frame, now: now) }
        _ = stack.poll(now: now)
        stack.drainEvents { ev in
            // Act like a driver: accept, read and answer, so more code paths run.
            switch ev {
            case let .acceptable(l):
                while let c = try? stack.tcp.accept(l, now: now) { _ = c }
            case let .readable(h):
                if h.isUDP {
                    scratch.withUnsafeMutableBytes { buf in
                        while let r = try? stack.udpReceive(h, into: buf) {
                            try? stack.udpSend(h, to: r.from, UnsafeRawBufferPointer(rebasing: buf[0..<r.count]), now: now)
                        }
                    }
                } else {
                    _ = scratch.withUnsafeMutableBytes { try? stack.tcp.receive(h, into: $0, now: now) }
                }
            case let .closed(h), let .failed(h, _):
                if !h.isUDP { stack.tcp.release(h, now: now) }
            default:
                break
            }
        }
        i = end
    }
    // Let every timer run out (ARP give-up, reassembly expiry, TCP retransmissions).
    for _ in 0..<8 {
        guard let d = stack.poll(now: now) else { break }
        now = max(now, d)
    }
    if let u = udp { stack.udpClose(u) }
}

#if NETSTACK_LIBFUZZER
import Glibc

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    runFuzzInput(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// SwiftPM links executables with `main` aliased to `<Target>_main`, so we provide that symbol
/// and hand control to libFuzzer's documented custom-main entry, `LLVMFuzzerRunDriver`
/// (looked up with dlsym: it is C, and no module declares it).
@_cdecl("NetStackFuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    typealias Callback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    typealias Driver = @convention(c) (UnsafeMutablePointer<CInt>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>, Callback) -> CInt
    guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "LLVMFuzzerRunDriver") else {
        let msg = "LLVMFuzzerRunDriver not linked: build with -sanitize=fuzzer\n"
        _ = msg.withCString { write(2, $0, strlen($0)) }
        return 2
    }
    let driver = unsafeBitCast(sym, to: Driver.self)
    var c = argc
    var v = argv
    return driver(&c, &v, fuzzTestOneInput)
}
#else
import Foundation

/// Replays fuzz inputs (corpus files or crash reproducers) through the same harness.
@main
enum Replayer {
    static func main() {
        let files = CommandLine.arguments.dropFirst()
        if files.isEmpty {
            FileHandle.standardError.write(Data("usage: NetStackFuzz FILE... (replays fuzz inputs; scripts/fuzz.sh fuzzes)\n".utf8))
        }
        var ran = 0
        for path in files {
            guard let d = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
                continue
            }
            d.withUnsafeBytes { runFuzzInput($0) }
            ran += 1
        }
        FileHandle.standardError.write(Data("replayed \(ran) input(s) without a crash\n".utf8))
    }
}
#endif
