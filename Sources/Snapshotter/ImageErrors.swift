import BlobStore
import Catalog
import LinuxKernel
import OCI
import OCIRegistry
import RAFS
import RAFSBuilder
import SnapshotterAPI

/// The API's view of an error from any layer (the JSON API and the containerd backend share it); nil for
/// errors no layer classifies, which callers report as internal.
func classifiedAPIError(_ error: any Error) -> APIError? {
    if let full = diskFullError(error) { return full }
    switch error {
    case let error as APIError: return error
    case let error as SnapshotError: return error.apiError
    case let error as CatalogError: return error.apiError
    case let error as RegistryError: return error.apiError
    case let error as BuildError: return .invalidArgument("\(error)")
    case let error as OCIError: return .invalidArgument("\(error)")
    case let error as ImageFormatError: return .invalidArgument("the image is malformed: \(error)")
    case let error as DaemonError: return .failedPrecondition("\(error)")
    default: return nil
    }
}

/// A full disk, whichever layer met it: a write that got ENOSPC or EDQUOT, the engine after eviction, SQLite's
/// SQLITE_FULL. The daemon keeps serving; the caller learns why and what to do.
func diskFullError(_ error: any Error) -> APIError? {
    let full: Bool
    switch error {
    case let error as SyscallError: full = error.isNoSpace
    case let error as BlobStoreError:
        if case .diskFull = error { full = true } else { full = false }
    case let error as CatalogError: full = error.isDiskFull
    case let error as RegistryError:
        if case .noSpace = error { full = true } else { full = false }
    case let error as BuildError:
        if case .io(_, let cause) = error { full = cause.isNoSpace } else { full = false }
    default: full = false
    }
    guard full else { return nil }
    return APIError(.resourceExhausted, "no space left on the daemon's disk: \(error); free space, unpin images or lower cache.max_bytes")
}

extension CatalogError {
    /// Refused image operations as API errors; the database's own failures are internal (nil).
    var apiError: APIError? {
        switch self {
        case .notFound: return .notFound(description)
        case .alreadyPulled, .inUse, .pullInProgress, .blobConflict: return .failedPrecondition(description)
        case .notAnImage, .blobMissing: return .invalidArgument(description)
        case .open, .prepare, .execute, .unexpectedValue, .schemaTooNew, .migration: return nil
        }
    }
}

extension RegistryError {
    /// Registry failures as API errors: what the user got wrong is theirs to fix, the rest is unavailable.
    var apiError: APIError {
        switch self {
        case .notFound: return .notFound(description)
        case .format, .invalidConfiguration, .noMatchingPlatform:
            return .invalidArgument(description)
        case .unauthorized, .tokenFetchFailed: return APIError(.permissionDenied, description)
        default: return APIError(.unavailable, description)
        }
    }
}
