import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How many connections the containerd socket keeps and how long one may go without an RPC. containerd
/// holds one connection and redials after a GOAWAY, so idle connections can be closed safely.
public struct ContainerdConnectionLimits: Sendable, Equatable {
    /// Connections beyond this are closed as they arrive (`containerd.max_connections`).
    public var maximumConnections = 64
    /// A connection with no RPC in flight for this long gets a GOAWAY and is closed; one that does not answer
    /// PINGs (nor speaks HTTP/2 at all) is closed sooner (`containerd.idle_timeout_seconds`).
    public var idleTimeout: Duration = .seconds(300)

    public init() {}
}

/// The snapshots service on its own Unix socket (HTTP/2, plaintext: what containerd's
/// `[proxy_plugins]` dial), as one service of the daemon's ServiceGroup.
///
/// containerd dials lazily and redials with backoff, so the socket may come and go with the daemon; a
/// stale socket file from a previous run is replaced.
public struct ContainerdProxyServer: Service {
    let socketPath: String
    let backend: any SnapshotBackend
    let limits: ContainerdConnectionLimits
    let logger: Logger
    let onListening: @Sendable () -> Void

    /// - Parameters:
    ///   - socketPath: where to listen; its directory is created (0700) if missing, the socket is 0600.
    ///   - onListening: called once the socket accepts connections.
    public init(
        socketPath: String,
        backend: any SnapshotBackend,
        limits: ContainerdConnectionLimits = ContainerdConnectionLimits(),
        logger: Logger,
        onListening: @escaping @Sendable () -> Void = {}
    ) {
        self.socketPath = socketPath
        self.backend = backend
        self.limits = limits
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        try Self.makeParentDirectory(of: socketPath)
        let limits = self.limits
        let logger = self.logger
        let open = Atomic<Int>(0)
        let config = HTTP2ServerTransport.Posix.Config.defaults { config in
            config.connection.maxIdleTime = limits.idleTimeout
            // The idle GOAWAY waits for the peer to answer a PING, which a silent peer never does; keepalive
            // PINGs that go unanswered close such a connection first (at three quarters of the idle time).
            config.connection.keepalive.time = limits.idleTimeout / 2
            config.connection.keepalive.timeout = limits.idleTimeout / 4
            // Called for every accepted connection, Unix sockets included.
            config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
                let count = open.wrappingAdd(1, ordering: .relaxed).newValue
                channel.closeFuture.whenComplete { _ in open.wrappingSubtract(1, ordering: .relaxed) }
                guard count <= limits.maximumConnections else {
                    logger.warning(
                        "containerd socket connection refused: too many open",
                        metadata: ["containerd.max_connections": "\(limits.maximumConnections)"])
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        HandshakeDeadlineHandler(timeout: .seconds(min(limits.idleTimeout.components.seconds, 10))), position: .first)
                }
            }
        }
        let transport = HTTP2ServerTransport.Posix(
            address: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext, config: config)
        let server = GRPCServer(transport: transport, services: [SnapshotsService(backend: backend, logger: logger)])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                group.addTask {
                    // When the bind fails, `serve()` throws why (e.g. "Read-only file system"); the address's
                    // own error only says that none is bound, and must not be the one that ends the group.
                    guard (try? await transport.listeningAddress) != nil else { return }
                    // Only root (containerd) may talk to the snapshotter.
                    _ = chmod(socketPath, 0o600)
                    logger.info("containerd snapshots service listening", metadata: ["containerd.socket": "\(socketPath)"])
                    onListening()
                }
            }
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }

    static func makeParentDirectory(of path: String) throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        var components: [String] = []
        for part in directory.split(separator: "/") {
            components.append(String(part))
            let prefix = "/" + components.joined(separator: "/")
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw SnapshotBackendError(.internal, "cannot create \(prefix): errno \(errno)")
            }
        }
    }
}
