import LinuxKernel
import Logging

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
        // A blob id names stored bytes, not what an image says about them: two images can name one blob id
        // with different chunk maps or digests (one of them lying). Blobs are therefore shared only within a
        // cachefiles domain, in which one blob id has one chunk map (`chunk_map`, the commitment of
        // `RafsBlob`); an image whose blobs conflict with the shared domain gets a domain of its own.
        Migration(
            version: 3,
            name: "blobs keyed by domain and chunk map; image domains and bootstrap digests",
            sql: """
                CREATE TABLE blobs_v3 (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    blob_id TEXT NOT NULL,
                    domain TEXT NOT NULL,
                    chunk_map TEXT,
                    registry TEXT,
                    repository TEXT,
                    stored_size INTEGER NOT NULL,
                    uncompressed_size INTEGER NOT NULL,
                    backing_path TEXT NOT NULL,
                    meta_path TEXT NOT NULL,
                    present BLOB NOT NULL DEFAULT x'',
                    created_ns INTEGER NOT NULL,
                    UNIQUE (domain, blob_id)
                );
                INSERT INTO blobs_v3 (id, blob_id, domain, chunk_map, registry, repository, stored_size, uncompressed_size,
                                      backing_path, meta_path, present, created_ns)
                    SELECT id, blob_id, '\(sharedDomain)', NULL, registry, repository, stored_size, uncompressed_size,
                           backing_path, meta_path, present, created_ns FROM blobs;
                DROP TABLE blobs;
                ALTER TABLE blobs_v3 RENAME TO blobs;
                ALTER TABLE images ADD COLUMN domain TEXT NOT NULL DEFAULT '\(sharedDomain)';
                ALTER TABLE images ADD COLUMN bootstrap_digest TEXT;
                """,
            rebuildsTables: true
        ),
        // Pinned images keep every chunk of their blobs whatever the cache budget.
        Migration(
            version: 4,
            name: "image pins",
            sql: "ALTER TABLE images ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;"
        ),
        // Blobs served from a gzip index of a plain image's layer, and the indexes this host trusts.
        Migration(
            version: 5,
            name: "gzip-indexed blobs",
            sql: """
                ALTER TABLE blobs ADD COLUMN source_layer TEXT;
                CREATE TABLE trusted_indexes (
                    digest TEXT PRIMARY KEY,
                    subject TEXT NOT NULL,
                    created_ns INTEGER NOT NULL
                );
                """
        ),
        // A gzip-indexed blob's package, whose windows are fetched when first needed.
        Migration(
            version: 6,
            name: "gzip index packages",
            sql: "ALTER TABLE blobs ADD COLUMN index_package TEXT;"
        ),
    ]

    /// The cachefiles domain (and cache directory) shared by images whose blobs agree.
    public static let sharedDomain = "ondemand-snapshotter"

    /// Opens (creating and migrating as needed) the catalog under `root`, readable by root only.
    public static func open(root: String, logger: Logger) throws -> Database {
        let path = FileSystem.join(root, fileName)
        let database = try Database(path: path, migrations: migrations, logger: logger)
        try FileSystem.chmod(path, 0o600)
        return database
    }
}
