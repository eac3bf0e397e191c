import CShims
import PhyLoop
import SystemPackage
import ZTControl
#if canImport(Glibc)
import Glibc
#endif

// Capture.swift - `ztctl capture`: copies of a network's frames to readers, never at the
// network's expense.
//
// Theory of operation. The main thread makes a SOCK_SEQPACKET socketpair per capture, passes one
// end to ztctl with the answer (SCM_RIGHTS) and posts the other to the network loop, which
// registers it here. The loop sees every frame at two places, TAP reads (NetworkLoop
// .phyOnReadable: inbound) and the stack's output (TapSink.sendFrame: outbound), and calls
// `record`, which sends one message per reader with MSG_DONTWAIT (header + frame gathered by
// sendmsg, no copy, no allocation). A full socket buffer is EAGAIN: the frame is dropped for that
// reader only and counted, and the count travels in the next message that fits, so a slow or
// stopped reader costs the loop one failed syscall per frame and never a stall. The daemon end's
// send buffer is raised with SO_SNDBUFFORCE (the loop holds CAP_NET_ADMIN), falling back to the
// wmem_max-capped SO_SNDBUF. A reader that hangs up is seen by epoll (the socket is registered
// in the loop for that only) or by EPIPE, and removed. Without readers `record` is one branch.
//
// Why a socketpair handed over the control socket instead of a listening socket of its own:
// nothing new to name, authorize or clean up in RUN_DIR; the control socket's SO_PEERCRED check
// is the permission check, and the capture dies with either end.

/// One reader of a network's frames.
final class FrameCapture {
    let fd: Int32
    /// Frames delivered and dropped (buffer full) for this reader.
    var frames: UInt64 = 0
    var dropped: UInt64 = 0
    /// Drops not yet reported to the reader (sent in the next message's header).
    var unreported: UInt32 = 0
    var closed = false
    init(fd: Int32) { self.fd = fd }
}

/// The captures of one network. Loop thread only.
final class FrameCaptures {
    /// Read for every frame: no dynamic exclusivity check (loop thread only, never overlapping).
    @exclusivity(unchecked) private(set) var sessions: [FrameCapture] = []
    /// Totals including captures that ended (for metrics).
    private(set) var framesTotal: UInt64 = 0
    private(set) var droppedTotal: UInt64 = 0
    private(set) var sessionsTotal: UInt64 = 0
    private let header: UnsafeMutableRawPointer
    let sys: Sys
    /// Bytes a reader may have queued before frames are dropped for it.
    static let bufferBytes = 4 << 20

    init(sys: Sys = .live) {
        self.sys = sys
        header = .allocate(byteCount: CaptureWire.headerSize, alignment: 8)
    }

    deinit {
        header.deallocate()
        gather?.deallocate()
    }

    var isEmpty: Bool { sessions.isEmpty }

    /// Takes `fd` (the daemon end, non-blocking) as a new reader.
    func add(_ fd: Int32) -> FrameCapture {
        var size = Int32(Self.bufferBytes)
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, 4) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, 4)
        }
        let c = FrameCapture(fd: fd)
        sessions.append(c)
        sessionsTotal &+= 1
        return c
    }

    /// Forgets `c` (its fd is closed by whoever registered it in the loop).
    func remove(_ c: FrameCapture) {
        c.closed = true
        sessions.removeAll { $0 === c }
    }

    /// Copies `frame` to every reader; `outbound`: the stack sent it.
    @inline(__always)
    func record(_ frame: UnsafeRawBufferPointer, outbound: Bool) {
        if sessions.isEmpty { return }
        deliver(frame, outbound: outbound)
    }

    /// `record` for a frame in pieces (headers, then payload regions of a send ring): gathered
    /// into one buffer, only while someone captures.
    @inline(__always)
    func record(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer,
                outbound: Bool) {
        if sessions.isEmpty { return }
        let n = min(a.count + b.count + c.count, Self.gatherSize)
        if gather == nil { gather = .allocate(byteCount: Self.gatherSize, alignment: 16) }
        let g = gather!
        var off = 0
        for part in [a, b, c] where part.count > 0 && off < n {
            let k = min(part.count, n - off)
            (g.baseAddress! + off).copyMemory(from: part.baseAddress!, byteCount: k)
            off += k
        }
        deliver(UnsafeRawBufferPointer(rebasing: g[0..<n]), outbound: outbound)
    }

    /// Largest frame a capture copies (a 64 KiB TSO segment plus headers).
    static let gatherSize = 70_000
    private var gather: UnsafeMutableRawBufferPointer?

    private func deliver(_ frame: UnsafeRawBufferPointer, outbound: Bool) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let head = UnsafeRawBufferPointer(start: header, count: CaptureWire.headerSize)
        var gone = false
        for c in sessions {
            CaptureWire.encodeHeader(header, dropped: c.unreported, outbound: outbound, seconds: UInt32(truncatingIfNeeded: ts.tv_sec),
                                     micros: UInt32(ts.tv_nsec / 1000), length: UInt32(frame.count))
            do {
                switch try sys.sendv(c.fd, head, frame) {
                case .processed:
                    c.frames &+= 1
                    framesTotal &+= 1
                    c.unreported = 0
                case .wouldBlock:
                    drop(c)
                }
            } catch {
                // ENOBUFS/ENOMEM: as full as EAGAIN. Anything else (EPIPE): the reader left.
                if error == .noBufferSpace || error == .noMemory { drop(c) } else { c.closed = true; gone = true }
            }
        }
        if gone { sessions.removeAll { $0.closed } }
    }

    private func drop(_ c: FrameCapture) {
        c.dropped &+= 1
        droppedTotal &+= 1
        c.unreported = c.unreported == UInt32.max ? c.unreported : c.unreported + 1
    }
}
