import Glibc
import CShims
import PhyLoop
import SystemPackage
import Testing
@testable import ZTService

/// The syscall layer's policy, with faults injected under it.
@Suite struct SysTests {
    @Test func eintrIsRetriedEagainIsAValueOthersThrow() throws {
        let f = FaultSys()
        let sys = Sys(backend: f)
        let (a, b) = makePair(streamType)
        defer { Glibc.close(a); Glibc.close(b) }
        let msg: [UInt8] = [1, 2, 3]
        f.inject(Fault(call: .sendmsg, fd: a, effect: .errno(EINTR), times: 3))
        let sent = try msg.withUnsafeBytes { try sys.send(a, $0) }
        guard case .processed(3) = sent else { Issue.record("\(sent)"); return }
        #expect(f.faulted == [.sendmsg, .sendmsg, .sendmsg])
        var buf = [UInt8](repeating: 0, count: 8)
        f.inject(Fault(call: .recvmsg, fd: b, effect: .errno(EAGAIN)))
        let r1 = try buf.withUnsafeMutableBytes { try sys.recv(b, into: $0) }
        guard case .wouldBlock = r1 else { Issue.record("\(r1)"); return }
        f.inject(Fault(call: .recvmsg, fd: b, effect: .errno(ENOBUFS)))
        #expect(throws: Errno.noBufferSpace) { try buf.withUnsafeMutableBytes { try sys.recv(b, into: $0) } }
        let r2 = try buf.withUnsafeMutableBytes { try sys.recv(b, into: $0) }
        guard case .processed(3) = r2 else { Issue.record("\(r2)"); return }
        #expect(buf[0..<3] == [1, 2, 3])
    }

    @Test func shortTransfersAreReportedAsSuch() throws {
        let f = FaultSys()
        let sys = Sys(backend: f)
        let (a, b) = makePair(streamType)
        defer { Glibc.close(a); Glibc.close(b) }
        let x = [UInt8](repeating: 7, count: 100), y = [UInt8](repeating: 8, count: 100)
        f.inject(Fault(call: .sendmsg, fd: a, effect: .short(150)))
        let r = try x.withUnsafeBytes { xa in try y.withUnsafeBytes { ya in try sys.sendv(a, xa, ya) } }
        guard case .processed(150) = r else { Issue.record("\(r)"); return }
        #expect(Rig.drain(b) == x + y[0..<50])
    }

    @Test func nonBlockingEvenWhenTheFileIsBlocking() throws {
        // The socket is in blocking mode (a client could clear O_NONBLOCK on a shared file):
        // Sys still never blocks.
        let (a, b) = makePair(streamType)
        defer { Glibc.close(a); Glibc.close(b) }
        var buf = [UInt8](repeating: 0, count: 8)
        let r = try buf.withUnsafeMutableBytes { try Sys.live.recv(a, into: $0) }
        guard case .wouldBlock = r else { Issue.record("\(r)"); return }
    }

    @Test func fdPassingAndTruncation() throws {
        let (a, b) = makePair(seqpacket)
        defer { Glibc.close(a); Glibc.close(b) }
        // Three fds for a receiver with room for two: the third (x) must be closed, not leaked.
        let (x, y) = makePair(streamType)
        defer { Glibc.close(y) }
        let payload: [UInt8] = [9, 9]
        let fds = [y, y, x]
        _ = try payload.withUnsafeBytes { p in try fds.withUnsafeBufferPointer { try Sys.live.sendWithFDs(a, p, fds: $0) } }
        Glibc.close(x)
        var got = [Int32](repeating: -1, count: 2)
        var buf = [UInt8](repeating: 0, count: 16)
        let r = try buf.withUnsafeMutableBytes { bb in try got.withUnsafeMutableBufferPointer { try Sys.live.recvWithFDs(b, into: bb, fds: $0) } }
        guard case .processed(let m) = r else { Issue.record("\(r)"); return }
        #expect(m.count == 2 && m.fdCount == 2 && m.truncated, "a third fd did not fit: reported")
        #expect(FDKey.of(got[0]) == FDKey.of(y) && FDKey.of(got[1]) == FDKey.of(y))
        for fd in got { Sys.live.closeUntrusted(fd) }
        // x's last reference was the dropped copy: its peer y now sees the hang-up.
        #expect(Sys.live.peerHungUp(y), "the fd that did not fit was closed")
    }

    @Test func peerHangupIsSeenWithoutReading() {
        let (a, b) = makePair(streamType)
        defer { Glibc.close(a) }
        #expect(!Sys.live.peerHungUp(a))
        Glibc.close(b)
        #expect(Sys.live.peerHungUp(a))
    }

    @Test func socketpairAndAcceptFailuresThrowTheirErrno() {
        let f = FaultSys()
        let sys = Sys(backend: f)
        f.inject(Fault(call: .socketpair, fd: nil, effect: .errno(EMFILE)))
        #expect(throws: Errno.tooManyOpenFiles) { _ = try sys.socketpair(type: streamType) }
        f.inject(Fault(call: .accept, fd: nil, effect: .errno(ECONNABORTED)))
        f.inject(Fault(call: .accept, fd: nil, effect: .errno(EMFILE)))
        #expect(throws: Errno.tooManyOpenFiles) { _ = try sys.accept(12345) }
    }
}
