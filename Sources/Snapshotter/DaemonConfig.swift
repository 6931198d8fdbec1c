import BlobStore
import ContainerdProxy
import LinuxKernel
import MountManager
import OCI
import TOML

/// The daemon's settings: built-in defaults, then the TOML file, then command-line flags.
struct DaemonConfig: Equatable, Sendable {
    static let defaultPath = "/etc/ondemand-snapshotter/config.toml"

    var root = "/var/lib/ondemand-snapshotter"
    var socket = "/run/ondemand-snapshotter/snapshotter.sock"
    /// Peer uids (SO_PEERCRED) allowed to use the API.
    var allowedUIDs: [UInt32] = [0]
    /// Largest request body accepted, in bytes.
    var maxBodyBytes = 1 << 20
    /// Open API connections at most, and how long one may idle or take to send a request.
    var apiLimits = ConnectionLimits()
    var logLevel = "info"
    /// Threads for blocking work (SQLite, file-system walks, mount(2)).
    var blockingThreads = 4
    /// `auto` (fanotify, else cachefiles, else eager), `fanotify`, `cachefiles`, `eager` or `seed` (never
    /// chosen by `auto`).
    var frontEnd = "auto"
    /// The seed front end's devnode; a Unix socket path connects to an emulation of it instead.
    var seedDevice = SeedFrontEnd.devicePath
    /// A reader waiting longer than this on a missing range gets EIO.
    var readerTimeoutSeconds = Int(FetchSettings().readerTimeout.components.seconds)
    /// Ranged GETs are grown to at least this many stored bytes (read amplification).
    var minimumFetchBytes = Int(FetchSettings().minimumFetchBytes)
    var maximumConcurrentFetches = FetchSettings().maximumConcurrentFetches
    /// Background fetch ahead of sequential readers, in bytes (0 = off).
    var readaheadBytes = Int(FetchSettings().readaheadBytes)
    /// The page-cache readahead window of image mounts, in KiB (0 = leave the kernel's default).
    var kernelReadaheadKilobytes = ImageService.defaultKernelReadaheadKilobytes
    /// Whether a pulled image's prefetch table (files read at start-up) is fetched in the background at once.
    var prefetchOnPull = true
    /// Seconds between garbage collections of the image store (0 = only at start-up and on `snapctl gc`).
    var gcIntervalSeconds = 3600
    /// Budget of the backing files' chunk bytes (0 = none); the smaller of this and `cacheMaxPercent` applies.
    var cacheMaxBytes: Int64 = 0
    /// Budget as a percentage of the cache's filesystem size (0 = none).
    var cacheMaxPercent = 0
    /// Chunks read or written within this many milliseconds are never evicted.
    var evictionGraceMilliseconds = Int(FetchSettings().evictionGrace.components.seconds) * 1000
    /// The shortest eviction grace accepted: it covers the kernel's read of a range after the front end has
    /// answered (fanotify), which a loaded host can delay by far more than a millisecond.
    static let minimumEvictionGraceMilliseconds = 500
    /// Gzip indexes of plain images: look for them at pull, which to trust (`local` or `repository`), and
    /// index digests trusted in any case.
    var gzipIndexPolicy = GzipIndexPolicy()
    /// The CRI image-service proxy's socket (kubelet's `--image-service-endpoint`); empty: off. It forwards to
    /// containerd's CRI socket `criUpstreamSocket` and keeps the registry credentials of each pull.
    var criImageProxySocket = ""
    var criUpstreamSocket = "/run/containerd/containerd.sock"
    /// containerd-style `certs.d` directory for mirrors and TLS (used when it exists).
    var registryHostsDirectory = "/etc/containerd/certs.d"
    /// Docker's config.json for credentials (used when it exists); empty means `$DOCKER_CONFIG` or `~/.docker`.
    var dockerConfig = ""
    /// HTTP proxy for registry requests (e.g. a Dragonfly dfdaemon); empty means libcurl's environment handling.
    var registryProxy = ""
    /// containerd's snapshots gRPC service (for `[proxy_plugins]`); empty turns it off.
    var containerdSocket = "/run/ondemand-snapshotter/containerd.sock"
    /// Open connections to the containerd socket at most, and how long one may go without an RPC.
    var containerdLimits = ContainerdConnectionLimits()

