// LinuxError.swift - the one error type of LinuxNet.
//
// Every failure names the operation in words a user can act on ("set MTU 100 on zt-foo"), the
// errno (libnl codes are mapped back to the closest errno; when the kernel answered, its own errno
// wins), and the human text. Where the kernel sent an extended-ACK message ("MTU less than device
// minimum") it is kept too, because it is usually the most precise part.

#if canImport(Glibc)
import Glibc
#endif
import CNetlink

public struct LinuxError: Error, CustomStringConvertible, CustomDebugStringConvertible, Sendable {
    /// What was being done, e.g. "set MTU 2800 on zt-foo" or "enslave zt-foo to br0".
    public var operation: String
    /// The errno of the failure (kernel errno for netlink requests, mapped from libnl otherwise).
    public var errno: Int32
    /// strerror text of `errno`, or a more specific explanation when we detected the problem.
    public var detail: String
    /// libnl's own error code (positive NLE_*), when the failure came through libnl.
    public var netlinkCode: Int32?
    /// libnl's text for `netlinkCode` (nl_geterror).
    public var netlinkText: String?
    /// The kernel's extended-ACK message, if it sent one.
    public var kernelMessage: String?
    /// Failures that happened while undoing a partially applied change (first error is `self`).
    public var rollbackFailures: [String]
    /// Where the error was raised (for bug reports, not for users).
    public var file: String
    public var line: Int

    public init(operation: String, errno: Int32, detail: String? = nil, netlinkCode: Int32? = nil,
                netlinkText: String? = nil, kernelMessage: String? = nil,
                file: String = #fileID, line: Int = #line) {
        self.operation = operation
        self.errno = errno
        self.detail = detail ?? LinuxError.errnoText(errno)
        self.netlinkCode = netlinkCode
        self.netlinkText = netlinkText
        self.kernelMessage = kernelMessage
        self.rollbackFailures = []
        self.file = file
        self.line = line
    }

    /// "set MTU 2800 on zt-foo: Invalid argument (errno 22)", plus the kernel's message if any.
    public var description: String {
        var s = "\(operation): \(detail) (errno \(errno))"
        if let kernelMessage, !kernelMessage.isEmpty { s += " [kernel: \(kernelMessage)]" }
        if !rollbackFailures.isEmpty { s += "; rollback also failed: " + rollbackFailures.joined(separator: "; ") }
        return s
    }

    public var debugDescription: String {
        var s = description
        if let netlinkCode { s += " [libnl \(netlinkCode): \(netlinkText ?? "?")]" }
        return s + " at \(file):\(line)"
    }

    /// The named errno is one of `codes`.
    public func isErrno(_ codes: Int32...) -> Bool { codes.contains(errno) }

    static func errnoText(_ code: Int32) -> String {
        guard let p = strerror(code) else { return "errno \(code)" }
        return String(cString: p)
    }

    /// Error for a failed libc call; reads the thread's errno unless given.
    static func posix(_ operation: String, errno code: Int32 = Glibc.errno,
                      file: String = #fileID, line: Int = #line) -> LinuxError {
        LinuxError(operation: operation, errno: code, file: file, line: line)
    }

    /// Error for a failed libnl call returning `-NLE_*` (or a positive code); `kernelErrno` is the
    /// raw errno from the kernel's NLMSG_ERROR when one was seen.
    static func netlink(_ operation: String, nlResult: Int32, kernelErrno: Int32? = nil,
                        kernelMessage: String? = nil,
                        file: String = #fileID, line: Int = #line) -> LinuxError {
        let code = nlResult < 0 ? -nlResult : nlResult
        let nlText = nl_geterror(code).map { String(cString: $0) } ?? "libnl error \(code)"
        let e = kernelErrno ?? errnoForNetlinkCode(code)
        return LinuxError(operation: operation, errno: e, detail: nil, netlinkCode: code,
                          netlinkText: nlText, kernelMessage: kernelMessage, file: file, line: line)
    }

    /// Inverse of libnl's nl_syserr2nlerr, choosing the most likely errno for each NLE_* code.
    static func errnoForNetlinkCode(_ code: Int32) -> Int32 {
        switch code {
        case NLE_SUCCESS: return 0
        case NLE_INTR: return EINTR
        case NLE_BAD_SOCK: return EBADF
        case NLE_AGAIN: return EAGAIN
        case NLE_NOMEM: return ENOMEM
        case NLE_EXIST: return EEXIST
        case NLE_INVAL: return EINVAL
        case NLE_RANGE: return ERANGE
        case NLE_MSGSIZE: return EMSGSIZE
        case NLE_OPNOTSUPP: return EOPNOTSUPP
        case NLE_AF_NOSUPPORT: return EAFNOSUPPORT
        case NLE_OBJ_NOTFOUND: return ENOENT
        case NLE_NOATTR, NLE_MISSING_ATTR: return ENODATA
        case NLE_AF_MISMATCH: return EAFNOSUPPORT
        case NLE_SEQ_MISMATCH, NLE_MSG_OVERFLOW, NLE_MSG_TRUNC, NLE_MSG_TOOSHORT,
             NLE_MSGTYPE_NOSUPPORT, NLE_PROTO_MISMATCH, NLE_PARSE_ERR, NLE_DUMP_INTR:
            return EPROTO
        case NLE_NOADDR: return EADDRNOTAVAIL
        case NLE_SRCRT_NOSUPPORT: return EOPNOTSUPP
        case NLE_OBJ_MISMATCH: return EINVAL
        case NLE_NOCACHE: return ENOENT
        case NLE_BUSY: return EBUSY
        case NLE_NOACCESS: return EACCES
        case NLE_PERM: return EPERM
        case NLE_PKTLOC_FILE: return ENOENT
        case NLE_NODEV: return ENODEV
        case NLE_IMMUTABLE: return EPERM
        case NLE_ATTRSIZE: return EINVAL
        default: return EIO
        }
    }
}
