/// Response headers, looked up case-insensitively; the last value wins for single-value lookups.
public struct HTTPHeaders: Sendable, CustomStringConvertible {
    public private(set) var entries: [(name: String, value: String)] = []

    public init(_ entries: [(name: String, value: String)] = []) { self.entries = entries }

    public subscript(_ name: String) -> String? { values(name).last }

    public func values(_ name: String) -> [String] {
        let key = name.lowercased()
        return entries.filter { $0.name.lowercased() == key }.map(\.value)
    }

    mutating func add(_ name: String, _ value: String) { entries.append((name, value)) }

    public var description: String { entries.map { "\($0.name): \($0.value)" }.joined(separator: "\n") }
}

/// The body of a request: nothing, bytes in memory, or a region of a file read as it is sent.
enum RequestBody: Sendable {
    case none
    case bytes([UInt8])
    case file(path: String, offset: Int64, length: Int64)

    var length: Int64 {
        switch self {
        case .none: return 0
        case .bytes(let b): return Int64(b.count)
        case .file(_, _, let length): return length
        }
    }
}

/// TLS settings of one request.
struct TLSOptions: Sendable, Hashable {
    /// PEM bytes to trust in addition to the system CAs (already concatenated with them), or nil for the system CAs.
    var caBundle: [UInt8]?
    var verify = true
    var clientCertificate: String?
    var clientKey: String?
}

/// One HTTP exchange as the transport performs it.
struct HTTPRequest: Sendable {
    var method = "GET"
    var url: String
    var headers: [(name: String, value: String)] = []
    var body: RequestBody = .none
    var followRedirects = true
    var tls = TLSOptions()
    /// An explicit proxy URL; nil lets libcurl honour http_proxy/https_proxy/no_proxy from the environment.
    var proxy: String?
    var timeouts = RegistryTimeouts()
    /// Abort the whole exchange after this many seconds (0 = only the stall timeout applies).
    var totalTimeoutSeconds = 0
    /// Largest body kept in memory; larger bodies abort the transfer.
    var memoryLimit = 4 << 20
    /// Run the transfer's thread at background CPU priority (`CurlTransport.backgroundNice`): its receiving,
    /// hashing and writing then yield the CPU to everything else on the host.
    var background = false
}

/// What came back.
struct HTTPResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    /// The body when it was collected in memory (always for non-2xx answers, error bodies).
    var body: [UInt8]
    var effectiveURL: String
    /// 1.1, 2 ... as libcurl reports it (CURLINFO_HTTP_VERSION).
    var httpVersion: Int
}

/// Timeouts, in seconds.
public struct RegistryTimeouts: Sendable, Hashable {
    public var connectSeconds = 15
    /// A transfer slower than `stallBytesPerSecond` for `stallSeconds` is aborted (and retried).
    public var stallSeconds = 30
    public var stallBytesPerSecond = 1
    /// Whole-exchange limit for small requests (ping, manifests, tokens, uploads' control requests).
    public var requestSeconds = 120
    /// The stall limit of ranged blob reads (chunks that readers wait on): a body that stops for this long is
    /// abandoned and resumed on a new connection well within a reader's timeout, instead of after `stallSeconds`.
    public var rangeStallSeconds = 4
    public init() {}
}