    /// Reads a config file over the defaults. Unknown keys are errors, so typos do not pass silently.
    static func load(path: String, over base: DaemonConfig = DaemonConfig()) throws(DaemonError) -> DaemonConfig {
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.readFile(path)
        } catch {
            throw .unreadable(path: path, reason: error.description)
        }
        let document: TOMLValue
        do {
            document = try TOMLParser.parse(String(decoding: bytes, as: UTF8.self))
        } catch {
            throw .syntax(path: path, error: error)
        }
        return try DaemonConfig(document: document, path: path, base: base)
    }

    init() {}

    private init(document: TOMLValue, path: String, base: DaemonConfig) throws(DaemonError) {
        self = base
        let reader = ConfigReader(path: path)
        let top = try reader.table(
            document, at: "", known: ["root", "api", "log", "daemon", "ondemand", "registry", "containerd", "cache", "zran", "cri"])
        if let value = top["root"] { root = try reader.string(value, at: "root") }
        if let api = top["api"] {
            let table = try reader.table(
                api, at: "api",
                known: [
                    "socket", "allowed_uids", "max_body_bytes", "max_connections", "idle_timeout_seconds",
                    "request_timeout_seconds",
                ])
            if let value = table["socket"] { socket = try reader.string(value, at: "api.socket") }
            if let value = table["allowed_uids"] {
                allowedUIDs = try reader.array(value, at: "api.allowed_uids").map { item throws(DaemonError) in
                    UInt32(try reader.integer(item, at: "api.allowed_uids", range: 0...Int64(UInt32.max)))
                }
            }
            if let value = table["max_body_bytes"] {
                maxBodyBytes = Int(try reader.integer(value, at: "api.max_body_bytes", range: 1024...(1 << 30)))
            }
            if let value = table["max_connections"] {
                apiLimits.maximumConnections = Int(try reader.integer(value, at: "api.max_connections", range: 1...65536))
            }
            if let value = table["idle_timeout_seconds"] {
                apiLimits.idleTimeout = .seconds(try reader.integer(value, at: "api.idle_timeout_seconds", range: 1...86400))
            }
            if let value = table["request_timeout_seconds"] {
                apiLimits.requestTimeout = .seconds(try reader.integer(value, at: "api.request_timeout_seconds", range: 1...3600))
            }
        }
        if let log = top["log"] {
            let table = try reader.table(log, at: "log", known: ["level"])
            if let value = table["level"] { logLevel = try reader.string(value, at: "log.level") }
        }
        if let ondemand = top["ondemand"] {
            let table = try reader.table(
                ondemand, at: "ondemand",
                known: [
                    "front_end", "seed_device", "reader_timeout_seconds", "min_fetch_bytes", "max_concurrent_fetches",
                    "readahead_bytes", "kernel_readahead_kb", "prefetch_on_pull",
                ])
            if let value = table["front_end"] { frontEnd = try reader.string(value, at: "ondemand.front_end") }
            if let value = table["seed_device"] { seedDevice = try reader.string(value, at: "ondemand.seed_device") }
            if let value = table["reader_timeout_seconds"] {
                readerTimeoutSeconds = Int(try reader.integer(value, at: "ondemand.reader_timeout_seconds", range: 1...3600))
            }
            if let value = table["min_fetch_bytes"] {
                minimumFetchBytes = Int(try reader.integer(value, at: "ondemand.min_fetch_bytes", range: 0...(64 << 20)))
            }
            if let value = table["readahead_bytes"] {
                readaheadBytes = Int(try reader.integer(value, at: "ondemand.readahead_bytes", range: 0...(1 << 30)))
            }
            if let value = table["prefetch_on_pull"] { prefetchOnPull = try reader.boolean(value, at: "ondemand.prefetch_on_pull") }
            if let value = table["kernel_readahead_kb"] {
                kernelReadaheadKilobytes = Int(try reader.integer(value, at: "ondemand.kernel_readahead_kb", range: 0...(64 << 10)))
            }
            if let value = table["max_concurrent_fetches"] {
                maximumConcurrentFetches = Int(try reader.integer(value, at: "ondemand.max_concurrent_fetches", range: 1...256))
            }
        }
        if let registry = top["registry"] {
            let table = try reader.table(registry, at: "registry", known: ["hosts_dir", "docker_config", "proxy"])
            if let value = table["hosts_dir"] { registryHostsDirectory = try reader.string(value, at: "registry.hosts_dir") }
            if let value = table["docker_config"] { dockerConfig = try reader.string(value, at: "registry.docker_config") }
            if let value = table["proxy"] { registryProxy = try reader.string(value, at: "registry.proxy") }
        }
        if let containerd = top["containerd"] {
            let table = try reader.table(containerd, at: "containerd", known: ["socket", "max_connections", "idle_timeout_seconds"])
            if let value = table["socket"] { containerdSocket = try reader.string(value, at: "containerd.socket") }
            if let value = table["max_connections"] {
                containerdLimits.maximumConnections = Int(try reader.integer(value, at: "containerd.max_connections", range: 1...4096))
            }
            if let value = table["idle_timeout_seconds"] {
                containerdLimits.idleTimeout = .seconds(try reader.integer(value, at: "containerd.idle_timeout_seconds", range: 1...86400))
            }
        }
        if let cache = top["cache"] {
            let table = try reader.table(
                cache, at: "cache", known: ["gc_interval_seconds", "max_bytes", "max_percent", "eviction_grace_ms"])
            if let value = table["gc_interval_seconds"] {
                gcIntervalSeconds = Int(try reader.integer(value, at: "cache.gc_interval_seconds", range: 0...(7 * 86400)))
            }
            if let value = table["max_bytes"] {
                cacheMaxBytes = try reader.integer(value, at: "cache.max_bytes", range: 0...Int64.max)
            }
            if let value = table["max_percent"] {
                cacheMaxPercent = Int(try reader.integer(value, at: "cache.max_percent", range: 0...100))
            }
            if let value = table["eviction_grace_ms"] {
                evictionGraceMilliseconds = Int(
                    try reader.integer(
                        value, at: "cache.eviction_grace_ms", range: Int64(Self.minimumEvictionGraceMilliseconds)...3_600_000))
            }
        }
        if let cri = top["cri"] {
            let table = try reader.table(cri, at: "cri", known: ["image_proxy_socket", "containerd_socket"])
            if let value = table["image_proxy_socket"] { criImageProxySocket = try reader.string(value, at: "cri.image_proxy_socket") }
            if let value = table["containerd_socket"] { criUpstreamSocket = try reader.string(value, at: "cri.containerd_socket") }
        }
        if let zran = top["zran"] {
            let table = try reader.table(zran, at: "zran", known: ["discover", "trust", "trusted_indexes"])
            if let value = table["discover"] { gzipIndexPolicy.discover = try reader.boolean(value, at: "zran.discover") }
            if let value = table["trust"] {
                let text = try reader.string(value, at: "zran.trust")
                guard let trust = GzipIndexPolicy.Trust(rawValue: text) else {
                    throw .invalid(key: "zran.trust", reason: "must be local or repository, got \(text)")
                }
                gzipIndexPolicy.trust = trust
            }
            if let value = table["trusted_indexes"] {
                for item in try reader.array(value, at: "zran.trusted_indexes") {
                    let text = try reader.string(item, at: "zran.trusted_indexes")
                    guard (try? Digest(parsing: text)) != nil else {
                        throw .invalid(key: "zran.trusted_indexes", reason: "\(text) is not a digest (sha256:<64 hex digits>)")
                    }
                    gzipIndexPolicy.trustedDigests.insert(text)
                }
            }
        }
        if let daemon = top["daemon"] {
            let table = try reader.table(daemon, at: "daemon", known: ["blocking_threads"])
            if let value = table["blocking_threads"] {
                blockingThreads = Int(try reader.integer(value, at: "daemon.blocking_threads", range: 1...64))
            }
        }
    }

    /// Checks values that no type can express; returns the first problem.
    func validate() throws(DaemonError) {
        guard root.hasPrefix("/") else { throw .invalid(key: "root", reason: "must be an absolute path, got \(root)") }
        guard socket.hasPrefix("/") else {
            throw .invalid(key: "api.socket", reason: "must be an absolute path, got \(socket)")
        }
        guard socket.utf8.count < 108 else {
            throw .invalid(key: "api.socket", reason: "is longer than a Unix socket path may be (107 bytes)")
        }
        for (key, path) in [("cri.image_proxy_socket", criImageProxySocket), ("cri.containerd_socket", criUpstreamSocket)]
        where !(path.isEmpty || (path.hasPrefix("/") && path.utf8.count < 108)) {
            throw .invalid(key: key, reason: "must be empty or an absolute path under 108 bytes, got \(path)")
        }
        guard containerdSocket.isEmpty || (containerdSocket.hasPrefix("/") && containerdSocket.utf8.count < 108) else {
            throw .invalid(key: "containerd.socket", reason: "must be empty or an absolute path under 108 bytes, got \(containerdSocket)")
        }
        guard FrontEndChoice(rawValue: frontEnd) != nil else {
            throw .invalid(key: "ondemand.front_end", reason: "must be auto, fanotify, cachefiles, eager or seed, got \(frontEnd)")
        }
        guard gcIntervalSeconds >= 0 else {
            throw .invalid(key: "cache.gc_interval_seconds", reason: "must be 0 (off) or a number of seconds, got \(gcIntervalSeconds)")
        }
        guard cacheMaxBytes >= 0, (0...100).contains(cacheMaxPercent) else {
            throw .invalid(key: "cache.max_bytes", reason: "must be 0 (no budget) or a byte count, and max_percent 0 to 100")
        }
        guard evictionGraceMilliseconds >= Self.minimumEvictionGraceMilliseconds else {
            throw .invalid(
                key: "cache.eviction_grace_ms",
                reason:
                    "must be at least \(Self.minimumEvictionGraceMilliseconds), got \(evictionGraceMilliseconds) (the kernel reads a range after it is answered; a shorter grace lets an eviction punch it first)"
            )
        }
        guard seedDevice.hasPrefix("/") else {
            throw .invalid(key: "ondemand.seed_device", reason: "must be an absolute path, got \(seedDevice)")
        }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(logLevel) else {
            throw .invalid(key: "log.level", reason: "must be trace, debug, info, notice, warning, error or critical")
        }
    }
}

