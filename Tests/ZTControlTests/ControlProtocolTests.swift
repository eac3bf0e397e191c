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
        #expect(ControlCommand.allCases.map(\.rawValue) == ["status", "list", "join", "leave", "get", "set", "reload", "connections"])
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
}
