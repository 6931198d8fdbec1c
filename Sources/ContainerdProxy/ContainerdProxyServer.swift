import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The snapshots service on its own Unix socket (HTTP/2, plaintext: what containerd's
/// `[proxy_plugins]` dial), as one service of the daemon's ServiceGroup.
///
/// containerd dials lazily and redials with backoff, so the socket may come and go with the daemon; a
/// stale socket file from a previous run is replaced.
public struct ContainerdProxyServer: Service {
    let socketPath: String
    let backend: any SnapshotBackend
    let logger: Logger
    let onListening: @Sendable () -> Void

    /// - Parameters:
    ///   - socketPath: where to listen; its directory is created (0700) if missing, the socket is 0600.
    ///   - onListening: called once the socket accepts connections.
    public init(socketPath: String, backend: any SnapshotBackend, logger: Logger, onListening: @escaping @Sendable () -> Void = {}) {
        self.socketPath = socketPath
        self.backend = backend
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        try Self.makeParentDirectory(of: socketPath)
        let transport = HTTP2ServerTransport.Posix(
            address: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext)
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
