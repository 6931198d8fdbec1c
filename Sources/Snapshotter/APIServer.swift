import CLinux
import LinuxKernel
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import SnapshotterAPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where the API listens: a path we bind ourselves, or a socket systemd handed over (LISTEN_FDS).
enum ListenerSource: Sendable {
    case path(String)
    case inherited(fd: Int32, name: String)
}

/// HTTP/1.1 with JSON bodies over a Unix socket (NIO). Each connection is checked with SO_PEERCRED; each
/// request runs on the blocking pool through the router; bodies over the limit get 413 unread.
final class APIServer: Service {
    private let listener: ListenerSource
    private let router: APIRouter
    private let allowedUIDs: Set<UInt32>
    private let maxBodyBytes: Int
    private let limits: ConnectionLimits
    private let connections: ConnectionTable
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let onReady: @Sendable () -> Void
    private let onStopping: @Sendable () -> Void

    init(
        listener: ListenerSource,
        router: APIRouter,
        allowedUIDs: Set<UInt32>,
        maxBodyBytes: Int,
        limits: ConnectionLimits,
        threadPool: NIOThreadPool,
        logger: Logger,
        onReady: @escaping @Sendable () -> Void,
        onStopping: @escaping @Sendable () -> Void
    ) {
        self.listener = listener
        self.router = router
        self.allowedUIDs = allowedUIDs
        self.maxBodyBytes = maxBodyBytes
        self.limits = limits
        self.connections = ConnectionTable(maximum: limits.maximumConnections)
        self.threadPool = threadPool
        self.logger = logger
        self.onReady = onReady
        self.onStopping = onStopping
    }

    typealias HTTPChannel = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    /// An accepted connection on its way to `serve`. NIO traps when a wrapped channel's writer goes away
    /// unfinished, and a connection accepted while the server stops (graceful shutdown, or another service
    /// failing) is dropped without being served: so one that is never taken finishes its writer and closes
    /// its channel itself.
    final class Connection: Sendable {
        private let wrapped: HTTPChannel
        let peer: clinux_peer_cred
        private let taken = Atomic<Bool>(false)

        init(channel: HTTPChannel, peer: clinux_peer_cred) {
            wrapped = channel
            self.peer = peer
        }

        /// The channel, for the one task that serves it.
        func take() -> HTTPChannel {
            taken.store(true, ordering: .sequentiallyConsistent)
            return wrapped
        }

        deinit {
            guard !taken.load(ordering: .sequentiallyConsistent) else { return }
            // The task holds the channel (and so its writer) until the scoped close has finished it.
            let channel = wrapped
            Task { try? await channel.executeThenClose { _, _ in } }
        }
    }

