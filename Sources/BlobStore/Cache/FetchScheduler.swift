/// Bounds concurrent fetches; on-demand work always goes before prefetch, read-ahead before background
/// prefetch.
actor FetchScheduler {
    enum Priority: Sendable {
        case onDemand
        /// Read-ahead: a reader is about to need it.
        case prefetch
        /// Prefetch tables and whole-image prefetch: nobody waits yet; their transfers also run at background
        /// CPU priority.
        case background
    }

    private let limit: Int
    private var running = 0
    private var urgent: [CheckedContinuation<Void, Never>] = []
    private var ahead: [CheckedContinuation<Void, Never>] = []
    private var background: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    func acquire(_ priority: Priority) async {
        let queuedBefore =
            switch priority {
            case .onDemand: 0
            case .prefetch: urgent.count
            case .background: urgent.count + ahead.count
            }
        if running < limit && queuedBefore == 0 {
            running += 1
            return
        }
        await withCheckedContinuation { continuation in
            switch priority {
            case .onDemand: urgent.append(continuation)
            case .prefetch: ahead.append(continuation)
            case .background: background.append(continuation)
            }
        }
    }

    func release() {
        if !urgent.isEmpty {
            urgent.removeFirst().resume()
        } else if !ahead.isEmpty {
            ahead.removeFirst().resume()
        } else if !background.isEmpty {
            background.removeFirst().resume()
        } else {
            running -= 1
        }
    }

    var waitingOnDemand: Int { urgent.count }
}
