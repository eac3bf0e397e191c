import CZTRPC
import Glibc
import NetStack
import PhyLoop
import Testing
@testable import ZTService

/// A process's one-way channel as a pipe (ztrpc.h ZTRPC_OP_CHANNEL): the framing of its byte
/// stream, and the daemon reading it.
@Suite struct PipeChannelTests {
    /// One one-way SETSOCKOPT by reference, as the library writes it into the pipe.
    static func message(name: Int32, value: Int32, ref: ztrpc_sockref) -> [UInt8] {
        struct Body { var so = ztrpc_sockopt(); var ref = ztrpc_sockref() }
        var b = Body()
        b.so.level = Int32(IPPROTO_TCP); b.so.name = name; b.so.optlen = 4
        withUnsafeMutableBytes(of: &b.so.value) { $0.storeBytes(of: value, as: Int32.self) }
        b.ref = ref
        var msg = [UInt8](repeating: 0, count: 256)
        let n = msg.withUnsafeMutableBytes { m in
            withUnsafeBytes(of: &b) { RPCCodec.encodeRequest(op: ZTRPC_OP_SETSOCKOPT | ZTRPC_OP_NOREPLY, id: 1, body: $0, into: m) }
        }
        return Array(msg[0..<n])
    }

    static let ref = ztrpc_sockref(dev: 1, ino: 2, secret: 3)

    /// The option values of the messages `feed` delivered, in order.
    func values(_ stream: inout ChannelStream, _ bytes: [UInt8]) -> (ok: Bool, values: [Int32]) {
        var got: [Int32] = []
        let ok = bytes.withUnsafeBytes { b in
            stream.feed(b) { m in
                guard case .success(let (_, .setsockoptByRef(r, _))) = RPCCodec.decode(m, truncated: false) else {
                    got.append(-1)
                    return
                }
                got.append(SocketOptionMap.Value(r.value, r.optlen).int)
            }
        }
        return (ok, got)
    }

