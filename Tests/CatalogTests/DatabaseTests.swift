import LinuxKernel
import Logging
import TestThreads
import Testing

@testable import Catalog

#if canImport(Glibc)
import Glibc
#endif

@Suite("SQLite catalog wrapper", .ownThread)
struct DatabaseTests {
    static func tempDirectory() throws -> String {
        var template = Array("/tmp/db-test-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw SyscallError(call: "mkdtemp", errno: errno) }
        return String(cString: dir)
    }

    let migrations = [
        Migration(version: 1, name: "t", sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)"),
        Migration(version: 2, name: "u", sql: "CREATE TABLE u (id INTEGER PRIMARY KEY, t_id INTEGER NOT NULL REFERENCES t(id))"),
    ]

    @Test("WAL, foreign keys, migrations recorded in user_version")
    func open() throws {
        let dir = try Self.tempDirectory()
        defer { try? FileSystem.removeTree(dir) }
        let db = try Database(path: dir + "/c.db", migrations: migrations, logger: Logger(label: "test"))
        #expect(try db.schemaVersion() == 2)
        #expect(try db.read { try $0.query("PRAGMA journal_mode").first?.string(0) } == "wal")
        #expect(try db.read { try $0.query("PRAGMA foreign_keys").first?.int(0) } == 1)
        #expect(throws: CatalogError.self) {
            try db.write { try $0.execute("INSERT INTO u (t_id) VALUES (42)") }
        }
        #expect(try db.integrityCheck() == ["ok"])
    }

    @Test("a write transaction is all or nothing")
    func atomic() throws {
        let dir = try Self.tempDirectory()
        defer { try? FileSystem.removeTree(dir) }
        let db = try Database(path: dir + "/c.db", migrations: migrations, logger: Logger(label: "test"))
        struct Abort: Error {}
        #expect(throws: Abort.self) {
            try db.write { conn in
                try conn.execute("INSERT INTO t (v) VALUES (?)", ["a"])
                throw Abort()
            }
        }
        #expect(throws: CatalogError.self) {
            try db.write { conn in
                try conn.execute("INSERT INTO t (v) VALUES (?)", ["b"])
                try conn.execute("INSERT INTO t (v) VALUES (?)", ["b"])
            }
        }
        #expect(try db.read { try $0.query("SELECT COUNT(*) FROM t").first?.int(0) } == 0)
        try db.write { conn in try conn.execute("INSERT INTO t (v) VALUES (?)", [.text("c")]) }
        #expect(try db.read { try $0.query("SELECT v FROM t").map { try $0.string(0) } } == ["c"])
    }

    @Test("a catalog newer than this build is refused, an older one is migrated")
    func versions() throws {
        let dir = try Self.tempDirectory()
        defer { try? FileSystem.removeTree(dir) }
        _ = try Database(path: dir + "/c.db", migrations: Array(migrations.prefix(1)), logger: Logger(label: "test"))
        let upgraded = try Database(path: dir + "/c.db", migrations: migrations, logger: Logger(label: "test"))
        #expect(try upgraded.schemaVersion() == 2)
        #expect(throws: CatalogError.schemaTooNew(path: dir + "/c.db", found: 2, supported: 1)) {
            _ = try Database(path: dir + "/c.db", migrations: Array(migrations.prefix(1)), logger: Logger(label: "test"))
        }
    }

    @Test("a broken migration rolls back and names itself")
    func brokenMigration() throws {
        let dir = try Self.tempDirectory()
        defer { try? FileSystem.removeTree(dir) }
        let broken = migrations + [Migration(version: 3, name: "broken", sql: "CREATE TABLE v (x); SELEC nonsense")]
        #expect {
            _ = try Database(path: dir + "/c.db", migrations: broken, logger: Logger(label: "test"))
        } throws: { error in
            guard case CatalogError.migration(3, "broken", _) = error else { return false }
            return true
        }
        let db = try Database(path: dir + "/c.db", migrations: migrations, logger: Logger(label: "test"))
        #expect(try db.read { try $0.query("SELECT name FROM sqlite_master WHERE name = 'v'") }.isEmpty)
    }
}
