// ZTapFuzz — libFuzzer targets for ztapd's trust boundaries, one binary, the target chosen by
// $ZTAP_FUZZ_TARGET (scripts/fuzz.sh sets it):
//  * rpc      the intercept's RPC decoder and the hub's handling of a request, fds included
//             (ServiceFuzz.rpc: a real RPC connection to a persistent network's hub);
//  * control  the control protocol: ControlCodec and Daemon.handle of arbitrary requests, for a
//             user allowed to control ztapd and one who is not (ServiceFuzz.control);
//  * ini      the INI parser and the config models: parse, render, edit, parse again.
// Built like NetStackFuzz (see its header): with -D NETSTACK_LIBFUZZER and
// -sanitize=fuzzer,address for fuzzing, else a replayer: `ZTapFuzz TARGET FILE...`.
// Corpora: Tests/Fuzz/rpc, Tests/Fuzz/control, Tests/Fuzz/ini.
@_spi(Fuzzing) import ZTService
import ZTConfig

/// INI text: whatever parses renders back byte for byte, survives an edit, and a network's
/// model renders to a file that parses back to the same model.
func fuzzINI(_ data: UnsafeRawBufferPointer) {
    let text = String(decoding: data, as: UTF8.self)
    if var doc = try? INIDocument(text: text, file: "fuzz.conf") {
        precondition(Array(doc.render().utf8) == Array(text.utf8), "render is not byte-for-byte")
        doc.set(section: "Network", key: "MTU", values: ["1500"])
        doc.set(section: "Access", key: "AllowUsers", values: ["alice", "bob"])
        let edited = doc.render()
        guard let again = try? INIDocument(text: edited, file: "fuzz.conf") else {
            preconditionFailure("an edit made the document unparsable")
        }
        precondition(again.values(section: "Network", key: "MTU") == ["1500"])
    }
    _ = try? DaemonConfig.parse(text: text, file: "ztapd.conf")
    if let c = try? NetworkConfig.parse(text: text, name: "fuzz", file: "fuzz.conf") {
        precondition((try? NetworkConfig.parse(text: c.renderNewFile(), name: "fuzz", file: "new.conf")) == c,
                     "renderNewFile does not parse back to the same network")
    }
}

enum Target: String {
    case rpc, control, ini

    func run(_ data: UnsafeRawBufferPointer) {
        switch self {
        case .rpc: ServiceFuzz.rpc(data)
        case .control: ServiceFuzz.control(data)
        case .ini: fuzzINI(data)
        }
    }
}

#if NETSTACK_LIBFUZZER
import Glibc

/// Read once: libFuzzer calls the entry on one thread.
nonisolated(unsafe) let selected: Target = {
    guard let v = getenv("ZTAP_FUZZ_TARGET"), let t = Target(rawValue: String(cString: v)) else {
        let msg = "set ZTAP_FUZZ_TARGET to rpc, control or ini (scripts/fuzz.sh does)\n"
        _ = msg.withCString { write(2, $0, strlen($0)) }
        exit(2)
    }
    return t
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_cdecl("ZTapFuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    typealias Callback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    typealias Driver = @convention(c) (UnsafeMutablePointer<CInt>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>, Callback) -> CInt
    _ = selected
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

/// Replays inputs through a target: `ZTapFuzz rpc|control|ini FILE...`.
@main
enum Replayer {
    static func main() {
        var args = CommandLine.arguments.dropFirst()
        guard let name = args.popFirst(), let target = Target(rawValue: name) else {
            FileHandle.standardError.write(Data("usage: ZTapFuzz rpc|control|ini FILE... (replays fuzz inputs; scripts/fuzz.sh fuzzes)\n".utf8))
            return
        }
        var ran = 0
        for path in args {
            guard let d = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
                continue
            }
            d.withUnsafeBytes { target.run($0) }
            ran += 1
        }
        FileHandle.standardError.write(Data("replayed \(ran) input(s) through \(name) without a crash\n".utf8))
    }
}
#endif