    @Test func messagesComeWholeInOrderWhereverTheReadsEnd() {
        let all = (0..<5).flatMap { Self.message(name: TCP_NODELAY, value: Int32($0), ref: Self.ref) }
        #expect(all.count == 5 * 72)
        // In one read: five messages, nothing kept.
        var s = ChannelStream()
        #expect(values(&s, all) == (true, [0, 1, 2, 3, 4]) && s.carry.isEmpty)
        // Split at every byte: the same messages, each when its last byte came.
        for cut in 1..<all.count {
            var t = ChannelStream()
            let a = values(&t, Array(all[..<cut]))
            let b = values(&t, Array(all[cut...]))
            #expect(a.ok && b.ok && a.values + b.values == [0, 1, 2, 3, 4], "cut at \(cut)")
            #expect(a.values.count == cut / 72 && t.carry.isEmpty)
        }
        // Byte by byte.
        var u = ChannelStream()
        var got: [Int32] = []
        for byte in all { let r = values(&u, [byte]); #expect(r.ok); got += r.values }
        #expect(got == [0, 1, 2, 3, 4])
    }

    /// A stream whose header is not a ztrpc header (or announces more than a message may hold)
    /// has lost its framing: nothing after it is delivered.
    @Test func aBrokenHeaderEndsTheStream() {
        let good = Self.message(name: TCP_CORK, value: 1, ref: Self.ref)
        var badMagic = good
        badMagic[0] ^= 0xFF
        var s = ChannelStream()
        #expect(values(&s, good + badMagic + good) == (false, [1]))
        var tooLong = good
        withUnsafeBytes(of: UInt32(ZTRPC_MAX_MSG).littleEndian) { for i in 0..<4 { tooLong[12 + i] = $0[i] } }
        var t = ChannelStream()
        #expect(values(&t, good + Array(tooLong[0..<16])) == (false, [1]))
        // A header split across reads is judged once whole.
        var u = ChannelStream()
        #expect(values(&u, good + Array(badMagic[0..<3])) == (true, [1]))
        #expect(values(&u, Array(badMagic[3...])) == (false, []))
    }

    func pipe() -> (read: Int32, write: Int32) {
        var p: [Int32] = [-1, -1]
        #expect(Glibc.pipe(&p) == 0)
        for fd in p {   // as the library makes it: pipe2(O_CLOEXEC | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        return (p[0], p[1])
    }

    func register(_ rig: Rig, _ fd: Int32) -> ztrpc_rep_hdr? {
        rig.call(op: ZTRPC_OP_CHANNEL, body: UnsafeRawBufferPointer(start: nil, count: 0), fds: [fd])?.hdr
    }

    @Test func aPipeBecomesTheProcesssChannelAndItsOptionsApplyInOrder() throws {
        let rig = try Rig()
        let (app, key, c) = try rig.connectedApp()
        defer { Glibc.close(app) }
        let ref = ztrpc_sockref(dev: key.dev, ino: key.ino, secret: c.secret)
        let peersBefore = rig.hub.peerCount
        let (r, w) = pipe()
        defer { Glibc.close(w) }
        #expect(register(rig, r)?.result == 0)
        Glibc.close(r)
        #expect(rig.hub.peerCount == peersBefore + 1)
        // Counted under its own name (ztap_rpc_requests_total{op="channel"}).
        #expect(RPCCounters.opNames[RPCCounters.index(ZTRPC_OP_CHANNEL)] == "channel")
        #expect(RPCCounters.opNames[RPCCounters.index(ZTRPC_OP_RENEW)] == "renew")
        #expect(rig.hub.replier.counters.requests[RPCCounters.index(ZTRPC_OP_CHANNEL)] == 1)
        let applied = { rig.hub.replier.counters.requests[RPCCounters.index(ZTRPC_OP_SETSOCKOPT)] }
        // Written one-way, then asked on a request of its own: the answer sees each.
        for v: Int32 in [1, 0, 1] {
            let m = Self.message(name: TCP_NODELAY, value: v, ref: ref)
            #expect(Glibc.write(w, m, m.count) == m.count)
            #expect(rig.tcpOption(app, TCP_NODELAY) == v)
        }
        // Half a message is not applied; the rest completes it.
        let cork = Self.message(name: TCP_CORK, value: 1, ref: ref)
        #expect(Glibc.write(w, cork, 40) == 40)
        rig.settle(5)
        #expect(c.options[.cork] == false)
        #expect(Glibc.write(w, Array(cork[40...]), cork.count - 40) == cork.count - 40)
        #expect(rig.run(limit: 200) { c.options[.cork] })
        // A run longer than one read's worth, in order.
        let before = applied()
        let run = (0..<300).flatMap { Self.message(name: TCP_NODELAY, value: Int32($0 % 2), ref: ref) }
        #expect(Glibc.write(w, run, run.count) == run.count)
        #expect(rig.run(limit: 500) { applied() == before + 300 })
        #expect(rig.tcpOption(app, TCP_NODELAY) == 1)
        // A wrong secret is dropped and the channel goes on.
        var bad = ref
        bad.secret ^= 1
        let m = Self.message(name: TCP_NODELAY, value: 0, ref: bad)
        #expect(Glibc.write(w, m, m.count) == m.count)
        #expect(rig.tcpOption(app, TCP_NODELAY) == 1)
        // Bytes that are no message end the channel: the writer sees EPIPE (the library writes
        // with RWF_NOSIGNAL, so no SIGPIPE; this test's write would raise one, so it is blocked).
        #expect(Glibc.write(w, [UInt8](repeating: 0x55, count: 16), 16) == 16)
        #expect(rig.run(limit: 200) { rig.hub.peerCount == peersBefore })
        var set = sigset_t(), old = sigset_t()
        sigemptyset(&set); sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, &old)
        #expect(Glibc.write(w, m, m.count) == -1 && errno == EPIPE)
        var zero = timespec()
        _ = sigtimedwait(&set, nil, &zero)
        pthread_sigmask(SIG_SETMASK, &old, nil)
    }

    @Test func onlyAPipesReadEndIsTakenAndAClosedPipeGoes() throws {
        let rig = try Rig()
        let peersBefore = rig.hub.peerCount
        let (a, b) = makePair(streamType)
        #expect(register(rig, a)?.err == EBADF)
        Glibc.close(a); Glibc.close(b)
        let (r, w) = pipe()
        #expect(register(rig, w)?.err == EBADF)   // the write end
        #expect(register(rig, r)?.result == 0)
        Glibc.close(r)
        #expect(rig.hub.peerCount == peersBefore + 1)
        // The process is gone (its write end closed): so is the channel.
        Glibc.close(w)
        #expect(rig.run(limit: 200) { rig.hub.peerCount == peersBefore })
    }
}
