import Logging
import SystemSupport

/// The service's catalog: one SQLite file (`catalog.db` under the root) holding snapshots, mounts and,
/// as the image work lands, images, blobs and chunk state. Its schema is the one numbered list below.
public enum Catalog {
    public static let fileName = "catalog.db"

    public static let migrations: [Migration] = [
        Migration(
            version: 1,
            name: "snapshots and mounts",
            sql: """
                CREATE TABLE snapshots (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    key TEXT NOT NULL UNIQUE,
                    kind TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
                    parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
                    labels TEXT NOT NULL DEFAULT '{}',
                    created_ns INTEGER NOT NULL,
                    updated_ns INTEGER NOT NULL,
                    usage_bytes INTEGER,
                    usage_inodes INTEGER
                );
                CREATE INDEX snapshots_by_parent ON snapshots(parent_id);
                CREATE TABLE mounts (
                    target TEXT PRIMARY KEY,
                    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE RESTRICT,
                    created_ns INTEGER NOT NULL
                );
                CREATE INDEX mounts_by_snapshot ON mounts(snapshot_id);
                """
        )
    ]

    /// Opens (creating and migrating as needed) the catalog under `root`, readable by root only.
    public static func open(root: String, logger: Logger) throws -> Database {
        let path = FileSystem.join(root, fileName)
        let database = try Database(path: path, migrations: migrations, logger: logger)
        try FileSystem.chmod(path, 0o600)
        return database
    }
}
