import CShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum ControlClientError: Error, CustomStringConvertible {
    case cannotConnect(path: String, errno: Int32)
    case io(String, errno: Int32)
    case badResponse(String)
    case closedWithoutResponse(path: String)

    public var description: String {
        switch self {
        case let .cannotConnect(path, e):
            let hint = (e == ENOENT || e == ECONNREFUSED) ? " (is ztapd running with this --run-dir?)" : ""
            return "cannot connect to \(path): \(String(cString: strerror(e)))\(hint)"
        case let .io(what, e): return "\(what): \(String(cString: strerror(e)))"
        case let .badResponse(text): return "malformed response from ztapd: \(text)"
        case let .closedWithoutResponse(path): return "ztapd closed \(path) without answering"
        }
    }
    public var errnoValue: Int32? {
        switch self {
        case let .cannotConnect(_, e), let .io(_, e): return e
        default: return nil
        }
    }
}

/// A blocking control-socket client for ztctl and tests: one request, one response.
public struct ControlClient {
    public var socketPath: String
    /// Gives up on a silent daemon instead of hanging.
    public var timeoutSeconds: Int = 30

    public init(runDir: String) { socketPath = runDir + "/control.sock" }

    public func send(_ request: ControlRequest) throws(ControlClientError) -> ControlResponse {
        let fd = cshim_socket_cloexec(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .io("socket", errno: errno) }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard cshim_connect_unix(fd, socketPath) == 0 else { throw .cannotConnect(path: socketPath, errno: errno) }
        let line = ControlCodec.encodeLine(request)
        var off = 0
        while off < line.count {
            let n = line.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                // The daemon may have refused us and closed: its answer can still be read.
                if errno == EPIPE || errno == ECONNRESET { break }
                throw .io("send to \(socketPath)", errno: errno)
            }
            off += n
        }
        var buf = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET && !buf.isEmpty { break }
                throw .io("read from \(socketPath)", errno: errno)
            }
            if n == 0 { break }
            buf.append(contentsOf: chunk[0..<n])
            if buf.last == 0x0A { break }
        }
        guard !buf.isEmpty else { throw .closedWithoutResponse(path: socketPath) }
        if let nl = buf.firstIndex(of: 0x0A) { buf = Array(buf[..<nl]) }
        do {
            return try ControlCodec.decode(ControlResponse.self, from: buf)
        } catch {
            throw .badResponse(String(decoding: buf.prefix(200), as: UTF8.self))
        }
    }
}
