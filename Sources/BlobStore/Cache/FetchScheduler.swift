/// Bounds concurrent fetches; on-demand work always goes before prefetch, read-ahead before background
/// prefetch.
actor FetchScheduler {
    /// In the order they are served.
    enum Priority: Int, Sendable, CaseIterable {
        case onDemand
        /// Read-ahead: a reader is about to need it.
        case prefetch
        /// Prefetch tables and whole-image prefetch: nobody waits yet; their transfers also run at background
        /// CPU priority.
        case background
    }

    private let limit: Int
    private var running = 0
    /// Waiters, one queue per priority.
    private var queues = [[CheckedContinuation<Void, Never>]](repeating: [], count: Priority.allCases.count)

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    func acquire(_ priority: Priority) async {
        if running < limit && queues[..<priority.rawValue].allSatisfy(\.isEmpty) {
            running += 1
            return
        }
        await withCheckedContinuation { continuation in queues[priority.rawValue].append(continuation) }
    }

    func release() {
        if let next = queues.firstIndex(where: { !$0.isEmpty }) {
            queues[next].removeFirst().resume()
        } else {
            running -= 1
        }
    }
}
