/// The diagnostic services (RFC 862 echo, RFC 863 discard, RFC 864 chargen) run inside the stack
/// on its own socket API. Their events never reach the driver. They move bytes ring to ring
/// with no intermediate buffer, since benchmarks push gigabits through them:
/// echo copies rxbuf -> txbuf, discard consumes rxbuf, chargen keeps txbuf full from a
/// precomputed pattern.
struct ServiceState {
    struct Conn {
        var kind: DiagnosticService
        var chargenOffset = 0
        var closing = false
    }
    var listeners: [SocketHandle: DiagnosticService] = [:]
    var conns: [SocketHandle: Conn] = [:]
    var udpEcho: SocketHandle?
    /// Set when a service queued data or consumed input: `poll` then runs TCP again.
    var dirty = false
    var startErrors: [SocketError] = []
}

/// RFC 864 pattern: 72-character lines over the 95 printable ASCII characters, each line shifted
/// by one, CR LF terminated; it repeats every 95 lines. The buffer holds one period followed by
/// `chargenSpan` more bytes, so any copy of up to `chargenSpan` bytes is one contiguous memcpy.
enum Chargen {
    static let lineLength = 74
    static let period = 95 * 74
    static let span = 1 << 16
    /// Written once at first use, then only read: safe to share between threads.
    final class Pattern: @unchecked Sendable {
        let base: UnsafeRawPointer
        init(_ p: UnsafeRawPointer) { base = p }
    }
    static let pattern: Pattern = {
        let total = period + span
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 16)
        for i in 0..<total {
            let k = i % period
            let line = k / lineLength, col = k % lineLength
            let v: UInt8
            switch col {
            case 72: v = 13
            case 73: v = 10
            default: v = UInt8(32 + (line + col) % 95)
            }
            b[i] = v
        }
        return Pattern(UnsafeRawPointer(b.baseAddress.unsafelyUnwrapped))
    }()

    /// The pattern byte at stream offset `i` (tests).
    static func byte(at i: Int) -> UInt8 {
        let k = i % period
        let line = k / lineLength, col = k % lineLength
        return col == 72 ? 13 : col == 73 ? 10 : UInt8(32 + (line + col) % 95)
    }
}

extension NetStack {
    static func port(of s: DiagnosticService) -> UInt16 {
        switch s {
        case .echo: 7
        case .discard: 9
        case .chargen: 19
        }
    }

    /// Listens on the wildcard address, so the services follow `setAddresses` by themselves.
    /// Runs from `init`, before any entry point has brought a clock reading: `now` is still the
    /// stack's zero instant, which `listen` does not use (it starts no timer).
    func startServices() {
        for s in config.services.sorted(by: { $0.rawValue < $1.rawValue }) {
            do throws(SocketError) {
                let l = try tcp.listen(local: IPEndpoint(IPAddress.v6Any, Self.port(of: s)), backlog: 128, now: now)
                services.listeners[l] = s
            } catch { services.startErrors.append(error) }
        }
        if config.services.contains(.echo) {
            do throws(SocketError) {
                services.udpEcho = try openUDP(local: IPEndpoint(IPAddress.v6Any, 7), isService: true)
            } catch { services.startErrors.append(error) }
        }
    }

    /// Pulls TCP's events: the services' own are handled here, the rest queued for the driver.
    func pumpTCPEvents() {
        tcpMayHaveEvents = false
        tcpEventScratch.removeAll(keepingCapacity: true)
        tcp.drainEvents { tcpEventScratch.append($0) }
        if tcpEventScratch.isEmpty { return }
        if services.listeners.isEmpty {
            events.append(contentsOf: tcpEventScratch)
            return
        }
        for ev in tcpEventScratch where !handleServiceEvent(ev) { events.append(ev) }
    }

