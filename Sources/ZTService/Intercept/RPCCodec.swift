import CShims
import CZTRPC
import NetStack
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// RPCCodec — pure decoding and encoding of the ztrpc.h messages (no fds, no sockets). The
// structs come from the header itself (CZTRPC), so there is no second definition to drift.

/// A request's header fields that every reply echoes.
struct RPCHeader: Equatable {
    var op: UInt16
    var id: UInt32
    /// ZTRPC_OP_NOREPLY was set: the library is not waiting; apply and hang up.
    var noReply = false
    /// ZTRPC_OP_KEEP was set: the connection is a session and stays open after the reply.
    var keep = false
}

/// A well-formed request body.
enum RPCRequest {
    /// The creating requests carry the options set before interception beyond ztrpc_sockopts.
    case connect(ztrpc_sock_req, [SocketOptionRecord])
    case bind(ztrpc_sock_req, [SocketOptionRecord])
    case udpOpen(ztrpc_sock_req, [SocketOptionRecord])
    case listen(ztrpc_listen_req)
    case getsockopt(ztrpc_sockopt)
    case setsockopt(SocketOptionRecord)
    /// A one-way SETSOCKOPT that names its socket by reference instead of an fd (ztrpc.h
    /// "References"); decoded only with ZTRPC_OP_NOREPLY.
    case setsockoptByRef(SocketOptionRecord, ztrpc_sockref)
    case getname
    /// A new data socketpair for a socket a failed connect left without one (ztrpc.h RENEW).
    case renew
    /// A pipe to read as the process's one-way channel (ztrpc.h ZTRPC_OP_CHANNEL; fds[0]).
    case channel
    /// An op this daemon does not know (answered EOPNOTSUPP).
    case unknown(UInt16)

    /// Whether the request creates presence on the network (a new socket, an address, a
    /// destination): what `[Access]` decides. Everything else acts on a socket the caller
    /// already holds, and holding the fd is the permission, as in the kernel.
    /// The only requests ZTRPC_OP_NOREPLY may carry: options Linux accepts on any TCP socket
    /// when optlen holds an int (ztrpc.h), so there is no answer to wait for.
    var mayGoUnanswered: Bool {
        let r: SocketOptionRecord
        switch self {
        case .setsockopt(let x), .setsockoptByRef(let x, _): r = x
        default: return false
        }
        return r.level == Int32(IPPROTO_TCP) && r.optlen >= 4 &&
            (r.name == TCP_NODELAY || r.name == TCP_CORK || r.name == TCP_QUICKACK)
    }

    /// CONNECT, BIND or UDP_OPEN with ZTRPC_F_NEW: it brings the socket's first socketpair.
    var createsNewSocket: Bool {
        switch self {
        case .connect(let r, _), .bind(let r, _), .udpOpen(let r, _): r.flags & ZTRPC_F_NEW != 0
        default: false
        }
    }

    var createsPresence: Bool {
        switch self {
        case .connect, .bind, .udpOpen, .listen: true
        case .getsockopt, .setsockopt, .setsockoptByRef, .getname, .renew, .channel, .unknown: false
        }
    }
}

/// One option as an app passed it to setsockopt: level, name, its optlen and the bytes of it
/// that travelled (at most ZTRPC_MAX_OPTLEN).
struct SocketOptionRecord: Equatable {
    var level: Int32
    var name: Int32
    var optlen: Int
    var value: [UInt8]

    init(level: Int32, name: Int32, optlen: Int, value: [UInt8]) {
        self.level = level
        self.name = name
        self.optlen = optlen
        self.value = value
    }

    /// A ztrpc_sockopt whose value is inline (pre-interception records, short SETSOCKOPTs);
    /// `extra` is what ran past the struct.
    init(_ so: ztrpc_sockopt, extra: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        level = so.level
        name = so.name
        optlen = Int(so.optlen)
        // One array, not a copy of the inline bytes and then of its prefix (every one-way option
        // makes a record).
        let n = min(optlen, Int(ZTRPC_MAX_OPTLEN))
        value = withUnsafeBytes(of: so.value) { Array($0.prefix(min(n, 16))) }
        if n > 16 { value += extra.prefix(n - 16) }
    }
}

/// What a reply carries after its header.
enum RPCReplyBody {
    case none
    case info(ztrpc_sockinfo)
    /// A GETSOCKOPT answer: the option and its value (any length up to ZTRPC_MAX_OPTLEN).
    case opt(level: Int32, name: Int32, value: OptionValue)
}

