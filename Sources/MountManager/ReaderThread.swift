import Dispatch
import LinuxKernel
import Synchronization

/// The thread a front end reads its kernel queue on (fanotify group, /dev/cachefiles, the seed's devnode):
/// it runs one bounded pass (a poll with a timeout, then dispatch) after another until stopped.
final class ReaderThread: Sendable {
    private let running = Mutex(false)
    private let done = DispatchSemaphore(value: 0)
    private let label: String
    private let qos: DispatchQoS

    init(label: String, qos: DispatchQoS = .default) {
        self.label = label
        self.qos = qos
    }

    /// Starts the loop unless it runs already; returns whether it started. `pass` returns false to end the
    /// loop for good (e.g. the device is gone).
    @discardableResult
    func start(_ pass: @escaping @Sendable () -> Bool) -> Bool {
        let started = running.withLock { running in
            defer { running = true }
            return !running
        }
        guard started else { return false }
        DispatchQueue(label: label, qos: qos).async {
            defer { self.done.signal() }
            while self.running.withLock({ $0 }) {
                if !pass() { return }
            }
        }
        return true
    }

    /// Ends the loop after its current pass and waits for it.
    func stop() {
        let wasRunning = running.withLock { running in
            defer { running = false }
            return running
        }
        if wasRunning { done.wait() }
    }
}
