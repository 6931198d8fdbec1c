import LinuxKernel
import Logging

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An OCI distribution client on libcurl: ping, manifests and indexes, blobs (ranges, resume, digest checks)
/// and pushes, with bearer/basic auth, retries, mirrors from hosts.toml and per-registry TLS.
///
/// All requests go through one funnel (`send`): authorization, then the request, then auth challenges and
/// bounded retries with exponential backoff. Transfers run on their own threads (see `CurlTransport`).
public final class RegistryClient: Sendable {
    public let configuration: RegistryConfiguration
    let transport: CurlTransport
    let logger: Logger
    let auth = AuthCache()

    public init(configuration: RegistryConfiguration = RegistryConfiguration(), logger: Logger) {
        self.configuration = configuration
        self.transport = CurlTransport()
        self.logger = logger
    }

    /// The linked libcurl and whether it can speak HTTP/2.
    public static var transportDescription: String {
        CurlTransport.versionDescription + (CurlTransport.supportsHTTP2 ? " (HTTP/2)" : "")
    }

    /// One request of the funnel.
    struct Call {
        var method = "GET"
        /// A path under the endpoint's `/v2`, or an absolute URL (upload locations).
        var path: String
        var absolute = false
        var headers: [(name: String, value: String)] = []
        var body: RequestBody = .none
        /// The token scope, e.g. `repository:test/app:pull`.
        var scope: String?
        var sink: (any BodySink)?
        var memoryLimit = 1 << 20
        var followRedirects = true
        var bounded = true
        var background = false
        /// Overrides `RegistryTimeouts.stallSeconds` for this call.
        var stallSeconds: Int?
    }

    /// The result of `ping`.
    public struct PingResult: Sendable {
        public var endpoint: String
        public var apiVersion: String?
        public var httpVersion: Int
    }

    /// `GET /v2/`: checks that the registry speaks the API and that the credentials are accepted.
    public func ping(registry: String) async throws(RegistryError) -> PingResult {
        let endpoint = try configuration.endpoints(for: registry).last!
        let response = try await send(Call(path: "/"), registry: registry, endpoint: endpoint)
        guard response.status == 200 else { throw error(for: response, method: "GET", scope: nil, host: endpoint.host) }
        return PingResult(
            endpoint: endpoint.baseURL, apiVersion: response.headers["Docker-Distribution-API-Version"],
            httpVersion: response.httpVersion)
    }

    // MARK: - Funnel

    func send(_ call: Call, registry: String, endpoint: RegistryEndpoint) async throws(RegistryError) -> HTTPResponse {
        let policy = configuration.retry
        var attempt = 0
        var authenticated = false
        var request = HTTPRequest(url: call.absolute ? call.path : endpoint.url(call.path))
        request.method = call.method
        request.body = call.body
        request.proxy = configuration.proxy
        request.timeouts = configuration.timeouts
        if let stall = call.stallSeconds { request.timeouts.stallSeconds = stall }
        request.totalTimeoutSeconds = call.bounded ? configuration.timeouts.requestSeconds : 0
        request.memoryLimit = call.memoryLimit
        request.followRedirects = call.followRedirects
        request.background = call.background
        request.tls = try tlsOptions(endpoint)
        let log = logger.with(["registry.host": "\(endpoint.host)", "http.method": "\(call.method)"])
        while true {
            attempt += 1
            var headers = call.headers
            headers.append(("User-Agent", configuration.userAgent))
            for (name, value) in endpoint.headers.sorted(by: { $0.key < $1.key }) { headers.append((name, value)) }
            if let authorization = try await authorization(registry: registry, endpoint: endpoint, scope: call.scope) {
                headers.append(("Authorization", authorization))
            }
            if let range = call.sink?.rangeHeader { headers.append(("Range", range)) }
            request.headers = headers
            let response: HTTPResponse
            do {
                response = try await transport.perform(request, sink: call.sink)
            } catch {
                guard case .transport(_, let code, let message) = error, CurlTransport.isRetryable(curlCode: code),
                    attempt < policy.maxAttempts
                else { throw error }
                let delay = policy.delayMilliseconds(retry: attempt)
                log.info(
                    "transfer failed, retrying",
                    metadata: [
                        "http.url": "\(request.url)", "retry.attempt": "\(attempt)", "retry.delay_ms": "\(delay)",
                        "error": "\(message)", "blob.resume_offset": "\(call.sink?.delivered ?? 0)",
                    ])
                try await sleep(milliseconds: delay, url: request.url)
                continue
            }
            if response.status == 401 && !authenticated {
                authenticated = true
                let challenges = AuthChallenge.parse(response.headers.values("WWW-Authenticate"))
                if try await authenticate(challenges, registry: registry, endpoint: endpoint, scope: call.scope) { continue }
            }
            if response.status == 429 || (500...599).contains(response.status), response.status != 501, attempt < policy.maxAttempts {
                var delay = policy.delayMilliseconds(retry: attempt)
                if let after = response.headers["Retry-After"].flatMap({ Int($0) }) {
                    delay = max(delay, min(after, policy.maxRetryAfterSeconds) * 1000)
                }
                // Another endpoint (the server behind a mirror) may answer now: a busy or failing one is left
                // rather than waited on for long, so readers are served within their timeout.
                if Self.nextEndpointExists, attempt >= policy.attemptsBeforeFallback || delay > policy.fallbackWaitMilliseconds {
                    log.info(
                        "registry busy or failing, leaving it for the next endpoint",
                        metadata: [
                            "http.url": "\(request.url)", "http.status": "\(response.status)", "retry.attempt": "\(attempt)",
                            "retry.delay_ms": "\(delay)",
                        ])
                    return response
                }
                log.info(
                    "registry busy or failing, retrying",
                    metadata: [
                        "http.url": "\(request.url)", "http.status": "\(response.status)", "retry.attempt": "\(attempt)",
                        "retry.delay_ms": "\(delay)",
                    ])
                try await sleep(milliseconds: delay, url: request.url)
                continue
            }
            for warning in response.headers.values("Warning") {
                log.warning("registry warning", metadata: ["http.url": "\(request.url)", "registry.warning": "\(warning)"])
            }
            return response
        }
    }