/// A request that cannot be served at all: answered with `errno` (EPROTO, EMSGSIZE), echoing
/// whatever header fields could be read.
struct RPCDecodeFailure: Error, Equatable {
    var header: RPCHeader
    var errno: Int32
}

enum RPCCodec {
    static let requestHeaderSize = MemoryLayout<ztrpc_req_hdr>.size
    static let replyHeaderSize = MemoryLayout<ztrpc_rep_hdr>.size
    /// Bytes of ztrpc_sockopt before its value.
    static let sockoptHeaderSize = MemoryLayout<ztrpc_sockopt>.size - 16
    /// Largest reply: header plus the largest body.
    static let maxReplySize = replyHeaderSize + max(MemoryLayout<ztrpc_sockinfo>.size,
                                                    sockoptHeaderSize + Int(ZTRPC_MAX_OPTLEN))

    /// Decodes one request message. `truncated`: the kernel reported MSG_TRUNC/MSG_CTRUNC.
    static func decode(_ msg: UnsafeRawBufferPointer, truncated: Bool = false)
        -> Result<(RPCHeader, RPCRequest), RPCDecodeFailure> {
        guard msg.count >= requestHeaderSize else {
            return .failure(RPCDecodeFailure(header: RPCHeader(op: 0, id: 0), errno: EPROTO))
        }
        var hdr = msg.loadUnaligned(as: ztrpc_req_hdr.self)
        let noReply = hdr.op & ZTRPC_OP_NOREPLY != 0
        let keep = hdr.op & ZTRPC_OP_KEEP != 0
        hdr.op &= ~(ZTRPC_OP_NOREPLY | ZTRPC_OP_KEEP)
        let h = RPCHeader(op: hdr.op, id: hdr.id, noReply: noReply, keep: keep)
        guard hdr.magic == ZTRPC_MAGIC, hdr.version == ZTRPC_VERSION else {
            return .failure(RPCDecodeFailure(header: h, errno: EPROTO))
        }
        guard !truncated, msg.count <= Int(ZTRPC_MAX_MSG), Int(hdr.len) == msg.count - requestHeaderSize else {
            return .failure(RPCDecodeFailure(header: h, errno: truncated ? EMSGSIZE : EPROTO))
        }
        let body = UnsafeRawBufferPointer(rebasing: msg[requestHeaderSize...])
        let request: RPCRequest
        switch hdr.op {
        case ZTRPC_OP_CONNECT:
            request = .connect(Wire.body(ztrpc_sock_req.self, from: body, zero: ztrpc_sock_req()), preOptions(body))
        case ZTRPC_OP_BIND:
            request = .bind(Wire.body(ztrpc_sock_req.self, from: body, zero: ztrpc_sock_req()), preOptions(body))
        case ZTRPC_OP_UDP_OPEN:
            request = .udpOpen(Wire.body(ztrpc_sock_req.self, from: body, zero: ztrpc_sock_req()), preOptions(body))
        case ZTRPC_OP_LISTEN: request = .listen(Wire.body(ztrpc_listen_req.self, from: body, zero: ztrpc_listen_req()))
        case ZTRPC_OP_GETSOCKOPT: request = .getsockopt(Wire.body(ztrpc_sockopt.self, from: body, zero: ztrpc_sockopt()))
        case ZTRPC_OP_SETSOCKOPT:
            let so = Wire.body(ztrpc_sockopt.self, from: body, zero: ztrpc_sockopt())
            let extra = body.count > sockoptSize ? UnsafeRawBufferPointer(rebasing: body[sockoptSize...])
                                                 : UnsafeRawBufferPointer(start: nil, count: 0)
            if noReply, body.count == sockoptSize + sockrefSize, so.optlen <= 16 {
                let ref = UnsafeRawBufferPointer(rebasing: body[sockoptSize...]).loadUnaligned(as: ztrpc_sockref.self)
                request = .setsockoptByRef(SocketOptionRecord(so), ref)
            } else {
                request = .setsockopt(SocketOptionRecord(so, extra: extra))
            }
        case ZTRPC_OP_GETNAME: request = .getname
        case ZTRPC_OP_CHANNEL: request = .channel
        case ZTRPC_OP_RENEW: request = .renew
        default: request = .unknown(hdr.op)
        }
        return .success((h, request))
    }

    static let sockReqSize = MemoryLayout<ztrpc_sock_req>.size
    static let sockoptSize = MemoryLayout<ztrpc_sockopt>.size
    static let sockrefSize = MemoryLayout<ztrpc_sockref>.size