    private func handleServiceEvent(_ ev: SocketEvent) -> Bool {
        switch ev {
        case let .acceptable(l):
            guard let kind = services.listeners[l] else { return false }
            while let c = try? tcp.accept(l, now: now) {
                services.conns[c] = ServiceState.Conn(kind: kind)
                runService(c)
            }
            return true
        case let .readable(h), let .writable(h), let .connected(h):
            guard services.conns[h] != nil else { return services.listeners[h] != nil }
            runService(h)
            return true
        case let .failed(h, _), let .closed(h):
            if services.conns.removeValue(forKey: h) != nil {
                tcp.release(h, now: now)
                return true
            }
            return services.listeners[h] != nil
        }
    }

    /// Moves as many bytes as the buffers allow for one service connection.
    private func runService(_ h: SocketHandle) {
        guard var c = services.conns[h], !c.closing else { return }
        switch c.kind {
        case .discard:
            if let rx = tcp.receiveBuffer(h), rx.count > 0 {
                tcp.consume(h, rx.count, now: now)
                services.dirty = true
            }
            if tcp.isPeerClosed(h) { c.closing = true; tcp.close(h, now: now) }
        case .echo:
            guard let rx = tcp.receiveBuffer(h), let tx = tcp.sendBuffer(h) else { return }
            let n = min(rx.count, tx.free)
            if n > 0 {
                let (r1, r2) = rx.readableRegions(max: n)
                let (w1, w2) = tx.freeRegions()
                copyRegions(from: r1, r2, to: w1, w2, count: n)
                tcp.commitSend(h, n, now: now)
                tcp.consume(h, n, now: now)
                services.dirty = true
            }
            if rx.isEmpty && tcp.isPeerClosed(h) { c.closing = true; tcp.close(h, now: now) }
        case .chargen:
            if let rx = tcp.receiveBuffer(h), rx.count > 0 { tcp.consume(h, rx.count, now: now) }
            if tcp.isPeerClosed(h) { c.closing = true; tcp.close(h, now: now); break }
            guard let tx = tcp.sendBuffer(h), tx.free > 0 else { break }
            let n = tx.free
            let (w1, w2) = tx.freeRegions()
            c.chargenOffset = fillChargen(w1, from: c.chargenOffset)
            c.chargenOffset = fillChargen(w2, from: c.chargenOffset)
            tcp.commitSend(h, n, now: now)
            services.dirty = true
        }
        services.conns[h] = c
    }

    private func fillChargen(_ w: UnsafeMutableRawBufferPointer, from offset: Int) -> Int {
        guard var d = w.baseAddress else { return offset }
        var left = w.count, o = offset
        let src = Chargen.pattern.base
        while left > 0 {
            let k = min(left, Chargen.span)
            d.copyMemory(from: src + o, byteCount: k)
            d += k
            left &-= k
            o = (o &+ k) % Chargen.period
        }
        return o
    }

    /// Copies `count` bytes from the concatenation r1 ++ r2 to w1 ++ w2.
    private func copyRegions(from r1: UnsafeRawBufferPointer, _ r2: UnsafeRawBufferPointer,
                             to w1: UnsafeMutableRawBufferPointer, _ w2: UnsafeMutableRawBufferPointer, count: Int) {
        let src = (r1, r2); var srcIdx = 0, srcOff = 0
        let dst = (w1, w2); var dstIdx = 0, dstOff = 0
        var left = count
        while left > 0 {
            let s = srcIdx == 0 ? src.0 : src.1
            let d = dstIdx == 0 ? dst.0 : dst.1
            let k = min(left, s.count &- srcOff, d.count &- dstOff)
            if k <= 0 {
                if s.count &- srcOff <= 0 { srcIdx &+= 1; srcOff = 0 }
                if d.count &- dstOff <= 0 { dstIdx &+= 1; dstOff = 0 }
                if srcIdx > 1 || dstIdx > 1 { break }
                continue
            }
            (d.baseAddress.unsafelyUnwrapped + dstOff).copyMemory(from: s.baseAddress.unsafelyUnwrapped + srcOff, byteCount: k)
            srcOff &+= k; dstOff &+= k; left &-= k
        }
    }
}
