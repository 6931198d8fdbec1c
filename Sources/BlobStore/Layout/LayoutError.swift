import SystemSupport

/// Why an OCI image layout could not be read, written or converted. Cases carry the path or digest at fault.
public enum LayoutError: Error, Equatable, Sendable, CustomStringConvertible {
    case io(path: String, SyscallError)
    case notALayout(path: String, reason: String)
    case invalidJSON(path: String, reason: String)
    case blobMissing(digest: String)
    case digestMismatch(digest: String, found: String)
    case tooLarge(digest: String, size: Int64, limit: Int64)
    case noMatchingManifest(reason: String)
    case unsupportedLayer(mediaType: String)
    case compression(detail: String)
    case build(BuildError)

    public var description: String {
        switch self {
        case .io(let path, let error): return "\(path): \(error)"
        case .notALayout(let path, let reason): return "\(path) is not an OCI image layout: \(reason)"
        case .invalidJSON(let path, let reason): return "\(path): invalid JSON: \(reason)"
        case .blobMissing(let digest): return "blob \(digest) is not in the layout"
        case .digestMismatch(let digest, let found): return "blob \(digest) has digest \(found): the layout is corrupt"
        case .tooLarge(let digest, let size, let limit): return "blob \(digest) has \(size) bytes, over the limit of \(limit)"
        case .noMatchingManifest(let reason): return "no manifest to convert: \(reason)"
        case .unsupportedLayer(let mediaType): return "layer media type \(mediaType) cannot be converted"
        case .compression(let detail): return "gzip: \(detail)"
        case .build(let error): return "\(error)"
        }
    }
}
