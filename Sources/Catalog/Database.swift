import CSQLite
import Logging
import Synchronization

/// A SQLite database file: one connection, serialized by a mutex, in WAL mode with foreign keys on and
/// full synchronous commits (a snapshot the API reported as created survives a power cut).
///
/// Every call blocks on disk I/O: callers run it on a thread pool, never on Swift's cooperative pool.
public final class Database: Sendable {
    public let path: String
    private let lock = Mutex(())
    /// Touched only while `lock` is held, which is what makes sharing the connection between threads safe.
    nonisolated(unsafe) private let connection: SQLConnection

    public init(path: String, migrations: [Migration], logger: Logger) throws(CatalogError) {
        self.path = path
        let conn = try SQLConnection(path: path)
        try conn.execute("PRAGMA busy_timeout = 5000")
        _ = try conn.query("PRAGMA journal_mode = WAL")
        try conn.execute("PRAGMA synchronous = FULL")
        try conn.execute("PRAGMA foreign_keys = ON")
        try Self.migrate(conn, path: path, migrations: migrations, logger: logger)
        self.connection = conn
    }

    /// Runs `body` in one write transaction (BEGIN IMMEDIATE): all of it is committed, or none of it.
    public func write<T>(_ body: (SQLConnection) throws -> T) throws -> T {
        try lock.withLock { _ in
            let conn = connection
            try conn.execute("BEGIN IMMEDIATE")
            do {
                let result = try body(conn)
                try conn.execute("COMMIT")
                return result
            } catch {
                try? conn.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// Runs `body` with the connection outside any explicit transaction (each statement is its own).
    public func read<T>(_ body: (SQLConnection) throws -> T) throws -> T {
        try lock.withLock { _ in try body(connection) }
    }

    /// `PRAGMA integrity_check`: ["ok"] for a sound file, otherwise SQLite's findings.
    public func integrityCheck() throws -> [String] {
        try read { conn in try conn.query("PRAGMA integrity_check").map { try $0.string(0) } }
    }

    public func schemaVersion() throws -> Int {
        try read { conn in Int(try conn.query("PRAGMA user_version").first?.int(0) ?? 0) }
    }

    private static func migrate(
        _ conn: SQLConnection,
        path: String,
        migrations: [Migration],
        logger: Logger
    ) throws(CatalogError) {
        let current = Int(try conn.query("PRAGMA user_version").first?.int(0) ?? 0)
        let supported = migrations.map(\.version).max() ?? 0
        if current > supported { throw .schemaTooNew(path: path, found: current, supported: supported) }
        for migration in migrations.sorted(by: { $0.version < $1.version }) where migration.version > current {
            do {
                // Foreign keys can only be switched outside a transaction.
                if migration.rebuildsTables { try conn.execute("PRAGMA foreign_keys = OFF") }
                defer { if migration.rebuildsTables { try? conn.execute("PRAGMA foreign_keys = ON") } }
                do {
                    try conn.execute("BEGIN IMMEDIATE")
                    try conn.executeScript(migration.sql)
                    if migration.rebuildsTables, let broken = try conn.query("PRAGMA foreign_key_check").first {
                        throw CatalogError.unexpectedValue(
                            column: 0, expected: "no dangling reference", found: broken.values.first ?? .null)
                    }
                    try conn.execute("PRAGMA user_version = \(migration.version)")
                    try conn.execute("COMMIT")
                } catch {
                    try? conn.execute("ROLLBACK")
                    throw error
                }
            } catch {
                throw .migration(version: migration.version, name: migration.name, message: "\(error)")
            }
            logger.info(
                "catalog migrated",
                metadata: ["catalog.path": "\(path)", "catalog.version": "\(migration.version)", "catalog.step": "\(migration.name)"]
            )
        }
    }
}

/// The connection handed to `Database.write`/`read` bodies. Not Sendable: it only lives inside the mutex.
public final class SQLConnection {
    private let handle: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    fileprivate init(path: String) throws(CatalogError) {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        let code = sqlite3_open_v2(path, &db, flags, nil)
        guard code == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(db)
            throw .open(path: path, code: code, message: message)
        }
        sqlite3_extended_result_codes(db, 1)
        self.handle = db
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(handle)
    }

    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
    public var changes: Int { Int(sqlite3_changes(handle)) }

    /// Runs a statement that returns no rows.
    public func execute(_ sql: String, _ parameters: [SQLValue] = []) throws(CatalogError) {
        _ = try run(sql, parameters, collect: false)
    }

    /// Runs a statement and returns all its rows.
    public func query(_ sql: String, _ parameters: [SQLValue] = []) throws(CatalogError) -> [SQLRow] {
        try run(sql, parameters, collect: true)
    }

    /// Runs several statements separated by semicolons (migrations).
    public func executeScript(_ sql: String) throws(CatalogError) {
        var error: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(handle, sql, nil, nil, &error)
        if code != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(error)
            throw .execute(sql: sql, code: code, message: message)
        }
    }

    private func statement(_ sql: String) throws(CatalogError) -> OpaquePointer {
        if let cached = statements[sql] { return cached }
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard code == SQLITE_OK, let statement else {
            throw .prepare(sql: sql, code: code, message: String(cString: sqlite3_errmsg(handle)))
        }
        statements[sql] = statement
        return statement
    }

    private func run(_ sql: String, _ parameters: [SQLValue], collect: Bool) throws(CatalogError) -> [SQLRow] {
        let stmt = try statement(sql)
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        for (offset, value) in parameters.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch value {
            case .null: code = sqlite3_bind_null(stmt, index)
            case .integer(let v): code = sqlite3_bind_int64(stmt, index, v)
            case .real(let v): code = sqlite3_bind_double(stmt, index, v)
            case .text(let v): code = sqlite3_bind_text(stmt, index, v, -1, csqlite_transient())
            case .blob(let v):
                code = v.withUnsafeBytes { sqlite3_bind_blob(stmt, index, $0.baseAddress, Int32($0.count), csqlite_transient()) }
            }
            if code != SQLITE_OK {
                throw .execute(sql: sql, code: code, message: String(cString: sqlite3_errmsg(handle)))
            }
        }
        var rows: [SQLRow] = []
        while true {
            let code = sqlite3_step(stmt)
            if code == SQLITE_DONE { break }
            guard code == SQLITE_ROW else {
                throw .execute(sql: sql, code: code, message: String(cString: sqlite3_errmsg(handle)))
            }
            if collect { rows.append(SQLRow(values: readRow(stmt))) }
        }
        return rows
    }

    private func readRow(_ stmt: OpaquePointer) -> [SQLValue] {
        let count = sqlite3_column_count(stmt)
        var values: [SQLValue] = []
        values.reserveCapacity(Int(count))
        for column in 0..<count {
            switch sqlite3_column_type(stmt, column) {
            case SQLITE_INTEGER: values.append(.integer(sqlite3_column_int64(stmt, column)))
            case SQLITE_FLOAT: values.append(.real(sqlite3_column_double(stmt, column)))
            case SQLITE_TEXT: values.append(.text(String(cString: sqlite3_column_text(stmt, column))))
            case SQLITE_BLOB:
                let length = Int(sqlite3_column_bytes(stmt, column))
                if let base = sqlite3_column_blob(stmt, column), length > 0 {
                    values.append(.blob(Array(UnsafeRawBufferPointer(start: base, count: length))))
                } else {
                    values.append(.blob([]))
                }
            default: values.append(.null)
            }
        }
        return values
    }
}
