#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A row of the `snapshots` table with its parent's key resolved. `kind` is the stored text ('active',
/// 'view' or 'committed'); the snapshot service gives it its meaning.
public struct SnapshotRow: Equatable, Sendable {
    public var id: Int64
    public var key: String
    public var kind: String
    public var parentID: Int64?
    public var parentKey: String?
    public var labels: [String: String]
    public var createdNanoseconds: Int64
    public var updatedNanoseconds: Int64
    /// Bytes and inodes of the snapshot's own layer, stored at commit.
    public var usage: (bytes: Int64, inodes: Int64)?
    /// The pulled image this snapshot (or its bottom-most ancestor) sits on, if any.
    public var imageID: Int64?

    public static func == (a: SnapshotRow, b: SnapshotRow) -> Bool {
        a.id == b.id && a.key == b.key && a.kind == b.kind && a.parentID == b.parentID && a.parentKey == b.parentKey
            && a.labels == b.labels && a.createdNanoseconds == b.createdNanoseconds && a.updatedNanoseconds == b.updatedNanoseconds
            && a.usage?.bytes == b.usage?.bytes && a.usage?.inodes == b.usage?.inodes && a.imageID == b.imageID
    }
}

/// The snapshots and mounts tables: every statement the snapshot service runs, so that all SQL of the
/// service lives in this module. Reads run outside a transaction; `write` runs its body in one transaction
/// (all or nothing), handing it a `SnapshotTransaction` for the statements.
///
/// All calls block on disk I/O: call them from a thread pool.
public struct SnapshotCatalog: Sendable {
    public let database: Database

    public init(database: Database) {
        self.database = database
    }

    /// Runs `body` in one write transaction.
    public func write<T>(_ body: (SnapshotTransaction) throws -> T) throws -> T {
        try database.write { conn in try body(SnapshotTransaction(conn: conn)) }
    }

    /// Runs `body` with each statement its own transaction (consistent enough for single reads).
    public func read<T>(_ body: (SnapshotTransaction) throws -> T) throws -> T {
        try database.read { conn in try body(SnapshotTransaction(conn: conn)) }
    }

    public func snapshot(key: String) throws -> SnapshotRow? { try read { try $0.snapshot(key: key) } }
    public func allSnapshots() throws -> [SnapshotRow] { try read { try $0.allSnapshots() } }
    public func snapshotIDs() throws -> Set<Int64> { try read { try $0.snapshotIDs() } }

    /// Snapshots per stored kind.
    public func countsByKind() throws -> [String: Int] {
        try database.read { conn in
            try conn.query("SELECT kind, COUNT(*) FROM snapshots GROUP BY kind").reduce(into: [String: Int]()) {
                $0[try $1.string(0)] = Int(try $1.int(1))
            }
        }
    }

    /// Recorded mount targets, sorted.
    public func mountTargets() throws -> [String] {
        try database.read { conn in try conn.query("SELECT target FROM mounts ORDER BY target").map { try $0.string(0) } }
    }

    /// Recorded mounts with the key of the snapshot mounted, sorted by target.
    public func mountsWithKeys() throws -> [(target: String, key: String)] {
        try database.read { conn in
            try conn.query("SELECT m.target, s.key FROM mounts m JOIN snapshots s ON s.id = m.snapshot_id ORDER BY m.target")
                .map { (target: try $0.string(0), key: try $0.string(1)) }
        }
    }

    public func isMountRecorded(target: String) throws -> Bool { try read { try $0.isMountRecorded(target: target) } }

    public func deleteMount(target: String) throws { try write { try $0.deleteMount(target: target) } }
}

/// The statements of one transaction (or of one read) on the snapshots and mounts tables.
public struct SnapshotTransaction {
    let conn: SQLConnection

    static let selectColumns = """
        SELECT s.id, s.key, s.kind, s.parent_id, p.key, s.labels, s.created_ns, s.updated_ns,
               s.usage_bytes, s.usage_inodes, s.image_id
        FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
        """

    public func snapshot(key: String) throws -> SnapshotRow? {
        try conn.query(Self.selectColumns + " WHERE s.key = ?", [.text(key)]).first.map(Self.row)
    }

    public func allSnapshots() throws -> [SnapshotRow] {
        try conn.query(Self.selectColumns + " ORDER BY s.id").map(Self.row)
    }

    public func snapshotIDs() throws -> Set<Int64> {
        Set(try conn.query("SELECT id FROM snapshots").map { try $0.int(0) })
    }

    /// Keys of the snapshots whose parent is `id`, sorted.
    public func childKeys(of id: Int64) throws -> [String] {
        try conn.query("SELECT key FROM snapshots WHERE parent_id = ? ORDER BY key", [.integer(id)]).map { try $0.string(0) }
    }

