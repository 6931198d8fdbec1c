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
        ),
        Migration(
            version: 2,
            name: "images, blobs and chunk state",
            sql: """
                CREATE TABLE images (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    reference TEXT NOT NULL UNIQUE,
                    manifest_digest TEXT NOT NULL,
                    format TEXT NOT NULL CHECK (format IN ('nydus', 'converted')),
                    bootstrap_path TEXT NOT NULL,
                    created_ns INTEGER NOT NULL
                );
                CREATE TABLE blobs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    blob_id TEXT NOT NULL UNIQUE,
                    registry TEXT,
                    repository TEXT,
                    stored_size INTEGER NOT NULL,
                    uncompressed_size INTEGER NOT NULL,
                    backing_path TEXT NOT NULL,
                    meta_path TEXT NOT NULL,
                    present BLOB NOT NULL DEFAULT x'',
                    created_ns INTEGER NOT NULL
                );
                CREATE TABLE image_blobs (
                    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
                    blob_id INTEGER NOT NULL REFERENCES blobs(id) ON DELETE RESTRICT,
                    position INTEGER NOT NULL,
                    PRIMARY KEY (image_id, position)
                );
                CREATE INDEX image_blobs_by_blob ON image_blobs(blob_id);
                ALTER TABLE snapshots ADD COLUMN image_id INTEGER REFERENCES images(id) ON DELETE RESTRICT;
                CREATE INDEX snapshots_by_image ON snapshots(image_id);
                """
        ),
    ]

    /// Opens (creating and migrating as needed) the catalog under `root`, readable by root only.
    public static func open(root: String, logger: Logger) throws -> Database {
        let path = FileSystem.join(root, fileName)
        let database = try Database(path: path, migrations: migrations, logger: logger)
        try FileSystem.chmod(path, 0o600)
        return database
    }
}
