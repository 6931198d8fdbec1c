import ArgumentParser
import BlobStore
import Catalog
import ContainerdProxy
import Foundation
import LinuxKernel
import Logging
import MountManager
import NIOPosix
import OCI
import OCIRegistry
import ServiceLifecycle
import SnapshotterAPI
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

let snapshotterVersion = "0.1.0"

/// The `snapshotterd` command: settings, then the services. `Sources/snapshotterd/main.swift` runs it.
public struct SnapshotterDaemon: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "snapshotterd",
        abstract: "The ondemand-snapshotter daemon: container snapshots over a JSON API on a Unix socket.",
        discussion: """
            Settings come from built-in defaults, then the TOML config (default \(DaemonConfig.defaultPath), \
            read if present), then these flags.
            """,
        version: snapshotterVersion
    )

    @Option(help: "Config file (TOML). An explicitly named file must exist.")
    var config: String?

    @Option(
        help: ArgumentHelp(
            "Run one call (convert or inspect) without a daemon: its JSON request on stdin, its JSON answer on stdout.",
            visibility: .hidden))
    var offlineCall: String?

    @Option(help: "State directory (catalog, snapshots). Default /var/lib/ondemand-snapshotter.")
    var root: String?

    @Option(help: "API socket path. Default /run/ondemand-snapshotter/snapshotter.sock.")
    var socket: String?

    @Option(name: .customLong("allowed-uid"), help: "A peer uid allowed to use the API (repeatable; replaces the config's list).")
    var allowedUIDs: [UInt32] = []

    @Option(help: "Largest request body in bytes.")
    var maxBodyBytes: Int?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?

    @Option(help: "On-demand front end: auto, fanotify, cachefiles, eager or seed.")
    var frontEnd: String?

    @Option(help: "The seed front end's devnode (default /dev/cachefiles_ondemand); a Unix socket path connects to an emulation.")
    var seedDevice: String?

    @Option(help: "Seconds a reader may wait on a missing range before it gets EIO.")
    var readerTimeout: Int?

    @Option(help: "Bytes fetched ahead of sequential readers (0 = off).")
    var readaheadBytes: Int?

    @Option(help: "Seconds between garbage collections of the image store (0 = only at start-up and on snapctl gc).")
    var gcInterval: Int?

    @Option(help: "Budget of the cache's chunk bytes; least recently used chunks are evicted beyond it (0 = none).")
    var cacheMaxBytes: Int64?

    @Option(help: "Budget as a percentage of the cache filesystem's size (0 = none).")
    var cacheMaxPercent: Int?

    @Option(help: "Milliseconds a chunk stays safe from eviction after it was read or written (default 2000, at least 500).")
    var evictionGraceMs: Int?

    @Option(help: "containerd snapshots gRPC socket (proxy plugin). Default /run/ondemand-snapshotter/containerd.sock; \"\" turns it off.")
    var containerdSocket: String?

    @Option(
        help:
            "Serve Kubernetes' CRI image service on this socket (kubelet --image-service-endpoint), forwarding to containerd and keeping each pull's registry credentials. Off by default."
    )
    var criImageSocket: String?

    @Option(help: "containerd's CRI socket the image-service proxy forwards to (default /run/containerd/containerd.sock).")
    var criUpstreamSocket: String?

    public init() {}

    public func run() async throws {
        if let offlineCall {
            // snapctl's fallback when no daemon answers: the call runs here, in this process, and exits.
            OfflineCall.exitProcess(await OfflineCall.run(offlineCall, registry: try Self.registryConfiguration(try resolveConfig())))
        }
        let settings = try resolveConfig()
        let level = Logger.Level(rawValue: settings.logLevel) ?? .info
        LoggingSystem.bootstrap { label in StructuredLogHandler(label: label, level: level) }
        var logger = Logger(label: "snapshotterd")
        logger[metadataKey: "pid"] = "\(getpid())"
        let openFiles = ProcessLimits.raiseOpenFiles()
        logger.debug("open-file limit", metadata: ["daemon.nofile": "\(openFiles)"])

        try FileSystem.makeDirectories(settings.root, mode: 0o700)
        let lock = try RootLock(root: settings.root)
        defer { withExtendedLifetime(lock) {} }

        let database = try Catalog.open(root: settings.root, logger: logger)
        let service = SnapshotService(root: settings.root, database: database, logger: logger)
        let reconciler = Reconciler(service: service, logger: logger)
        try reconciler.reconcileAtStartup()

        var fetchSettings = FetchSettings()
        fetchSettings.readerTimeout = .seconds(settings.readerTimeoutSeconds)
        fetchSettings.minimumFetchBytes = UInt64(settings.minimumFetchBytes)
        fetchSettings.maximumConcurrentFetches = settings.maximumConcurrentFetches
        fetchSettings.readaheadBytes = UInt64(settings.readaheadBytes)
        fetchSettings.cacheBudgetBytes = try Self.cacheBudget(settings)
        fetchSettings.evictionGrace = .milliseconds(settings.evictionGraceMilliseconds)
        let engine = BlobEngine(settings: fetchSettings, store: CatalogChunkStore(database: database), logger: logger)
        let frontEnd = try FrontEndSelector.start(
            FrontEndChoice(rawValue: settings.frontEnd) ?? .auto,
            paths: FrontEndPaths(root: settings.root, holderBinary: Self.holderBinary(), seedDevice: settings.seedDevice),
            filler: EngineFiller(engine: engine), logger: logger)
        let client = RegistryClient(configuration: try Self.registryConfiguration(settings), logger: logger)
        let images = ImageService(
            root: settings.root, database: database, client: client, engine: engine, frontEnd: frontEnd,
            kernelReadaheadKilobytes: settings.kernelReadaheadKilobytes,
            prefetchOnPull: settings.prefetchOnPull, gzipIndexPolicy: settings.gzipIndexPolicy, logger: logger)
        try await images.start()
        ProcessLimits.releaseFreedMemory()

        let threadPool = NIOThreadPool(numberOfThreads: settings.blockingThreads)
        threadPool.start()
        let listener = try Systemd.activatedSocket() ?? .path(settings.socket)
        let socketDescription: String
        switch listener {
        case .path(let path): socketDescription = path
        case .inherited(_, let name): socketDescription = "socket-activated \(name)"
        }
        let started = monotonicNanoseconds()
        let conversions = ConversionService(root: settings.root, client: client, logger: logger)
        let router = APIRouter(service: service, images: images, conversions: conversions, reconciler: reconciler, logger: logger) {
            let counts = try service.catalog.countsByKind()
            var snapshots = Dictionary(uniqueKeysWithValues: SnapshotKind.allCases.map { ($0.rawValue, 0) })
            snapshots.merge(counts) { $1 }
            var status = StatusResponse(
                version: snapshotterVersion,
                pid: getpid(),
                root: settings.root,
                socket: socketDescription,
                uptimeSeconds: Double(monotonicNanoseconds() - started) / 1e9,
                frontEnd: frontEnd.name,
                catalogSchema: try database.schemaVersion(),
                snapshots: snapshots,
                mounts: try service.activeMounts(),
                leftovers: try reconciler.leftovers()
            )
            status.images = try images.statuses()
            status.cache = try images.cacheStatus(walkingFiles: false)
            return status
        }
        let others = settings.allowedUIDs.filter { $0 != 0 }
        if !others.isEmpty {
            logger.warning(
                "api.allowed_uids admits non-root peers: they may pull images and manage snapshots (the daemon fetches for them as root); mount, unmount, convert and inspect stay root-only",
                metadata: ["api.allowed_uids": "\(others)"])
        }
        let server = APIServer(
            listener: listener,
            router: router,
            allowedUIDs: Set(settings.allowedUIDs),
            maxBodyBytes: settings.maxBodyBytes,
            limits: settings.apiLimits,
            threadPool: threadPool,
            logger: logger,
            onReady: { Systemd.notify("READY=1\nSTATUS=serving on \(socketDescription)") },
            onStopping: { Systemd.notify("STOPPING=1\nSTATUS=stopping") }
        )
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
        if !settings.containerdSocket.isEmpty {
            let backend = ContainerdBackend(
                service: service, images: images, reconciler: reconciler, threadPool: threadPool, logger: logger)
            services.append(
                .init(
                    service: ContainerdProxyServer(
                        socketPath: settings.containerdSocket, backend: backend, limits: settings.containerdLimits, logger: logger)))
        }
        if !settings.criImageProxySocket.isEmpty {
            let (store, credentialLogger) = (client.configuration.pullCredentials, logger)
            services.append(
                .init(
                    service: CRIImageProxy(
                        socketPath: settings.criImageProxySocket, upstreamPath: settings.criUpstreamSocket, logger: logger
                    ) { credentials in
                        Self.learn(credentials, into: store, logger: credentialLogger)
                    }))
        }
        if settings.gcIntervalSeconds > 0 {
            services.append(
                .init(
                    service: GarbageCollectorService(
                        images: images, interval: .seconds(settings.gcIntervalSeconds), threadPool: threadPool, logger: logger)))
        }
        if let interval = Systemd.watchdogPingInterval() {
            services.append(.init(service: WatchdogService(interval: interval, logger: logger)))
        }
        var groupConfig = ServiceGroupConfiguration(services: services, logger: logger)
        groupConfig.gracefulShutdownSignals = [.sigterm, .sigint]
        groupConfig.maximumGracefulShutdownDuration = .seconds(30)
        logger.info(
            "snapshotterd starting",
            metadata: ["version": "\(snapshotterVersion)", "root": "\(settings.root)", "api.socket": "\(socketDescription)"])
        let outcome: Result<Void, any Error>
        do {
            try await ServiceGroup(configuration: groupConfig).run()
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        // Also when a service failed: with images mounted, the group stays with its holder so the next daemon
        // serves their reads; without, the holder goes too instead of outliving a daemon that never ran.
        frontEnd.stop(keepGroup: images.hasMountedImages())
        try await threadPool.shutdownGracefully()
        try outcome.get()
        logger.info("snapshotterd stopped")
    }

    /// Defaults, then the config file, then flags; relative paths are taken from the working directory.
    private func resolveConfig() throws -> DaemonConfig {
        var settings = DaemonConfig()
        if let config {
            settings = try DaemonConfig.load(path: config)
        } else if FileSystem.exists(DaemonConfig.defaultPath) {
            settings = try DaemonConfig.load(path: DaemonConfig.defaultPath)
        }
        if let root { settings.root = root }
        if let socket { settings.socket = socket }
        if !allowedUIDs.isEmpty { settings.allowedUIDs = allowedUIDs }
        if let maxBodyBytes { settings.maxBodyBytes = maxBodyBytes }
        if let logLevel { settings.logLevel = logLevel }
        if let frontEnd { settings.frontEnd = frontEnd }
        if let seedDevice { settings.seedDevice = Self.absolute(seedDevice) }
        if let readerTimeout { settings.readerTimeoutSeconds = readerTimeout }
        if let readaheadBytes { settings.readaheadBytes = readaheadBytes }
        if let gcInterval { settings.gcIntervalSeconds = gcInterval }
        if let cacheMaxBytes { settings.cacheMaxBytes = cacheMaxBytes }
        if let cacheMaxPercent { settings.cacheMaxPercent = cacheMaxPercent }
        if let evictionGraceMs { settings.evictionGraceMilliseconds = evictionGraceMs }
        if let containerdSocket { settings.containerdSocket = containerdSocket.isEmpty ? "" : Self.absolute(containerdSocket) }
        if let criImageSocket { settings.criImageProxySocket = criImageSocket.isEmpty ? "" : Self.absolute(criImageSocket) }
        if let criUpstreamSocket { settings.criUpstreamSocket = Self.absolute(criUpstreamSocket) }
        settings.root = Self.absolute(settings.root)
        settings.socket = Self.absolute(settings.socket)
        try settings.validate()
        return settings
    }

    /// Keeps a CRI pull's credentials for the registry of its image (Docker Hub's short names included).
    static func learn(_ credentials: CRICredentials, into store: PullCredentialStore, logger: Logger) {
        guard let reference = try? ImageReference(parsing: credentials.image) else { return }
        var username = credentials.username
        var password = credentials.password
        if username.isEmpty, !credentials.auth.isEmpty, let decoded = Data(base64Encoded: credentials.auth).map({ [UInt8]($0) }),
            let colon = decoded.firstIndex(of: UInt8(ascii: ":"))
        {
            username = String(decoding: decoded[..<colon], as: UTF8.self)
            password = String(decoding: decoded[(colon + 1)...], as: UTF8.self)
        }
        store.set(
            RegistryCredentials(
                username: username, password: password, identityToken: credentials.identityToken.isEmpty ? nil : credentials.identityToken,
                registryToken: credentials.registryToken.isEmpty ? nil : credentials.registryToken),
            for: reference.registry)
        logger.info("registry credentials from a CRI pull kept", metadata: ["registry.host": "\(reference.registry)"])
    }

    /// The budget in bytes: the smaller of `cache.max_bytes` and `cache.max_percent` of the filesystem that
    /// holds the cache; nil when neither is set.
    static func cacheBudget(_ settings: DaemonConfig) throws -> UInt64? {
        var budget: UInt64?
        if settings.cacheMaxBytes > 0 { budget = UInt64(settings.cacheMaxBytes) }
        if settings.cacheMaxPercent > 0 {
            let share = try FileSystem.capacity(of: settings.root).total / 100 * UInt64(settings.cacheMaxPercent)
            budget = min(budget ?? share, share)
        }
        return budget
    }

    /// `snapshotterd-fdholder` next to this executable.
    static func holderBinary() -> String {
        guard let me = FileSystem.readLink("/proc/self/exe") else { return "/usr/local/bin/snapshotterd-fdholder" }
        return FileSystem.join(FileSystem.parentPath(me), "snapshotterd-fdholder")
    }

    static func registryConfiguration(_ settings: DaemonConfig) throws -> RegistryConfiguration {
        var configuration = RegistryConfiguration()
        if FileSystem.isDirectory(settings.registryHostsDirectory) { configuration.hostsDirectory = settings.registryHostsDirectory }
        let dockerPath =
            settings.dockerConfig.isEmpty
            ? DockerConfig.defaultPath(environment: Self.environment()) : settings.dockerConfig
        if let dockerPath, FileSystem.exists(dockerPath) { configuration.dockerConfig = try DockerConfig.load(path: dockerPath) }
        if !settings.registryProxy.isEmpty { configuration.proxy = settings.registryProxy }
        return configuration
    }

    static func environment() -> [String: String] {
        var result: [String: String] = [:]
        for name in ["DOCKER_CONFIG", "HOME"] {
            if let value = getenv(name) { result[name] = String(cString: value) }
        }
        return result
    }

    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        var base = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var rest = Substring(path)
        while rest.hasPrefix("./") { rest = rest.dropFirst(2) }
        if !base.hasSuffix("/") { base += "/" }
        return base + rest
    }
}

/// An exclusive lock on the root (flock on `snapshotterd.lock`), so two daemons never share one catalog.
final class RootLock: Sendable {
    let fd: Int32

    init(root: String) throws {
        let path = FileSystem.join(root, "snapshotterd.lock")
        fd = try retryingSyscall("open", path) { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let owner = (try? FileSystem.readFile(path)).map { "pid " + String(decoding: $0, as: UTF8.self) } ?? "unknown pid"
            close(fd)
            throw DaemonError.held(root: root, owner: owner.trimmingCharacters(in: " \n"))
        }
        let pid = Array(String(getpid()).utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    deinit { close(fd) }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}
