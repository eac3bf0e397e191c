import PhyLoop
import SystemPackage

/// The hub's loop, remembering the identity (inode) of every socket end ztapd holds. A client
/// that hands one of those back as part of a "new" socketpair — the app end of a socket it
/// already has as the daemon end of another, or the daemon end it kept a copy of — would make
/// ztapd hold both ends of one pair: neither ever hangs up, and both entries would live for
/// good (found by the rpc fuzz target as sockets piling up).
final class HeldEnds: SocketLoop {
    let base: any SocketLoop
    private var held: [FDKey: Int] = [:]
    private var keyOf: [ObjectIdentifier: FDKey] = [:]

    init(_ base: any SocketLoop) { self.base = base }

    var sys: Sys { base.sys }
    var polls: UInt64 { base.polls }

    /// Whether ztapd holds a socket with this identity.
    func holds(_ key: FDKey) -> Bool { held[key] != nil }

    /// The identity of the fd the message being handled will add (the trust checks computed
    /// it already: one fstat fewer); cleared when the message is done.
    private var expected: (fd: Int32, key: FDKey)?

    func expect(fd: Int32, key: FDKey?) { expected = key.map { (fd, $0) } }

    func add(fd: Int32, kind: PhySocketKind, context: LoopContext, ownsFD: Bool, readable: Bool,
             writable: Bool) throws(Errno) -> LoopSocket {
        let s = try base.add(fd: fd, kind: kind, context: context, ownsFD: ownsFD, readable: readable, writable: writable)
        let known = expected.flatMap { $0.fd == fd ? $0.key : nil }
        expected = nil
        if let k = known ?? FDKey.of(fd) {
            held[k, default: 0] += 1
            keyOf[ObjectIdentifier(s)] = k
        }
        return s
    }

    func addUnexposed(fd: Int32, kind: PhySocketKind, context: LoopContext) throws(Errno) -> LoopSocket {
        try base.addUnexposed(fd: fd, kind: kind, context: context)
    }

    func close(_ socket: LoopSocket) {
        if let k = keyOf.removeValue(forKey: ObjectIdentifier(socket)) {
            if let n = held[k], n > 1 { held[k] = n - 1 } else { held[k] = nil }
        }
        base.close(socket)
    }

    func setNotifyReadable(_ socket: LoopSocket, _ on: Bool) { base.setNotifyReadable(socket, on) }
    func setNotifyWritable(_ socket: LoopSocket, _ on: Bool) { base.setNotifyWritable(socket, on) }
    func forEach(_ body: (LoopSocket) -> Void) { base.forEach(body) }
    func acceptPending(_ listener: LoopSocket) { base.acceptPending(listener) }
}
