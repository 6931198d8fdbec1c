import LinuxKernel
import OCI

/// Errors of the registry client. Each case carries the value at fault and reads as advice to a user.
public enum RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One entry of a distribution-spec JSON error body.
    public struct ServerError: Sendable, Equatable, Codable {
        public var code: String
        public var message: String?
    }

    /// 401 (or 403) after authenticating, or when no credentials were available.
    case unauthorized(host: String, scope: String?, status: Int, errors: [ServerError])
    case notFound(url: String, errors: [ServerError])
    /// Any other unexpected status.
    case unexpectedStatus(url: String, method: String, status: Int, errors: [ServerError])
    /// libcurl failed (connection refused, TLS, timeout...): its code and message.
    case transport(url: String, code: Int, message: String)
    case digestMismatch(url: String, expected: Digest, found: Digest)
    case sizeMismatch(url: String, expected: Int64, found: Int64)
    /// A name, digest or manifest that breaks the OCI rules (a registry's answer or the caller's input).
    case format(OCIError)
    case noMatchingPlatform(reference: String, platform: String, available: [String])
    case tokenFetchFailed(realm: String, status: Int, reason: String)
    case invalidConfiguration(path: String, reason: String)
    case io(path: String, reason: String)
    /// The file system had no room for a download (ENOSPC, or EDQUOT under a quota); nothing was kept.
    case noSpace(path: String, reason: String)
    case cancelled(url: String)

    public var description: String {
        switch self {
        case .unauthorized(let host, let scope, let status, let errors):
            let what = scope.map { " for \($0)" } ?? ""
            return "\(status) from \(host)\(what)\(Self.render(errors)): check credentials in ~/.docker/config.json or the service config"
        case .notFound(let url, let errors): return "not found: \(url)\(Self.render(errors))"
        case .unexpectedStatus(let url, let method, let status, let errors):
            return "\(method) \(url) answered \(status)\(Self.render(errors))"
        case .transport(let url, let code, let message):
            return "transfer from \(url) failed: \(message) (curl error \(code))"
        case .digestMismatch(let url, let expected, let found):
            return
                "content of \(url) has digest \(found), expected \(expected): corrupted in transit or by the registry; nothing was stored"
        case .sizeMismatch(let url, let expected, let found):
            return "content of \(url) is \(found) bytes, expected \(expected)"
        case .format(let error): return error.description
        case .noMatchingPlatform(let reference, let platform, let available):
            return "\(reference) has no manifest for \(platform); available: \(available.joined(separator: ", "))"
        case .tokenFetchFailed(let realm, let status, let reason):
            return "token request to \(realm) failed with \(status): \(reason); check credentials for the registry"
        case .invalidConfiguration(let path, let reason): return "invalid registry configuration \(path): \(reason)"
        case .io(let path, let reason): return "\(path): \(reason)"
        case .noSpace(let path, let reason): return "no space left for \(path): \(reason); free space on its file system"
        case .cancelled(let url): return "transfer from \(url) was cancelled"
        }
    }

    /// The registry's error codes, e.g. `["MANIFEST_UNKNOWN"]`.
    public var serverCodes: [String] {
        switch self {
        case .unauthorized(_, _, _, let e), .notFound(_, let e), .unexpectedStatus(_, _, _, let e): return e.map(\.code)
        default: return []
        }
    }

    private static func render(_ errors: [ServerError]) -> String {
        guard !errors.isEmpty else { return "" }
        return " (" + errors.map { "\($0.code)" + ($0.message.map { ": \($0)" } ?? "") }.joined(separator: "; ") + ")"
    }
}

extension RegistryError {
    /// A failed write of a local file: `noSpace` when the disk is full, `io` otherwise.
    static func writing(_ path: String, _ error: SyscallError) -> RegistryError {
        error.isNoSpace
            ? .noSpace(path: path, reason: error.description) : .io(path: path, reason: error.description)
    }
}
