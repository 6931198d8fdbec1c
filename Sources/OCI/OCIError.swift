import LinuxKernel

/// Why an OCI name, digest, manifest or image layout was refused. One enum for the whole `OCI` library; each
/// case carries the text, document or path at fault. `source` names where a document came from (a URL, a
/// layout path or a digest).
public enum OCIError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidReference(String, reason: String)
    case invalidDigest(String)
    case unsupportedDigest(Digest)
    case invalidManifest(source: String, reason: String)
    /// The document claims sizes or counts past `ManifestLimits`.
    case absurdManifest(source: String, reason: String)
    case unsupportedMediaType(source: String, mediaType: String)
    case noMatchingManifest(reason: String)
    /// Image layouts (`OCILayout`).
    case io(path: String, SyscallError)
    case notALayout(path: String, reason: String)
    case invalidJSON(path: String, reason: String)
    case blobMissing(digest: String)
    case digestMismatch(digest: String, found: String)
    case tooLarge(digest: String, size: Int64, limit: Int64)

    public var description: String {
        switch self {
        case .invalidReference(let text, let reason): return "invalid image reference \"\(text)\": \(reason)"
        case .invalidDigest(let text): return "invalid digest \"\(text)\": expected sha256:<64 lowercase hex digits>"
        case .unsupportedDigest(let d): return "digest algorithm \(d.algorithm) is not supported (only sha256)"
        case .invalidManifest(let source, let reason): return "invalid manifest at \(source): \(reason)"
        case .absurdManifest(let source, let reason): return "manifest at \(source) refused: \(reason) exceeds the client's limits"
        case .unsupportedMediaType(let source, let type): return "unsupported media type \(type) at \(source)"
        case .noMatchingManifest(let reason): return "no manifest to convert: \(reason)"
        case .io(let path, let error): return "\(path): \(error)"
        case .notALayout(let path, let reason): return "\(path) is not an OCI image layout: \(reason)"
        case .invalidJSON(let path, let reason): return "\(path): invalid JSON: \(reason)"
        case .blobMissing(let digest): return "blob \(digest) is not in the layout"
        case .digestMismatch(let digest, let found): return "blob \(digest) has digest \(found): the layout is corrupt"
        case .tooLarge(let digest, let size, let limit): return "blob \(digest) has \(size) bytes, over the limit of \(limit)"
        }
    }
}
