import BlobStore
import LinuxKernel

/// Makes byte ranges of backing files present. The on-demand engine (BlobStore's `ensure`) implements it;
/// MountManager only knows file ids, offsets and lengths, never registries.
public protocol RangeFiller: Sendable {
    /// Returns once `[offset, offset + length)` of the backing file `file` is written and verified; throws to
    /// fail the reader with EIO. Must write through the unwatched path (`cache/`), never `ondemand/`.
    func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws
    /// Whether the range is already present (answered without waiting); false when unsure.
    func isPresent(file: BackingFileID, offset: UInt64, length: UInt64) -> Bool
    /// `fill`, with the range's bytes kept on disk (never evicted) until the returned lease ends: for a front
    /// end that copies them out of the backing file itself, after the fill returns.
    func fillAndHold(file: BackingFileID, offset: UInt64, length: UInt64) async throws -> RangeLease
}

extension RangeFiller {
    public func isPresent(file: BackingFileID, offset: UInt64, length: UInt64) -> Bool { false }

    /// For fillers whose files never lose bytes once filled.
    public func fillAndHold(file: BackingFileID, offset: UInt64, length: UInt64) async throws -> RangeLease {
        try await fill(file: file, offset: offset, length: length)
        return RangeLease()
    }
}

/// Which file a front end serves: a blob's backing file (its id in the catalog's `blobs` table) or an image's
/// bootstrap (its image's id in `images`). Two tables, two id spaces: the kind is part of the identity, so a
/// request for one can never be answered with the other.
public enum BackingFileID: Hashable, Sendable, CustomStringConvertible {
    case blob(Int64)
    case bootstrap(imageID: Int64)

    public var description: String {
        switch self {
        case .blob(let id): return "blob \(id)"
        case .bootstrap(let imageID): return "bootstrap of image \(imageID)"
        }
    }
}

/// A backing file the front end serves: the catalog's id and its path under `cache/`; for the cachefiles front
/// end also the cookie key the kernel names it by (a blob id, or a bootstrap's fsid) and its size.
public struct BackingFile: Equatable, Sendable {
    public var id: BackingFileID
    public var path: String
    public var cookieKey: String = ""
    public var size: UInt64 = 0
    /// The cachefiles domain of the file's cookie (volume `erofs,<domain>`): blobs that images name with
    /// different chunk maps live in different domains.
    public var domain: String = ImageStoreLayout.domain

    public init(id: BackingFileID, path: String, cookieKey: String, size: UInt64, domain: String = ImageStoreLayout.domain) {
        self.id = id
        self.path = path
        self.cookieKey = cookieKey
        self.size = size
        self.domain = domain
    }

    public init(id: BackingFileID, path: String) {
        self.id = id
        self.path = path
    }
}