    private func sleep(milliseconds: Int, url: String) async throws(RegistryError) {
        do { try await Task.sleep(nanoseconds: UInt64(milliseconds) * 1_000_000) } catch { throw .cancelled(url: url) }
    }

    /// Trust: the system CAs plus the endpoint's CA files, as one PEM bundle handed to libcurl.
    func tlsOptions(_ endpoint: RegistryEndpoint) throws(RegistryError) -> TLSOptions {
        var tls = TLSOptions()
        tls.verify = !endpoint.skipVerify
        tls.clientCertificate = endpoint.clientCertificate
        tls.clientKey = endpoint.clientKey
        guard !endpoint.caFiles.isEmpty else { return tls }
        var bundle = (try? readFileBytes(CurlTransport.systemCABundle)) ?? []
        for file in endpoint.caFiles {
            bundle.append(UInt8(ascii: "\n"))
            bundle += try readFileBytes(file)
        }
        tls.caBundle = bundle
        return tls
    }

    /// Maps a failed response to a `RegistryError` carrying the registry's error codes.
    func error(for response: HTTPResponse, method: String, scope: String?, host: String) -> RegistryError {
        struct Body: Decodable { var errors: [RegistryError.ServerError]? }
        let errors = (try? JSONDecoder().decode(Body.self, from: Data(response.body)))?.errors ?? []
        switch response.status {
        case 401, 403: return .unauthorized(host: host, scope: scope, status: response.status, errors: errors)
        case 404: return .notFound(url: response.effectiveURL, errors: errors)
        default: return .unexpectedStatus(url: response.effectiveURL, method: method, status: response.status, errors: errors)
        }
    }

    /// Whether the endpoint being tried has another behind it (set by `withEndpoints` for its `body`).
    @TaskLocal static var nextEndpointExists = false

    /// Runs `body` against each endpoint with `capability` in order; falls back to the next on transport
    /// failures, 429, 5xx and (for mirrors) 404 and 401/403.
    func withEndpoints<T>(
        registry: String, capability: RegistryCapabilities,
        _ body: (RegistryEndpoint) async throws(RegistryError) -> T
    ) async throws(RegistryError) -> T {
        let endpoints = try configuration.endpoints(for: registry).filter { $0.capabilities.contains(capability) }
        guard !endpoints.isEmpty else {
            throw .invalidConfiguration(
                path: configuration.hostsDirectory ?? registry, reason: "no endpoint of \(registry) can \(capability)")
        }
        var lastError: RegistryError?
        for (i, endpoint) in endpoints.enumerated() {
            let isLast = i == endpoints.count - 1
            let result = await Self.$nextEndpointExists.withValue(!isLast) { () async -> Result<T, RegistryError> in
                do throws(RegistryError) { return .success(try await body(endpoint)) } catch { return .failure(error) }
            }
            switch result {
            case .success(let value): return value
            case .failure(let error):
                let fallback: Bool
                switch error {
                case .transport: fallback = true
                case .notFound: fallback = true
                case .unexpectedStatus(_, _, let status, _): fallback = status >= 500 || status == 429
                // A mirror gets only its own credentials (never the upstream's): one that wants others is skipped.
                case .unauthorized: fallback = true
                default: fallback = false
                }
                if isLast || !fallback { throw error }
                logger.info("endpoint failed, trying the next", metadata: ["registry.host": "\(endpoint.host)", "error": "\(error)"])
                lastError = error
            }
        }
        throw lastError!
    }
}

func readFileBytes(_ path: String) throws(RegistryError) -> [UInt8] {
    do { return try FileSystem.readFile(path) } catch { throw .io(path: path, reason: "\(error)") }
}

extension Logger {
    func with(_ metadata: Logger.Metadata) -> Logger {
        var copy = self
        for (k, v) in metadata { copy[metadataKey: k] = v }
        return copy
    }
}
