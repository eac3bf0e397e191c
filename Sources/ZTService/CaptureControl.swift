import CShims
import Foundation
import PhyLoop
import SystemPackage
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

/// `capture` on the control socket: the answer line carries the reader's end of a new
/// SOCK_SEQPACKET socketpair (SCM_RIGHTS), the network loop gets the other end (Capture.swift).
/// Only peers allowed to control ztapd get here: frames carry every user's traffic, so [Access]
/// users are refused like for any other control command. The connection is closed after the
/// answer: the capture lives on in the passed socket, not on control.sock.
extension Daemon {
    func startCapture(_ socket: PhySocket<Context>, _ peer: ControlPeer, _ request: ControlRequest) {
        var clientEnd: Int32 = -1
        let response = prepareCapture(request.name, clientEnd: &clientEnd)
        controlStats.count(request.command.rawValue, response.ok ? "ok" : "error")
        defer { if clientEnd >= 0 { loop.sys.close(clientEnd) } }
        // ztctl sends nothing before a capture request; answers still queued would be overtaken.
        guard peer.output.isEmpty else {
            loop.close(socket)
            return
        }
        let line = ControlCodec.encodeLine(response)
        let sent: IOResult<Int>? = line.withUnsafeBytes { b in
            if clientEnd >= 0 {
                return [clientEnd].withUnsafeBufferPointer { fds in try? loop.sys.sendWithFDs(socket.fd, b, fds: fds) }
            }
            return try? loop.sys.send(socket.fd, b)
        }
        if case .processed(let n)? = sent, n == line.count {} else {
            logger.notice("control: capture answer not delivered", metadata: ["pid": "\(peer.pid)"])
        }
        loop.sys.shutdown(socket.fd, Int32(SHUT_WR))
        loop.close(socket)
    }

    private func prepareCapture(_ rawName: String?, clientEnd: inout Int32) -> ControlResponse {
        let name: String
        switch validName(rawName) {
        case .success(let n): name = n
        case .failure(let e): return .failure(e.message, errno: e.errno)
        }
        guard let n = networks[name] else {
            let why = failed[name] != nil ? "network \(name) is not running (ztctl list says why)" : "no running network named \(name)"
            return .failure(why, errno: ENOENT)
        }
        let pair: (Int32, Int32)
        do {
            pair = try loop.sys.socketpair(type: Int32(SOCK_SEQPACKET.rawValue))
            try Sys.setNonBlocking(pair.0)
        } catch {
            return .failure("capture: socketpair: \(error)", errno: error.rawValue)
        }
        guard n.ask({ .capture(fd: pair.0, $0) }) == true else {
            // The loop closes the fd it was handed, also when it stops before taking it.
            loop.sys.close(pair.1)
            return .failure("network \(name) did not take the capture (stopping?)", errno: EAGAIN)
        }
        clientEnd = pair.1
        var r = ControlResponse(ok: true)
        r.capture = CaptureInfo(network: name, interface: n.interfaceName, bufferBytes: FrameCaptures.bufferBytes)
        return r
    }
}