    func run() async throws {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
        let connections = self.connections
        let limits = self.limits
        let logger = self.logger
        let initializer: @Sendable (Channel) -> EventLoopFuture<Connection> = { channel in
            guard let provider = channel as? SocketOptionProvider else {
                return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
            }
            guard let (id, evicted) = connections.admit(channel) else {
                logger.warning(
                    "API connection refused: every open connection has a request in progress",
                    metadata: ["api.max_connections": "\(limits.maximumConnections)"])
                return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
            }
            channel.closeFuture.whenComplete { _ in connections.remove(id) }
            if let evicted {
                logger.debug("API connection evicted to admit a new one", metadata: ["api.max_connections": "\(limits.maximumConnections)"])
                evicted.close(promise: nil)
            }
            let credentials: EventLoopFuture<clinux_peer_cred> = provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(clinux_so_peercred()))
            return credentials.flatMapThrowing { peer in
                let activity = ConnectionActivity(id: id, table: connections, limits: limits, channel: channel, logger: logger)
                let pipeline = channel.pipeline.syncOperations
                try pipeline.addHandler(ConnectionBytesHandler(activity: activity))
                try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                try pipeline.addHandler(ConnectionPhaseHandler(activity: activity))
                return Connection(channel: try HTTPChannel(wrappingChannelSynchronously: channel), peer: peer)
            }
        }
        let server: NIOAsyncChannel<Connection, Never>
        switch listener {
        case .path(let path):
            try Self.prepareSocketPath(path)
            let previous = umask(0o177)
            defer { umask(previous) }
            server = try await bootstrap.bind(
                unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: initializer)
            do {
                try FileSystem.chmod(path, 0o600)
            } catch {
                throw DaemonError.cannotPrepareSocket(path, error)
            }
            logger.info("API listening", metadata: ["api.socket": "\(path)"])
        case .inherited(let fd, let name):
            server = try await bootstrap.bind(fd, childChannelInitializer: initializer)
            logger.info("API listening on an inherited socket", metadata: ["api.fd": "\(fd)", "api.fd_name": "\(name)"])
        }
        onReady()
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound.cancelOnGracefulShutdown() {
                    group.addTask { await self.serve(connection) }
                }
            }
        }
        onStopping()
        if case .path(let path) = listener { unlink(path) }
        logger.info("API stopped")
    }

    /// Creates the socket's directory (0700 if new) and refuses to take over a socket someone still serves.
    static func prepareSocketPath(_ path: String) throws {
        let directory = FileSystem.parentPath(path)
        do {
            try FileSystem.makeDirectories(directory, mode: 0o700)
        } catch {
            throw DaemonError.cannotPrepareSocket(path, error)
        }
        guard FileSystem.exists(path) else { return }
        if let probe = try? UnixSocket.dial(path) {
            close(probe)
            throw DaemonError.socketInUse(path)
        }
    }

    private func serve(_ connection: Connection) async {
        let peer = connection.peer
        let allowed = allowedUIDs.contains(peer.uid)
        do {
            try await connection.take().executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body = ByteBuffer()
                for try await part in inbound.cancelOnGracefulShutdown() {
                    switch part {
                    case .head(let requestHead):
                        head = requestHead
                        body.clear()
                        if !allowed {
                            logger.warning("peer refused", metadata: ["peer.uid": "\(peer.uid)", "peer.pid": "\(peer.pid)"])
                            let error = APIRouter.errorResponse(
                                .init(.permissionDenied, "uid \(peer.uid) is not allowed to use this API (api.allowed_uids)"))
                            try await write(error, keepAlive: false, to: outbound)
                            return
                        }
                        if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                            try await write(tooLarge(), keepAlive: false, to: outbound)
                            return
                        }
                    case .body(var chunk):
                        if body.readableBytes + chunk.readableBytes > maxBodyBytes {
                            try await write(tooLarge(), keepAlive: false, to: outbound)
                            return
                        }
                        body.writeBuffer(&chunk)
                    case .end:
                        guard let requestHead = head else { continue }
                        head = nil
                        let request = APIRequest(
                            method: requestHead.method.rawValue,
                            uri: requestHead.uri,
                            body: Array(body.readableBytesView),
                            peerUID: peer.uid
                        )
                        let router = self.router
                        let response =
                            router.isAsync(request)
                            ? await router.handleAsync(request) : try await threadPool.runIfActive { router.handle(request) }
                        try await write(response, keepAlive: requestHead.isKeepAlive, to: outbound)
                        if !requestHead.isKeepAlive { return }
                    }
                }
            }
        } catch {
            logger.debug("connection ended with an error", metadata: ["error": "\(error)"])
        }
    }

    private func tooLarge() -> APIResponse {
        var response = APIRouter.errorResponse(.init(.invalidArgument, "request body exceeds \(maxBodyBytes) bytes (api.max_body_bytes)"))
        response.status = 413
        return response
    }

    private func write(
        _ response: APIResponse,
        keepAlive: Bool,
        to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        for (name, value) in response.extraHeaders { headers.add(name: name, value: value) }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        try await outbound.write(.head(head))
        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
        try await outbound.write(.end(nil))
    }
}