    /// Ancestors of a snapshot, nearest first.
    public func ancestorIDs(of id: Int64) throws -> [Int64] {
        try conn.query(
            """
            WITH RECURSIVE chain(id, parent_id, depth) AS (
                SELECT id, parent_id, 0 FROM snapshots WHERE id = ?
                UNION ALL
                SELECT s.id, s.parent_id, c.depth + 1 FROM snapshots s JOIN chain c ON s.id = c.parent_id
            )
            SELECT id FROM chain WHERE depth > 0 ORDER BY depth
            """,
            [.integer(id)]
        ).map { try $0.int(0) }
    }

    /// The id of the pulled image recorded under `reference`.
    public func imageID(reference: String) throws -> Int64? {
        try conn.query("SELECT id FROM images WHERE reference = ?", [.text(reference)]).first?.int(0)
    }

    /// Inserts a snapshot and returns its id. A committed snapshot must come with its usage.
    public func insertSnapshot(
        key: String, kind: String, parentID: Int64?, labels: [String: String], nanoseconds: Int64, imageID: Int64?,
        usage: (bytes: Int64, inodes: Int64)? = nil
    ) throws -> Int64 {
        try conn.execute(
            """
            INSERT INTO snapshots (key, kind, parent_id, labels, created_ns, updated_ns, image_id, usage_bytes, usage_inodes)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                .text(key), .text(kind), SQLValue(parentID), .text(try Self.encode(labels)), .integer(nanoseconds),
                .integer(nanoseconds), SQLValue(imageID), SQLValue(usage?.bytes), SQLValue(usage?.inodes),
            ]
        )
        return conn.lastInsertRowID
    }

    /// Turns an active snapshot into committed `name` with its final labels and usage.
    public func commit(
        id: Int64, name: String, labels: [String: String], nanoseconds: Int64, usage: (bytes: Int64, inodes: Int64)
    )
        throws
    {
        try conn.execute(
            """
            UPDATE snapshots SET key = ?, kind = 'committed', labels = ?, created_ns = ?, updated_ns = ?,
                usage_bytes = ?, usage_inodes = ? WHERE id = ?
            """,
            [
                .text(name), .text(try Self.encode(labels)), .integer(nanoseconds), .integer(nanoseconds), .integer(usage.bytes),
                .integer(usage.inodes), .integer(id),
            ]
        )
    }

    public func updateLabels(id: Int64, labels: [String: String], nanoseconds: Int64) throws {
        try conn.execute(
            "UPDATE snapshots SET labels = ?, updated_ns = ? WHERE id = ?",
            [.text(try Self.encode(labels)), .integer(nanoseconds), .integer(id)]
        )
    }

    public func deleteSnapshot(id: Int64) throws {
        try conn.execute("DELETE FROM snapshots WHERE id = ?", [.integer(id)])
    }

    /// The first (by name) recorded mount target of snapshot `id`.
    public func mountTarget(of id: Int64) throws -> String? {
        try conn.query("SELECT target FROM mounts WHERE snapshot_id = ? ORDER BY target LIMIT 1", [.integer(id)]).first?.string(0)
    }

    public func isMountRecorded(target: String) throws -> Bool {
        try !conn.query("SELECT 1 FROM mounts WHERE target = ?", [.text(target)]).isEmpty
    }

    public func insertMount(target: String, snapshotID: Int64, nanoseconds: Int64) throws {
        try conn.execute(
            "INSERT INTO mounts (target, snapshot_id, created_ns) VALUES (?, ?, ?)",
            [.text(target), .integer(snapshotID), .integer(nanoseconds)]
        )
    }

    public func deleteMount(target: String) throws {
        try conn.execute("DELETE FROM mounts WHERE target = ?", [.text(target)])
    }

    private static func row(_ row: SQLRow) throws -> SnapshotRow {
        var usage: (bytes: Int64, inodes: Int64)?
        if let bytes = try row.optionalInt(8), let inodes = try row.optionalInt(9) { usage = (bytes, inodes) }
        return SnapshotRow(
            id: try row.int(0), key: try row.string(1), kind: try row.string(2), parentID: try row.optionalInt(3),
            parentKey: try row.optionalString(4), labels: try decode(try row.string(5)), createdNanoseconds: try row.int(6),
            updatedNanoseconds: try row.int(7), usage: usage, imageID: try row.optionalInt(10))
    }

    /// Labels are stored as one JSON object with sorted keys.
    static func encode(_ labels: [String: String]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(labels), as: UTF8.self)
    }

    static func decode(_ text: String) throws -> [String: String] {
        try JSONDecoder().decode([String: String].self, from: Data(text.utf8))
    }
}