/// Typed access to TOML values with errors that name the file and key.
private struct ConfigReader {
    let path: String

    func table(_ value: TOMLValue, at key: String, known: Set<String>) throws(DaemonError) -> [String: TOMLValue] {
        guard let table = value.table else {
            throw .wrongType(path: path, key: key, expected: "table", found: value.typeName)
        }
        for name in table.keys where !known.contains(name) {
            throw .unknownKey(path: path, key: key.isEmpty ? name : "\(key).\(name)")
        }
        return table
    }

    func string(_ value: TOMLValue, at key: String) throws(DaemonError) -> String {
        guard let string = value.string else {
            throw .wrongType(path: path, key: key, expected: "string", found: value.typeName)
        }
        return string
    }

    func boolean(_ value: TOMLValue, at key: String) throws(DaemonError) -> Bool {
        guard let boolean = value.boolean else {
            throw .wrongType(path: path, key: key, expected: "boolean", found: value.typeName)
        }
        return boolean
    }

    func array(_ value: TOMLValue, at key: String) throws(DaemonError) -> [TOMLValue] {
        guard let array = value.array else {
            throw .wrongType(path: path, key: key, expected: "array", found: value.typeName)
        }
        return array
    }

    func integer(_ value: TOMLValue, at key: String, range: ClosedRange<Int64>) throws(DaemonError) -> Int64 {
        guard let integer = value.integer else {
            throw .wrongType(path: path, key: key, expected: "integer", found: value.typeName)
        }
        guard range.contains(integer) else { throw .outOfRange(path: path, key: key, value: integer, range: range) }
        return integer
    }
}
