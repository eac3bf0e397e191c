#if canImport(Glibc)
import CShims
import Glibc
#endif

/// A failure of a daemon operation, with the context a user needs to act on it.
public struct ServiceError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var errno: Int32?
    public init(_ message: String, errno: Int32? = nil) {
        self.message = message
        self.errno = errno
    }
    public var description: String { message }
}
