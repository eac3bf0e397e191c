import Synchronization

/// Who closes a network's TAP fd: `Network.stop` once the loop thread has finished with it, or
/// the thread itself when it outlives stop's wait. Closing the fd under a loop that still runs
/// would let the kernel hand the same number to the next open (another network's TAP, a
/// client's socket) while the loop goes on reading and writing it.
final class TapCloser: Sendable {
    private enum State { case running, finished, abandoned, closed }
    private let state = Mutex(State.running)
    private let close: @Sendable () -> Void

    init(close: @escaping @Sendable () -> Void) { self.close = close }

    /// Called by the loop thread as its very last act.
    func threadFinished() {
        let closeNow = state.withLock { s -> Bool in
            switch s {
            case .running: s = .finished; return false
            case .abandoned: s = .closed; return true
            case .finished, .closed: return false
            }
        }
        if closeNow { close() }
    }

    /// Called by `stop` after its wait. Returns true if the fd is closed now; false if the thread
    /// still runs and will close it when it finishes.
    @discardableResult
    func release() -> Bool {
        let closeNow = state.withLock { s -> Bool in
            switch s {
            case .finished: s = .closed; return true
            case .running: s = .abandoned; return false
            case .abandoned: return false
            case .closed: return true
            }
        }
        if closeNow { close() }
        return closeNow
    }
}
