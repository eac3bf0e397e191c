import CShims
import Dispatch
import Synchronization

/// A one-shot answer from a network loop thread to the main thread. The main thread waits with
/// a timeout, so a wedged network can never hang ztctl.
final class Reply<T: Sendable>: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private let value = Mutex<T?>(nil)

    func fulfill(_ v: T) {
        value.withLock { $0 = v }
        semaphore.signal()
    }

    func wait(seconds: Double) -> T? {
        guard semaphore.wait(timeout: .now() + seconds) == .success else { return nil }
        return value.withLock { $0 }
    }
}

/// Commands the main thread posts to a network loop (queue + eventfd wake-up, never a lock on
/// the data path: the loop takes them only when woken).
final class Inbox<Command: Sendable>: Sendable {
    private let queue = Mutex<[Command]>([])
    func post(_ c: Command) { queue.withLock { $0.append(c) } }
    func drain() -> [Command] { queue.withLock { q in defer { q.removeAll() }; return q } }
}