    /// The option records after a ztrpc_sock_req (ztrpc.h): as many whole ones as the body
    /// holds, at most `count` and ZTRPC_MAX_PREOPTS.
    static func preOptions(_ body: UnsafeRawBufferPointer) -> [SocketOptionRecord] {
        let listAt = sockReqSize, first = listAt + MemoryLayout<ztrpc_optlist>.size
        guard body.count >= first else { return [] }
        let list = UnsafeRawBufferPointer(rebasing: body[listAt...]).loadUnaligned(as: ztrpc_optlist.self)
        let n = min(Int(list.count), Int(ZTRPC_MAX_PREOPTS), (body.count - first) / sockoptSize)
        return (0..<n).map { i in
            let so = UnsafeRawBufferPointer(rebasing: body[(first + i * sockoptSize)...]).loadUnaligned(as: ztrpc_sockopt.self)
            var r = SocketOptionRecord(so)
            r.value = Array(r.value.prefix(16))   // records carry their value inline only
            return r
        }
    }

    /// Encodes a request (the library's side; tests and tools use it). Returns the byte count.
    static func encodeRequest(op: UInt16, id: UInt32, body: UnsafeRawBufferPointer,
                              into out: UnsafeMutableRawBufferPointer) -> Int {
        let total = requestHeaderSize + body.count
        precondition(out.count >= total)
        let hdr = ztrpc_req_hdr(magic: ZTRPC_MAGIC, version: ZTRPC_VERSION, op: op, id: id, len: UInt32(body.count))
        out.storeBytes(of: hdr, as: ztrpc_req_hdr.self)
        if let b = body.baseAddress, body.count > 0 {
            (out.baseAddress! + requestHeaderSize).copyMemory(from: b, byteCount: body.count)
        }
        return total
    }

    /// Encodes a reply into `out` (at least `maxReplySize` bytes); returns its length.
    static func encodeReply(_ h: RPCHeader, result: Int32, errno err: Int32, body: RPCReplyBody,
                            into out: UnsafeMutableRawBufferPointer) -> Int {
        precondition(out.count >= maxReplySize)
        let p = out.baseAddress!
        var len = 0
        switch body {
        case .none: break
        case .info(let i):
            (p + replyHeaderSize).storeBytes(of: i, as: ztrpc_sockinfo.self)
            len = MemoryLayout<ztrpc_sockinfo>.size
        case .opt(let level, let name, let value):
            let bytes = value.bytes
            let n = min(bytes.count, Int(ZTRPC_MAX_OPTLEN))
            var hdr = ztrpc_sockopt()
            hdr.level = level
            hdr.name = name
            hdr.optlen = UInt32(n)
            (p + replyHeaderSize).storeBytes(of: hdr, as: ztrpc_sockopt.self)
            let v = p + replyHeaderSize + sockoptHeaderSize
            v.initializeMemory(as: UInt8.self, repeating: 0, count: max(16, n))
            bytes.withUnsafeBytes { if n > 0 { v.copyMemory(from: $0.baseAddress!, byteCount: n) } }
            len = sockoptHeaderSize + max(16, n)
        }
        let hdr = ztrpc_rep_hdr(magic: ZTRPC_MAGIC, version: ZTRPC_VERSION, op: h.op, id: h.id, result: result,
                                err: err, len: UInt32(len))
        p.storeBytes(of: hdr, as: ztrpc_rep_hdr.self)
        return replyHeaderSize + len
    }

    /// Decodes a reply (tests and tools): header and raw body.
    static func decodeReply(_ msg: UnsafeRawBufferPointer) -> (ztrpc_rep_hdr, UnsafeRawBufferPointer)? {
        guard msg.count >= replyHeaderSize else { return nil }
        let hdr = msg.loadUnaligned(as: ztrpc_rep_hdr.self)
        guard hdr.magic == ZTRPC_MAGIC, Int(hdr.len) == msg.count - replyHeaderSize else { return nil }
        return (hdr, UnsafeRawBufferPointer(rebasing: msg[replyHeaderSize...]))
    }

