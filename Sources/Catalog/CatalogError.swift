import CSQLite

/// Errors of the catalog: the database's own (each carrying the statement or file at fault and SQLite's
/// message), and the image operations a transaction refused (each naming the image and what blocks it).
public enum CatalogError: Error, Equatable, Sendable, CustomStringConvertible {
    case open(path: String, code: Int32, message: String)
    case prepare(sql: String, code: Int32, message: String)
    case execute(sql: String, code: Int32, message: String)
    case unexpectedValue(column: Int, expected: String, found: SQLValue)
    case schemaTooNew(path: String, found: Int, supported: Int)
    case migration(version: Int, name: String, message: String)
    // Image operations a transaction refused.
    case notFound(reference: String)
    case alreadyPulled(reference: String, digest: String)
    case inUse(reference: String, snapshots: [String])
    case notAnImage(reference: String, reason: String)
    case blobMissing(reference: String, blobID: String)
    case pullInProgress(reference: String)
    /// Another image registered the blob in the same domain with another chunk map meanwhile; pulling again
    /// places this image in a domain of its own.
    case blobConflict(reference: String, blobID: String, domain: String)

    public var description: String {
        switch self {
        case .open(let path, let code, let message):
            return "cannot open catalog \(path): \(message) (sqlite code \(code))"
        case .prepare(let sql, let code, let message):
            return "cannot prepare SQL [\(sql)]: \(message) (sqlite code \(code))"
        case .execute(let sql, let code, let message):
            return "SQL failed [\(sql)]: \(message) (sqlite code \(code))"
        case .unexpectedValue(let column, let expected, let found):
            return "catalog column \(column): expected \(expected), found \(found)"
        case .schemaTooNew(let path, let found, let supported):
            return
                "catalog \(path) has schema version \(found) but this build supports up to \(supported): run a newer snapshotterd"
        case .migration(let version, let name, let message):
            return "catalog migration \(version) (\(name)) failed: \(message)"
        case .notFound(let reference): return "image \(reference) is not pulled; pull it first (snapctl pull \(reference))"
        case .alreadyPulled(let reference, let digest):
            return
                "image \(reference) is already pulled at \(digest) and the registry now has another manifest; remove it first (snapctl rmi \(reference))"
        case .inUse(let reference, let snapshots):
            return "image \(reference) is used by snapshots \(snapshots.joined(separator: ", ")); remove them first"
        case .notAnImage(let reference, let reason): return "\(reference) cannot be used as an image: \(reason)"
        case .blobMissing(let reference, let blobID):
            return "image \(reference) names blob \(blobID) in its bootstrap but not among its layers"
        case .pullInProgress(let reference): return "image \(reference) is being pulled already; wait for that pull to finish"
        case .blobConflict(let reference, let blobID, let domain):
            return
                "image \(reference): blob \(blobID) was registered in domain \(domain) with another chunk map while this pull ran; pull again"
        }
    }

    /// SQLite's primary result code, when the error came from SQLite.
    public var sqliteCode: Int32? {
        switch self {
        case .open(_, let code, _), .prepare(_, let code, _), .execute(_, let code, _): return code & 0xff
        default: return nil
        }
    }
}

extension CatalogError {
    /// SQLite found the disk full (SQLITE_FULL, in the primary result code).
    public var isDiskFull: Bool {
        switch self {
        case .open(_, let code, _), .prepare(_, let code, _), .execute(_, let code, _): return code & 0xff == SQLITE_FULL
        default: return false
        }
    }
}
