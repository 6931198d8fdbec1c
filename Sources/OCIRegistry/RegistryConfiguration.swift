import OCI

/// What the registry client may do at an endpoint (containerd's `capabilities`).
public struct RegistryCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let pull = RegistryCapabilities(rawValue: 1 << 0)
    public static let resolve = RegistryCapabilities(rawValue: 1 << 1)
    public static let push = RegistryCapabilities(rawValue: 1 << 2)
    public static let all: RegistryCapabilities = [.pull, .resolve, .push]
}

/// One place the client talks to for a registry: the registry itself or a mirror.
public struct RegistryEndpoint: Sendable, Hashable {
    /// `scheme://host[:port]`.
    public var baseURL: String
    /// The API path prefix, `/v2` unless `override_path` gave another.
    public var pathPrefix = "/v2"
    public var capabilities: RegistryCapabilities = .all
    /// Extra CA files (PEM) trusted in addition to the system CAs.
    public var caFiles: [String] = []
    public var skipVerify = false
    public var clientCertificate: String?
    public var clientKey: String?
    public var headers: [String: String] = [:]

    public init(baseURL: String, pathPrefix: String = "/v2", capabilities: RegistryCapabilities = .all) {
        self.baseURL = baseURL
        self.pathPrefix = pathPrefix
        self.capabilities = capabilities
    }

    /// `host[:port]` of `baseURL`, used to key credentials and tokens.
    public var host: String {
        var s = Substring(baseURL)
        if let r = s.firstRange(of: "://") { s = s[r.upperBound...] }
        if let slash = s.firstIndex(of: "/") { s = s[..<slash] }
        return String(s)
    }

    func url(_ path: String) -> String { baseURL + pathPrefix + path }
}

/// Per-registry settings from the service config.
public struct RegistryHostSettings: Sendable, Hashable {
    /// Talk plain HTTP. Nil means: plain HTTP for loopback registries without a CA file, HTTPS otherwise.
    public var plainHTTP: Bool?
    public var caFile: String?
    public var skipVerify = false
    public var clientCertificate: String?
    public var clientKey: String?
    public var credentials: RegistryCredentials?

    public init(plainHTTP: Bool? = nil, caFile: String? = nil, skipVerify: Bool = false, credentials: RegistryCredentials? = nil) {
        self.plainHTTP = plainHTTP
        self.caFile = caFile
        self.skipVerify = skipVerify
        self.credentials = credentials
    }
}

/// Retries with exponential backoff for 429, 5xx and dropped connections.
public struct RetryPolicy: Sendable, Hashable {
    public var maxAttempts = 6
    public var initialDelayMilliseconds = 100
    public var maxDelayMilliseconds = 10_000
    /// Upper bound on a server's `Retry-After`.
    public var maxRetryAfterSeconds = 30
    /// With another endpoint to try (a mirror's server), a 429 or 5xx is retried here only this many times and
    /// only while the wait it asks for is at most `fallbackWaitMilliseconds`; then the next endpoint is tried.
    public var attemptsBeforeFallback = 2
    public var fallbackWaitMilliseconds = 1000
    public init(maxAttempts: Int = 6, initialDelayMilliseconds: Int = 100) {
        self.maxAttempts = maxAttempts
        self.initialDelayMilliseconds = initialDelayMilliseconds
    }

    /// Delay before attempt `attempt` (1-based retry count): initial * 2^(attempt-1), capped.
    func delayMilliseconds(retry attempt: Int) -> Int {
        let shift = min(attempt - 1, 20)
        return min(initialDelayMilliseconds << shift, maxDelayMilliseconds)
    }
}