    /// The message announcing one accepted connection on a listener's accept channel.
    static func acceptMessage(local: IPEndpoint?, peer: IPEndpoint?, secret: UInt64 = 0, key: FDKey? = nil,
                              nonBlocking: Bool = false) -> ztrpc_accept_msg {
        ztrpc_accept_msg(magic: ZTRPC_MAGIC, flags: nonBlocking ? ZTRPC_AM_NONBLOCK : 0, local: Wire.addr(local),
                         peer: Wire.addr(peer), secret: Wire.secret(secret), dev: key?.dev ?? 0, ino: key?.ino ?? 0)
    }

    /// The prefix of a datagram for the app: its source.
    static func datagramHeader(from: IPEndpoint) -> ztrpc_dgram { ztrpc_dgram(addr: Wire.addr(from)) }

    /// A payload-less datagram header reporting `err` (an ICMP error on a connected socket).
    static func datagramError(peer: IPEndpoint?, errno err: Int32) -> ztrpc_dgram {
        var a = Wire.addr(peer)
        a.reserved = ZTRPC_DGRAM_ERROR | (UInt16(truncatingIfNeeded: err) & ZTRPC_DGRAM_ERRNO_MASK)
        return ztrpc_dgram(addr: a)
    }

    /// The destination an app's datagram names: nil for "the connected peer" (all zero).
    static func datagramDestination(_ msg: UnsafeRawBufferPointer) -> IPEndpoint?? {
        guard msg.count >= MemoryLayout<ztrpc_dgram>.size else { return nil }
        let dst = Wire.endpoint(msg.loadUnaligned(as: ztrpc_dgram.self).addr)
        return .some(dst.address.isUnspecified && dst.port == 0 ? nil : dst)
    }
}

/// Conversions between the wire structs and NetStack types. A wire address is the 16 bytes of
/// an IPv6 address with IPv4 v4-mapped (ztrpc.h, "Addresses"): exactly `IPAddress`'s form.
enum Wire {
    /// The endpoint a wire address names: all zero is ::, the IPv6 wildcard (see `local`).
    static func endpoint(_ a: ztrpc_addr) -> IPEndpoint {
        let address = withUnsafeBytes(of: a.addr) { IPAddress(loadingFrom: $0.baseAddress!) }
        return IPEndpoint(address, UInt16(bigEndian: a.port))
    }

    /// A local address as a socket of `family` means it: all zero from an AF_INET socket (an
    /// older library, or an unbound socket's "none") is 0.0.0.0.
    static func local(_ a: ztrpc_addr, family: Int32) -> IPEndpoint {
        var e = endpoint(a)
        if family == AF_INET && e.address == .v6Any { e.address = .v4Any }
        return e
    }

    /// A socket's secret as sockinfo and accept messages carry it (low word first).
    static func secret(_ v: UInt64) -> (UInt32, UInt32) {
        (UInt32(truncatingIfNeeded: v), UInt32(truncatingIfNeeded: v >> 32))
    }

    static func addr(_ e: IPEndpoint?) -> ztrpc_addr {
        var a = ztrpc_addr()
        guard let e else { return a }
        withUnsafeMutableBytes(of: &a.addr) { e.address.store(to: $0.baseAddress!) }
        a.port = e.port.bigEndian
        return a
    }

    /// The family a request names (0 from a library that predates it: AF_INET).
    static func family(_ sr: ztrpc_sock_req) -> Int32 { sr.family == UInt8(AF_INET6) ? AF_INET6 : AF_INET }

    /// Copies a body into a zeroed struct: a shorter body reads as zero-filled, a longer one
    /// (a newer library's additions) is cut (ztrpc.h: changes are additive).
    static func body<T>(_ type: T.Type, from bytes: UnsafeRawBufferPointer, zero: T) -> T {
        var v = zero
        withUnsafeMutableBytes(of: &v) { dst in
            let n = min(dst.count, bytes.count)
            if n > 0 { dst.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: n) }
        }
        return v
    }

    /// Linux errno for a stack error, as the libc call would report it.
    static func errno(_ e: SocketError) -> Int32 {
        switch e {
        case .connectionRefused: return ECONNREFUSED
        case .connectionReset: return ECONNRESET
        case .timedOut: return ETIMEDOUT
        case .hostUnreachable: return EHOSTUNREACH
        case .networkUnreachable: return ENETUNREACH
        case .addressInUse: return EADDRINUSE
        case .addressNotAvailable: return EADDRNOTAVAIL
        case .invalidState: return EINVAL
        case .notConnected: return ENOTCONN
        case .messageTooLong: return EMSGSIZE
        case .noBufferSpace: return ENOBUFS
        case .wouldBlock: return EAGAIN
        case .invalidHandle: return EBADF
        }
    }
}
