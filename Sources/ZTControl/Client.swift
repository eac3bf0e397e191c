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
        try exchange(request, acceptFD: false).response
    }

    /// Like `send`, and returns the fd ztapd passed with the answer (SCM_RIGHTS), e.g. the
    /// socket of a `capture`; the caller owns it. nil if none came.
    public func sendReceivingFD(_ request: ControlRequest) throws(ControlClientError) -> (response: ControlResponse, fd: Int32?) {
        try exchange(request, acceptFD: true)
    }

    private func exchange(_ request: ControlRequest, acceptFD: Bool) throws(ControlClientError) -> (response: ControlResponse, fd: Int32?) {
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
        var passed: Int32?
        var failure: ControlClientError?
        while true {
            let n = chunk.withUnsafeMutableBytes { receive(fd, into: $0, passed: &passed) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET && !buf.isEmpty { break }
                failure = .io("read from \(socketPath)", errno: errno)
                break
            }
            if n == 0 { break }
            buf.append(contentsOf: chunk[0..<n])
            if buf.last == 0x0A { break }
        }
        if !acceptFD, let p = passed { close(p); passed = nil }
        let result = Self.decodeAnswer(buf, failure: failure, path: socketPath)
        if case .failure = result, let p = passed { close(p) }
        return (try result.get(), passed)
    }

    private static func decodeAnswer(_ bytes: [UInt8], failure: ControlClientError?, path: String)
        -> Result<ControlResponse, ControlClientError> {
        if let failure { return .failure(failure) }
        guard !bytes.isEmpty else { return .failure(.closedWithoutResponse(path: path)) }
        let line = bytes.firstIndex(of: 0x0A).map { Array(bytes[..<$0]) } ?? bytes
        guard let r = try? ControlCodec.decode(ControlResponse.self, from: line) else {
            return .failure(.badResponse(String(decoding: line.prefix(200), as: UTF8.self)))
        }
        return .success(r)
    }

    /// recvmsg that keeps at most one passed fd (close-on-exec); any further fd is closed.
    private func receive(_ fd: Int32, into b: UnsafeMutableRawBufferPointer, passed: inout Int32?) -> Int {
        var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
        let space = Int(cshim_cmsg_rights_space(4))
        return withUnsafeTemporaryAllocation(byteCount: space, alignment: 16) { control in
            withUnsafeMutablePointer(to: &iov) { v in
                var msg = msghdr()
                msg.msg_iov = v
                msg.msg_iovlen = 1
                msg.msg_control = control.baseAddress
                msg.msg_controllen = space
                let n = recvmsg(fd, &msg, Int32(MSG_CMSG_CLOEXEC))
                guard n >= 0 else { return n }
                var fds: [Int32] = [-1, -1, -1, -1]
                var count: Int32 = 0
                _ = cshim_cmsg_take_rights(&msg, &fds, 4, &count)
                for f in fds.prefix(Int(count)) {
                    if passed == nil { passed = f } else { close(f) }
                }
                return n
            }
        }
    }
}
