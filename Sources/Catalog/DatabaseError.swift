/// Errors of the catalog database, each carrying the statement or file at fault and SQLite's own message.
public enum DatabaseError: Error, Equatable, Sendable, CustomStringConvertible {
    case open(path: String, code: Int32, message: String)
    case prepare(sql: String, code: Int32, message: String)
    case execute(sql: String, code: Int32, message: String)
    case unexpectedValue(column: Int, expected: String, found: SQLValue)
    case schemaTooNew(path: String, found: Int, supported: Int)
    case migration(version: Int, name: String, message: String)

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
