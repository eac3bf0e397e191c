import CShims
import Foundation
import Glibc
import Testing
@testable import ZTControl

/// The control protocol's codec and the blocking client, against a scripted server.
@Suite struct ControlProtocolTests {
    @Test func requestRoundTripIsOneLine() throws {
        var r = ControlRequest(command: .join, name: "lab")
        var j = JoinOptions()
        j.addresses = ["10.9.0.2/24"]
        j.mtu = 2800
        r.join = j
        let line = ControlCodec.encodeLine(r)
        #expect(line.last == 0x0A)
        #expect(line.dropLast().contains(0x0A) == false)
        let back = try ControlCodec.decode(ControlRequest.self, from: line.dropLast())
        #expect(back == r)
    }

    @Test func responsesKeepErrno() throws {
        let f = ControlResponse.failure("no network named x", errno: ENOENT)
        let back = try ControlCodec.decode(ControlResponse.self, from: ControlCodec.encodeLine(f).dropLast())
        #expect(back == f && back.errno == ENOENT && !back.ok)
    }

    @Test func unknownCommandsAndBrokenJSONDoNotDecode() {
        #expect(throws: (any Error).self) { try ControlCodec.decode(ControlRequest.self, from: Array(#"{"command":"explode","version":1}"#.utf8)) }
        #expect(throws: (any Error).self) { try ControlCodec.decode(ControlRequest.self, from: Array("{\"command\":".utf8)) }
        #expect(throws: (any Error).self) { try ControlCodec.decode(ControlRequest.self, from: Array(#"{"version":1}"#.utf8)) }
    }

    @Test func everyCommandHasAStableWireName() {
        #expect(ControlCommand.allCases.map(\.rawValue) == ["status", "list", "join", "leave", "get", "set", "reload", "connections",
                                                            "capture", "metrics"])
    }

    /// A one-shot server on a fresh socket path: reads one line, answers `answer` (nil: closes).
    final class Server: @unchecked Sendable {
        let dir: String
        let fd: Int32
        let thread: Thread
        init(answer: [UInt8]?, delay: useconds_t = 0) {
            dir = NSTemporaryDirectory() + "ztctl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            fd = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            precondition(cshim_bind_unix(fd, dir + "/control.sock") == 0 && listen(fd, 4) == 0)
            let lfd = fd
            thread = Thread {
                let c = accept(lfd, nil, nil)
                guard c >= 0 else { return }
                var buf = [UInt8](repeating: 0, count: 4096)
                _ = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
                if delay > 0 { usleep(delay) }
                if let answer { _ = answer.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
                close(c)
            }
            thread.start()
        }
        deinit {
            close(fd)
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    @Test func clientGetsTheAnswer() throws {
        let s = Server(answer: ControlCodec.encodeLine(ControlResponse.success("hi")))
        let r = try ControlClient(runDir: s.dir).send(ControlRequest(command: .status))
        #expect(r.ok && r.message == "hi")
    }

    @Test func clientReportsEachFailureClearly() {
        let closed = Server(answer: nil)
        #expect(throws: ControlClientError.self) { try ControlClient(runDir: closed.dir).send(ControlRequest(command: .list)) }
        do {
            _ = try ControlClient(runDir: closed.dir + "/missing").send(ControlRequest(command: .list))
            Issue.record("no error")
        } catch {
            #expect(error.errnoValue == ENOENT)
            #expect(error.description.contains("is ztapd running"))
        }
        let garbage = Server(answer: Array("not json\n".utf8))
        do {
            _ = try ControlClient(runDir: garbage.dir).send(ControlRequest(command: .list))
            Issue.record("no error")
        } catch {
            guard case .badResponse(let t) = error else { Issue.record("\(error)"); return }
            #expect(t == "not json")
        }
    }

    @Test func silentDaemonTimesOut() {
        let s = Server(answer: ControlCodec.encodeLine(ControlResponse.success()), delay: 2_500_000)
        var c = ControlClient(runDir: s.dir)
        c.timeoutSeconds = 1
        do {
            _ = try c.send(ControlRequest(command: .status))
            Issue.record("no timeout")
        } catch {
            #expect(error.errnoValue == EAGAIN)
        }
    }

    /// A one-shot server that answers with `answer` and passes `passFD` (SCM_RIGHTS) with it.
    static func serveWithFD(_ answer: [UInt8], passFD: Int32) -> (dir: String, thread: Thread) {
        let dir = NSTemporaryDirectory() + "ztctl-fd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let lfd = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        precondition(cshim_bind_unix(lfd, dir + "/control.sock") == 0 && listen(lfd, 4) == 0)
        let t = Thread {
            let c = accept(lfd, nil, nil)
            close(lfd)
            guard c >= 0 else { return }
            var buf = [UInt8](repeating: 0, count: 4096)
            _ = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
            var fds = [passFD]
            let space = Int(cshim_cmsg_rights_space(1))
            var control = [UInt8](repeating: 0, count: space)
            var bytes = answer
            bytes.withUnsafeMutableBytes { b in
                var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
                control.withUnsafeMutableBytes { cb in
                    var msg = msghdr()
                    withUnsafeMutablePointer(to: &iov) { v in
                        msg.msg_iov = v
                        msg.msg_iovlen = 1
                        msg.msg_control = cb.baseAddress
                        msg.msg_controllen = Int(cshim_cmsg_put_rights(cb.baseAddress, space, &fds, 1))
                        _ = sendmsg(c, &msg, Int32(MSG_NOSIGNAL))
                    }
                }
            }
            close(c)
        }
        t.start()
        return (dir, t)
    }

    @Test func passedFDArrivesWithTheAnswerOrIsClosed() throws {
        var p: [Int32] = [-1, -1]
        #expect(pipe(&p) == 0)
        defer { close(p[0]); close(p[1]) }
        var r = ControlResponse(ok: true)
        r.capture = CaptureInfo(network: "lab", interface: "ztlab0", bufferBytes: 1)
        let s = Self.serveWithFD(ControlCodec.encodeLine(r), passFD: p[0])
        let (answer, fd) = try ControlClient(runDir: s.dir).sendReceivingFD(ControlRequest(command: .capture, name: "lab"))
        #expect(answer == r)
        let got = try #require(fd)
        // It is the pipe's read end: what is written to the pipe comes out of it.
        #expect(write(p[1], "x", 1) == 1)
        var c: UInt8 = 0
        #expect(read(got, &c, 1) == 1 && c == UInt8(ascii: "x"))
        #expect(fcntl(got, F_GETFD) & FD_CLOEXEC != 0)
        close(got)

        // Plain send() does not keep a passed fd: once the test closes its own copy, the other
        // end of the pair sees the hang-up, so no copy is left in this process.
        var sp: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sp) == 0)
        let s2 = Self.serveWithFD(ControlCodec.encodeLine(ControlResponse.success()), passFD: sp[0])
        _ = try ControlClient(runDir: s2.dir).send(ControlRequest(command: .status))
        while !s2.thread.isFinished { usleep(1000) }
        close(sp[0])
        var pfd = pollfd(fd: sp[1], events: Int16(POLLIN), revents: 0)
        #expect(poll(&pfd, 1, 1000) == 1 && pfd.revents & Int16(POLLHUP) != 0)
        close(sp[1])
    }
}
