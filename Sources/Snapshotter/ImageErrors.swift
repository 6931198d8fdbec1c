import BlobStore
import SnapshotterAPI

extension ImageError {
    var apiError: APIError {
        switch self {
        case .notFound: return .notFound(description)
        case .alreadyPulled, .inUse, .pullInProgress: return .failedPrecondition(description)
        case .notAnImage, .blobMissing: return .invalidArgument(description)
        }
    }
}

extension RegistryError {
    /// Registry failures as API errors: what the user got wrong is theirs to fix, the rest is unavailable.
    var apiError: APIError {
        switch self {
        case .notFound: return .notFound(description)
        case .invalidReference, .invalidDigest, .unsupportedDigest, .invalidConfiguration, .noMatchingPlatform,
            .unsupportedMediaType, .invalidManifest, .absurdManifest:
            return .invalidArgument(description)
        case .unauthorized, .tokenFetchFailed: return APIError(.permissionDenied, description)
        default: return APIError(.unavailable, description)
        }
    }
}