/// Everything the client needs to know about registries.
public struct RegistryConfiguration: Sendable {
    /// Settings keyed by registry name (`host[:port]`, `docker.io`).
    public var hosts: [String: RegistryHostSettings] = [:]
    /// Docker's config.json contents, consulted after the service config's credentials.
    public var dockerConfig = DockerConfig()
    /// A containerd-style `certs.d` directory (`<dir>/<host[:port]>/hosts.toml`) for mirrors and TLS.
    public var hostsDirectory: String?
    /// An HTTP proxy URL for every request; nil leaves libcurl's http_proxy/https_proxy/no_proxy handling on.
    public var proxy: String?
    public var retry = RetryPolicy()
    public var timeouts = RegistryTimeouts()
    public var limits = ManifestLimits()
    public var userAgent = "ondemand-snapshotter"
    /// Chunk size of chunked uploads (PATCH); blobs up to this size go up in one PUT.
    public var uploadChunkBytes = 16 << 20
    /// Credentials learned at run time (CRI pulls), shared by copies of this configuration.
    public var pullCredentials = PullCredentialStore()

    public init() {}

    static let loopbackHosts: Set<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]

    static func isLoopback(_ registry: String) -> Bool {
        let host = hostName(registry)
        return loopbackHosts.contains(host) || host.hasPrefix("127.")
    }

    /// `host[:port]` without the port (`[::1]:5000` keeps its brackets).
    static func hostName(_ hostPort: String) -> String {
        if hostPort.hasPrefix("[") {
            if let end = hostPort.firstIndex(of: "]") { return String(hostPort[...end]) }
        } else if let colon = hostPort.lastIndex(of: ":") {
            return String(hostPort[..<colon])
        }
        return hostPort
    }

    /// The endpoints to use for `registry`, in order: hosts.toml mirrors, then the registry itself.
    func endpoints(for registry: String) throws(RegistryError) -> [RegistryEndpoint] {
        if let dir = hostsDirectory, let hosts = try HostsConfig.load(directory: dir, registry: registry) {
            return hosts.endpoints(defaultServer: defaultEndpoint(for: registry))
        }
        return [defaultEndpoint(for: registry)]
    }

    func defaultEndpoint(for registry: String) -> RegistryEndpoint {
        let settings = hosts[registry]
        let apiHost = registry == ImageReference.dockerHub ? ImageReference.dockerHubAPIHost : registry
        let plain = settings?.plainHTTP ?? (Self.isLoopback(registry) && settings?.caFile == nil)
        var endpoint = RegistryEndpoint(baseURL: (plain ? "http://" : "https://") + apiHost)
        if let ca = settings?.caFile { endpoint.caFiles = [ca] }
        endpoint.skipVerify = settings?.skipVerify ?? false
        endpoint.clientCertificate = settings?.clientCertificate
        endpoint.clientKey = settings?.clientKey
        return endpoint
    }

    /// The credentials that may be sent to `endpointHost` while talking to `registry`: service-config
    /// credentials first, then config.json. The registry's own go only to its own endpoint; a mirror (any other
    /// host) gets only what is configured for the mirror itself, never the upstream's.
    func credentials(for registry: String, endpointHost: String) -> RegistryCredentials? {
        guard endpointHost == defaultEndpoint(for: registry).host else {
            return hosts[endpointHost]?.credentials ?? dockerConfig.credentials(for: endpointHost)
        }
        return hosts[registry]?.credentials ?? hosts[endpointHost]?.credentials ?? pullCredentials.credentials(for: registry)
            ?? dockerConfig.credentials(for: registry) ?? dockerConfig.credentials(for: endpointHost)
    }

    /// Docker Hub's registry names its token service on another host; its credentials are meant for both.
    static let dockerHubRealmHost = "auth.docker.io"

    /// The credentials a token request to a realm on `realmHost` may carry, for a challenge from `endpointHost`:
    /// the endpoint's own when the realm is on the same host (or is Docker Hub's token service for Docker Hub),
    /// else only credentials configured for the realm's host. A registry cannot send our credentials elsewhere
    /// by naming another host as its realm.
    func realmCredentials(
        _ credentials: RegistryCredentials?, registry: String, endpointHost: String, realmHost: String
    ) -> RegistryCredentials? {
        if Self.hostName(realmHost) == Self.hostName(endpointHost) { return credentials }
        if let own = hosts[realmHost]?.credentials ?? dockerConfig.credentials(for: realmHost) { return own }
        if registry == ImageReference.dockerHub, endpointHost == ImageReference.dockerHubAPIHost, realmHost == Self.dockerHubRealmHost {
            return credentials
        }
        return nil
    }
}
