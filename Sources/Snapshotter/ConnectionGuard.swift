import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// How many API connections may be open and how long each may sit without progress.
struct ConnectionLimits: Sendable, Equatable {
    /// Open connections at most; a new one beyond makes room by closing the longest-waiting one that has no
    /// request being handled, so the daemon's fd count stays bounded (`api.max_connections`).
    var maximumConnections = 512
    /// A connection with no request in progress is closed after this (`api.idle_timeout_seconds`).
    var idleTimeout: Duration = .seconds(60)
    /// A request must arrive whole within this of its first byte (`api.request_timeout_seconds`); a peer
    /// that sends it a byte at a time (slowloris) is cut off.
    var requestTimeout: Duration = .seconds(10)
}

/// Every open API connection and what it is doing: the table behind `api.max_connections`.
final class ConnectionTable: Sendable {
    enum Phase: Sendable {
        /// Waiting for a request (after connect, or after a response).
        case idle
        /// Some bytes of a request arrived, not the whole of it.
        case receiving
        /// A request is with the router; its connection is never evicted.
        case busy
    }

    private struct Entry {
        let channel: any Channel
        var phase: Phase
        var since: ContinuousClock.Instant
    }

    private struct State {
        var nextID = 0
        var entries: [Int: Entry] = [:]
    }

    let maximum: Int
    private let state = Mutex(State())

    init(maximum: Int) {
        precondition(maximum > 0, "the connection limit must allow one connection")
        self.maximum = maximum
    }

    var count: Int { state.withLock { $0.entries.count } }

    /// Records a new connection, first closing the longest-waiting unbusy one when the table is full.
    /// Returns nil (and the caller closes `channel`) when every open connection is busy.
    func admit(_ channel: any Channel) -> (id: Int, evicted: (any Channel)?)? {
        state.withLock { state in
            var evicted: (any Channel)?
            if state.entries.count >= maximum {
                let victim = state.entries.filter { $0.value.phase != .busy }.min { $0.value.since < $1.value.since }
                guard let victim else { return nil }
                state.entries[victim.key] = nil
                evicted = victim.value.channel
            }
            let id = state.nextID
            state.nextID += 1
            state.entries[id] = Entry(channel: channel, phase: .idle, since: .now)
            return (id, evicted)
        }
    }

    func update(_ id: Int, to phase: Phase) {
        state.withLock { state in
            guard state.entries[id] != nil else { return }
            state.entries[id]?.phase = phase
            state.entries[id]?.since = .now
        }
    }

    func remove(_ id: Int) {
        _ = state.withLock { $0.entries.removeValue(forKey: id) }
    }
}

/// One connection's phase and its deadline. Lives on the connection's event loop: both handlers that drive
/// it are in that channel's pipeline, so every call comes from that loop.
final class ConnectionActivity {
    private let id: Int
    private let table: ConnectionTable
    private let limits: ConnectionLimits
    private let channel: any Channel
    private let logger: Logger
    private var phase = ConnectionTable.Phase.idle
    private var deadline: Scheduled<Void>?

    init(id: Int, table: ConnectionTable, limits: ConnectionLimits, channel: any Channel, logger: Logger) {
        self.id = id
        self.table = table
        self.limits = limits
        self.channel = channel
        self.logger = logger
        arm(limits.idleTimeout, reason: "idle")
    }

    /// Bytes came in: the first of a request starts its deadline.
    func bytesArrived() {
        guard phase == .idle else { return }
        move(to: .receiving)
        arm(limits.requestTimeout, reason: "request not complete")
    }

    /// The whole request arrived: no deadline while the router works on it.
    func requestComplete() {
        move(to: .busy)
        deadline?.cancel()
        deadline = nil
    }

    /// The response went out: the connection waits for its next request.
    func responseSent() {
        move(to: .idle)
        arm(limits.idleTimeout, reason: "idle")
    }

    private func move(to next: ConnectionTable.Phase) {
        phase = next
        table.update(id, to: next)
    }

    private func arm(_ timeout: Duration, reason: String) {
        deadline?.cancel()
        let channel = self.channel
        let logger = self.logger
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) {
            logger.debug("API connection closed", metadata: ["api.close_reason": "\(reason)", "api.timeout": "\(timeout)"])
            channel.close(promise: nil)
        }
    }
}

/// First in the pipeline: sees the raw bytes, so a request's deadline starts with its first byte even while
/// its head is still incomplete.
final class ConnectionBytesHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let activity: ConnectionActivity

    init(activity: ConnectionActivity) { self.activity = activity }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        activity.bytesArrived()
        context.fireChannelRead(data)
    }
}

/// Last in the pipeline: sees whole request parts and the response parts, so it knows when a request is
/// complete and when its response has gone out.
final class ConnectionPhaseHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    private let activity: ConnectionActivity

    init(activity: ConnectionActivity) { self.activity = activity }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { activity.requestComplete() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { activity.responseSent() }
        context.write(data, promise: promise)
    }
}
