import ArgumentParser
import Foundation
import Synchronization
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

// ztctl capture: ztapd hands over a socket that carries the network's frames (both directions,
// as the stack sees them; ZTControl/Capture.swift has the format); this writes them as a pcap
// file or prints a line per frame.

/// Set by SIGINT/SIGTERM/SIGHUP: stop after the frame at hand and print the totals.
private let stopRequested = Atomic<Bool>(false)

struct Capture: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Capture a network's frames, both directions as its stack sees them (pcap for tcpdump and Wireshark).",
        discussion: """
        Without -w, prints one line per frame. With -w FILE, writes a pcap file (classic libpcap \
        format, Ethernet, microsecond timestamps); -w - writes it to standard output, so

          ztctl capture lab -w - | tcpdump -n -r -

        works. Stops after -c COUNT frames, on SIGINT/SIGTERM, or when the network goes away \
        (exit status 1); then prints how many frames were captured and how many ztapd dropped \
        because this reader was too slow (a capture never slows the network down: its frames \
        are dropped instead, from a 4 MiB buffer).

        Capturing needs the right to control ztapd (root, ControlUsers=, ControlGroup=): frames \
        carry every user's traffic, so the users a network's [Access] admits may not capture it.
        """)
    @ParentCommand var ztctl: ZTCtl
    @OptionGroup(title: "Global options") var globals: GlobalOptions
    var g: GlobalOptions { ztctl.global.merged(globals) }
    @Argument(help: "Network name.") var name: String
    @Option(name: [.customShort("w"), .customLong("write")], help: ArgumentHelp("Write a pcap file to FILE (- for standard output).", valueName: "file"))
    var file: String?
    @Option(name: [.customShort("c"), .customLong("count")], help: ArgumentHelp("Stop after COUNT frames.", valueName: "count"))
    var count: Int?

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        let json = g.json
        let client = ControlClient(runDir: g.resolvedRunDir)
        let answer: (response: ControlResponse, fd: Int32?)
        do {
            answer = try client.sendReceivingFD(ControlRequest(command: .capture, name: name))
        } catch {
            FileHandle.standardError.write(Data("ztctl: \(error)\n".utf8))
            throw ExitCode(Exit.unreachable)
        }
        guard answer.response.ok, let fd = answer.fd, let info = answer.response.capture else {
            if let fd = answer.fd { close(fd) }
            let r = answer.response
            FileHandle.standardError.write(Data("ztctl: \(r.ok ? "ztapd answered without a capture socket" : r.error ?? "failed")\n".utf8))
            throw ExitCode(r.errno == EACCES ? Exit.denied : Exit.failed)
        }
        defer { close(fd) }

        var out: Int32 = -1
        if let file {
            out = file == "-" ? STDOUT_FILENO : open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard out >= 0 else {
                FileHandle.standardError.write(Data("ztctl: cannot write \(file): \(String(cString: strerror(errno)))\n".utf8))
                throw ExitCode(Exit.failed)
            }
        }
        defer { if out > STDOUT_FILENO { close(out) } }
        Self.installStopHandlers()
        if out >= 0 {
            let header = Pcap.fileHeader(snapLength: info.snapLength, linkType: info.linkType)
            guard Self.writeAll(out, header[...]) else { return }
            if file != "-" {
                FileHandle.standardError.write(Data("ztctl: capturing \(info.network) (interface \(info.interface)) to \(file!)\n".utf8))
            }
        }
        let result = Self.loop(fd: fd, out: out, limit: count, json: json)
        var summary = "\(result.frames) frame\(result.frames == 1 ? "" : "s") captured"
        summary += ", \(result.dropped) dropped by ztapd (reader too slow)"
        FileHandle.standardError.write(Data("ztctl: \(summary)\n".utf8))
        if result.ended {
            FileHandle.standardError.write(Data("ztctl: capture ended by ztapd (network \(name) left or daemon stopped)\n".utf8))
            throw ExitCode(Exit.failed)
        }
    }

    struct Result { var frames = 0; var dropped: UInt64 = 0; var ended = false }

    /// Reads messages until the limit, a stop signal, EOF (ended) or a closed output.
    static func loop(fd: Int32, out: Int32, limit: Int?, json: Bool) -> Result {
        var r = Result()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 17, alignment: 8)
        defer { buffer.deallocate() }
        while limit.map({ r.frames < $0 }) ?? true {
            // Once stopped, what is already queued is still written (non-blocking), then done.
            let stopping = stopRequested.load(ordering: .relaxed)
            let n = recv(fd, buffer.baseAddress, buffer.count, stopping ? Int32(MSG_DONTWAIT) : 0)
            if n < 0 {
                if errno == EINTR { continue }
                if !stopping { r.ended = true }
                break
            }
            if n == 0 { r.ended = true; break }
            let m = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            guard let msg = CaptureWire.decode(m) else { continue }
            r.dropped &+= UInt64(msg.dropped)
            r.frames += 1
            if out >= 0 {
                // The pcap record is the message minus its 8-byte prefix.
                guard writeAll(out, UnsafeRawBufferPointer(rebasing: m[CaptureWire.prefixSize...])) else { break }
            } else {
                let frame = UnsafeRawBufferPointer(rebasing: m[CaptureWire.headerSize...])
                let line = json ? jsonLine(msg, frame) : textLine(msg, frame)
                guard writeAll(STDOUT_FILENO, Array((line + "\n").utf8)[...]) else { break }
            }
        }
        return r
    }

    static func textLine(_ m: CaptureWire.Message, _ frame: UnsafeRawBufferPointer) -> String {
        var t = time_t(m.seconds)
        var tmv = tm()
        localtime_r(&t, &tmv)
        let stamp = String(format: "%02d:%02d:%02d.%06u", tmv.tm_hour, tmv.tm_min, tmv.tm_sec, m.micros)
        return "\(stamp) \(m.outbound ? "out" : "in ") \(FrameSummary.describe(frame))"
    }

    static func jsonLine(_ m: CaptureWire.Message, _ frame: UnsafeRawBufferPointer) -> String {
        struct Line: Encodable { var time: Double; var direction: String; var length: Int; var summary: String }
        let l = Line(time: Double(m.seconds) + Double(m.micros) / 1e6, direction: m.outbound ? "out" : "in",
                     length: m.originalLength, summary: FrameSummary.describe(frame))
        return String(decoding: ControlCodec.encodeLine(l).dropLast(), as: UTF8.self)
    }

    /// False when the output is gone (EPIPE: `tcpdump -c` exited) or failing.
    static func writeAll(_ fd: Int32, _ bytes: some Collection<UInt8>) -> Bool {
        Array(bytes).withUnsafeBytes { writeAll(fd, $0) }
    }

    /// False when the output is gone (EPIPE: `tcpdump -c` exited) or failing.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                if errno != EPIPE { FileHandle.standardError.write(Data("ztctl: write: \(String(cString: strerror(errno)))\n".utf8)) }
                return false
            }
            off += n
        }
        return true
    }

    /// SIGINT/SIGTERM/SIGHUP interrupt the blocking recv (no SA_RESTART) and end the loop;
    /// SIGPIPE is ignored so that a reader that exits shows up as EPIPE.
    static func installStopHandlers() {
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { _ in stopRequested.store(true, ordering: .relaxed) }
        sa.sa_flags = 0
        sigemptyset(&sa.sa_mask)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaction(s, &sa, nil) }
        signal(SIGPIPE, SIG_IGN)
    }
}
