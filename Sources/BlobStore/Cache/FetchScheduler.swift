/// Bounds concurrent fetches; on-demand work always goes before prefetch.
actor FetchScheduler {
    enum Priority: Sendable {
        case onDemand
        case prefetch
    }

    private let limit: Int
    private var running = 0
    private var urgent: [CheckedContinuation<Void, Never>] = []
    private var background: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    func acquire(_ priority: Priority) async {
        if running < limit && (priority == .onDemand || urgent.isEmpty) {
            running += 1
            return
        }
        await withCheckedContinuation { continuation in
            switch priority {
            case .onDemand: urgent.append(continuation)
            case .prefetch: background.append(continuation)
            }
        }
    }

    func release() {
        if !urgent.isEmpty {
            urgent.removeFirst().resume()
        } else if !background.isEmpty {
            background.removeFirst().resume()
        } else {
            running -= 1
        }
    }

    var waitingOnDemand: Int { urgent.count }
}
