/// The error kinds of the API, containerd's errdefs classes.
public enum ErrorKind: String, Codable, Sendable {
    case notFound = "not_found"
    case alreadyExists = "already_exists"
    case failedPrecondition = "failed_precondition"
    case invalidArgument = "invalid_argument"
    case permissionDenied = "permission_denied"
    case unimplemented
    /// No space left on the daemon's disk, even after evicting what could go.
    case resourceExhausted = "resource_exhausted"
    case unavailable
    case `internal`

    /// The HTTP status the daemon answers with for this kind.
    public var httpStatus: Int {
        switch self {
        case .notFound: return 404
        case .alreadyExists: return 409
        case .failedPrecondition: return 412
        case .invalidArgument: return 400
        case .permissionDenied: return 403
        case .unimplemented: return 501
        case .resourceExhausted: return 507
        case .unavailable: return 503
        case .internal: return 500
        }
    }
}

/// An error as the API reports it: `{"error":{"kind":…,"message":…}}`.
public struct APIError: Error, Codable, Equatable, Sendable, CustomStringConvertible {
    public var kind: ErrorKind
    public var message: String

    public init(_ kind: ErrorKind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }

    public static func notFound(_ message: String) -> APIError { APIError(.notFound, message) }
    public static func alreadyExists(_ message: String) -> APIError { APIError(.alreadyExists, message) }
    public static func failedPrecondition(_ message: String) -> APIError { APIError(.failedPrecondition, message) }
    public static func invalidArgument(_ message: String) -> APIError { APIError(.invalidArgument, message) }
}

/// The envelope of an error body.
public struct ErrorEnvelope: Codable, Sendable {
    public var error: APIError
    public init(error: APIError) { self.error = error }
}
