import Digests
import LinuxKernel
import Logging

/// A pulled image as the catalog records it.
public struct ImageRecord: Equatable, Sendable {
    public enum Format: String, Sendable {
        /// Pulled in nydus's RAFS v6 layout: the data blobs are served on demand.
        case nydus
        /// Pulled as plain OCI layers and converted here: the data blobs are complete locally.
        case converted
    }

    public var id: Int64
    public var reference: String
    public var manifestDigest: String
    public var format: Format
    public var bootstrapPath: String
    /// sha256 of the bootstrap file as unpacked from its digest-checked layer; checked whenever the file is
    /// opened again. Nil for images recorded before it was kept (filled in at the next start-up).
    public var bootstrapDigest: String?
    /// The cachefiles domain its blobs live in (`Catalog.sharedDomain` unless its blobs conflict there).
    public var domain: String
    public var createdNanoseconds: Int64
    /// Pinned (`snapctl pin`): its blobs' chunks are never evicted to stay inside the cache budget.
    public var pinned: Bool = false
    /// The image's blobs in device-table order.
    public var blobs: [BlobRecord]
}

/// A data blob as the catalog records it: one sparse backing file, shared by the images of its domain that
/// name it, all of which commit to the same chunk map (`chunkMap`).
public struct BlobRecord: Equatable, Sendable {
    public var id: Int64
    /// The nydus blob id: the hex sha256 of the stored blob, as in the bootstrap's blob table.
    public var blobID: String
    /// The cachefiles domain it belongs to; (domain, blob id) is unique.
    public var domain: String
    /// `RafsBlob.commitment` of the chunk map and digests its images commit to; nil for blobs recorded before
    /// it was kept (filled in when start-up opens the blob).
    public var chunkMap: String?
    /// Where chunks are fetched from; nil for blobs built here (always complete).
    public var registry: String?
    public var repository: String?
    public var storedSize: Int64
    public var uncompressedSize: Int64
    /// Sparse file of the uncompressed blob under `cache/`: what EROFS reads as the device.
    public var backingPath: String
    /// Local copy of the blob's meta sections (chunk infos, ToC) at their stored offsets, sparse elsewhere;
    /// or the whole stored blob for blobs built here.
    public var metaPath: String
    /// Chunk presence bitmap (bit i = chunk i verified and written).
    public var present: [UInt8]
    /// For a blob served from a gzip index: the digest of the image layer whose gzip stream holds its stored
    /// bytes (the layer's uncompressed tar); its zran package (with the gzip index) is `metaPath` + `.zran`.
    public var sourceLayer: String? = nil
    /// For a blob served from a gzip index: the digest of its zran package in the registry, whose checkpoint
    /// windows the `.zran` file (sparse) holds only once they were needed. nil when that file is whole.
    public var indexPackage: String? = nil
}

/// What a pull hands to the catalog: image row plus its blobs (new ones are inserted, known ones shared).
public struct NewImage: Sendable {
    public var reference: String
    public var manifestDigest: String
    public var format: ImageRecord.Format
    public var bootstrapPath: String
    public var bootstrapDigest: String
    public var domain: String
    public var blobs: [NewBlob]

    public init(
        reference: String, manifestDigest: String, format: ImageRecord.Format, bootstrapPath: String, bootstrapDigest: String,
        domain: String, blobs: [NewBlob]
    ) {
        self.reference = reference
        self.manifestDigest = manifestDigest
        self.format = format
        self.bootstrapPath = bootstrapPath
        self.bootstrapDigest = bootstrapDigest
        self.domain = domain
        self.blobs = blobs
    }
}

public struct NewBlob: Sendable {
    public var blobID: String
    /// `RafsBlob.commitment` as this image's bootstrap commits to it.
    public var chunkMap: String
    public var registry: String?
    public var repository: String?
    public var storedSize: Int64
    public var uncompressedSize: Int64
    public var backingPath: String
    public var metaPath: String
    /// See `BlobRecord.sourceLayer` and `BlobRecord.indexPackage`.
    public var sourceLayer: String?
    public var indexPackage: String?

    public init(
        blobID: String, chunkMap: String, registry: String?, repository: String?, storedSize: Int64, uncompressedSize: Int64,
        backingPath: String, metaPath: String, sourceLayer: String? = nil, indexPackage: String? = nil
    ) {
        self.sourceLayer = sourceLayer
        self.indexPackage = indexPackage
        self.blobID = blobID
        self.chunkMap = chunkMap
        self.registry = registry
        self.repository = repository
        self.storedSize = storedSize
        self.uncompressedSize = uncompressedSize
        self.backingPath = backingPath
        self.metaPath = metaPath
    }
}

/// The image and blob tables of the catalog. All methods block on SQLite: call them off the cooperative pool.
public struct ImageCatalog: Sendable {
    public let database: Database

    public init(database: Database) {
        self.database = database
    }

    public func image(reference: String) throws -> ImageRecord? {
        try database.read { conn in try Self.image(conn, where: "reference = ?", [.text(reference)]) }
    }

    public func image(id: Int64) throws -> ImageRecord? {
        try database.read { conn in try Self.image(conn, where: "id = ?", [.integer(id)]) }
    }

    /// Every image, with its blobs: two queries whatever the number of images (`status` and start-up call this
    /// with thousands).
    public func images() throws -> [ImageRecord] {
        try database.read { conn in
            var blobsByImage: [Int64: [BlobRecord]] = [:]
            for row in try conn.query(
                """
                SELECT b.id, b.blob_id, b.domain, b.chunk_map, b.registry, b.repository, b.stored_size, b.uncompressed_size,
                       b.backing_path, b.meta_path, b.present, b.source_layer, b.index_package, ib.image_id
                FROM image_blobs ib JOIN blobs b ON b.id = ib.blob_id ORDER BY ib.image_id, ib.position
                """)
            {
                blobsByImage[try row.int(13), default: []].append(try Self.blob(row: row))
            }
            return try conn.query(Self.imageColumns + " ORDER BY reference").map { row in
                try Self.image(row: row, blobs: blobsByImage[try row.int(0)] ?? [])
            }
        }
    }

    /// Records that this host trusts the gzip index artifact `digest` for the image manifest `subject` (it
    /// built the index from the digest-checked layers, or its user named it).
    public func trustIndex(digest: String, subject: String) throws {
        try database.write { conn in
            try conn.execute(
                "INSERT OR REPLACE INTO trusted_indexes (digest, subject, created_ns) VALUES (?, ?, ?)",
                [.text(digest), .text(subject), .integer(wallClockNanoseconds())])
        }
    }

    /// Whether `digest` is a trusted index of the image manifest `subject`.
    public func isTrustedIndex(digest: String, subject: String) throws -> Bool {
        try database.read { conn in
            try !conn.query("SELECT 1 FROM trusted_indexes WHERE digest = ? AND subject = ?", [.text(digest), .text(subject)]).isEmpty
        }
    }

    /// Pins or unpins an image (its blobs' chunks are never evicted while pinned); returns it.
    public func setPinned(reference: String, _ pinned: Bool) throws -> ImageRecord {
        try database.write { conn in
            try conn.execute("UPDATE images SET pinned = ? WHERE reference = ?", [.integer(pinned ? 1 : 0), .text(reference)])
            guard let image = try Self.image(conn, where: "reference = ?", [.text(reference)]) else {
                throw CatalogError.notFound(reference: reference)
            }
            return image
        }
    }

    /// Row ids of the blobs of pinned images.
    public func pinnedBlobs() throws -> Set<Int64> {
        try database.read { conn in
            Set(
                try conn.query("SELECT DISTINCT ib.blob_id FROM image_blobs ib JOIN images i ON i.id = ib.image_id WHERE i.pinned != 0")
                    .map { try $0.int(0) })
        }
    }

    /// An image's reference and its blobs' row ids and uncompressed sizes: what `status` shows per image.
    public struct Summary: Sendable {
        public var reference: String
        public var blobs: [(id: Int64, uncompressedSize: Int64)]
    }

    /// Every blob's backing file (no bitmaps: what usage walks).
    public func backingPaths() throws -> [String] {
        try database.read { conn in try conn.query("SELECT backing_path FROM blobs ORDER BY id").map { try $0.string(0) } }
    }

    /// Every blob row.
    public func allBlobs() throws -> [BlobRecord] {
        try database.read { conn in try conn.query(Self.blobColumns + " ORDER BY id").map(Self.blob(row:)) }
    }

    /// Every image's `Summary`, in reference order, from one query.
    public func summaries() throws -> [Summary] {
        try database.read { conn in
            var result: [Summary] = []
            for row in try conn.query(
                """
                SELECT i.reference, b.id, b.uncompressed_size
                FROM images i LEFT JOIN image_blobs ib ON ib.image_id = i.id LEFT JOIN blobs b ON b.id = ib.blob_id
                ORDER BY i.reference, ib.position
                """)
            {
                let reference = try row.string(0)
                if result.last?.reference != reference { result.append(Summary(reference: reference, blobs: [])) }
                if let id = try row.optionalInt(1) { result[result.count - 1].blobs.append((id, try row.int(2))) }
            }
            return result
        }
    }

    /// The domain an image with these blobs (blob id, chunk map) goes in: the shared one when, for each blob,
    /// the shared domain has no row for its id or one with the same chunk map; otherwise a domain of its own,
    /// named after its chunk maps (so identical images still share with each other). The answer is checked
    /// again by `insert`, inside its transaction.
    ///
    /// `usableAsNew` is asked of each blob the shared domain has no row for (after the catalog is read): false
    /// (the kernel may still hold state an earlier row of that id left, such as a detached mount's live cookie)
    /// sends the image to its own domain too.
    public func domain(
        for blobs: [(blobID: String, chunkMap: String)], usableAsNew: (String) -> Bool = { _ in true }
    ) throws -> String {
        var new: [String] = []
        let agrees = try database.read { conn in
            try blobs.allSatisfy { blob in
                let rows = try conn.query(
                    "SELECT chunk_map FROM blobs WHERE domain = ? AND blob_id = ?", [.text(Catalog.sharedDomain), .text(blob.blobID)])
                guard let row = rows.first else {
                    new.append(blob.blobID)
                    return true
                }
                return try row.optionalString(0) == blob.chunkMap
            }
        }
        return agrees && new.allSatisfy(usableAsNew) ? Catalog.sharedDomain : Self.ownDomain(for: blobs.map(\.chunkMap))
    }

    /// `ondemand-snapshotter.<16 hex digits of sha256 over the chunk maps>`.
    public static func ownDomain(for chunkMaps: [String]) -> String {
        Catalog.sharedDomain + "." + SHA256.hash(Array(chunkMaps.joined(separator: "\n").utf8)).hexString.prefix(16)
    }

    /// Records an image and its blobs in one transaction. A blob whose (domain, blob id) is known is shared,
    /// but only if its chunk map is the one this image commits to: otherwise nothing is recorded
    /// (`CatalogError.blobConflict`).
    /// - Returns: the image as recorded, and which of its blobs were new.
    public func insert(_ new: NewImage) throws -> (image: ImageRecord, newBlobs: Set<Int64>) {
        try database.write { conn in
            if let existing = try Self.image(conn, where: "reference = ?", [.text(new.reference)]) {
                throw CatalogError.alreadyPulled(reference: new.reference, digest: existing.manifestDigest)
            }
            let now = wallClockNanoseconds()
            try conn.execute(
                """
                INSERT INTO images (reference, manifest_digest, format, bootstrap_path, bootstrap_digest, domain, created_ns)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    .text(new.reference), .text(new.manifestDigest), .text(new.format.rawValue), .text(new.bootstrapPath),
                    .text(new.bootstrapDigest), .text(new.domain), .integer(now),
                ])
            let imageID = conn.lastInsertRowID
            var created = Set<Int64>()
            for (position, blob) in new.blobs.enumerated() {
                let id: Int64
                if let known = try conn.query(
                    "SELECT id, chunk_map FROM blobs WHERE domain = ? AND blob_id = ?", [.text(new.domain), .text(blob.blobID)]
                ).first {
                    guard try known.optionalString(1) == blob.chunkMap else {
                        throw CatalogError.blobConflict(reference: new.reference, blobID: blob.blobID, domain: new.domain)
                    }
                    id = try known.int(0)
                } else {
                    try conn.execute(
                        """
                        INSERT INTO blobs (blob_id, domain, chunk_map, registry, repository, stored_size, uncompressed_size, backing_path,
                                           meta_path, created_ns, source_layer, index_package)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                        [
                            .text(blob.blobID), .text(new.domain), .text(blob.chunkMap), SQLValue(blob.registry), SQLValue(blob.repository),
                            .integer(blob.storedSize), .integer(blob.uncompressedSize), .text(blob.backingPath), .text(blob.metaPath),
                            .integer(now), SQLValue(blob.sourceLayer), SQLValue(blob.indexPackage),
                        ])
                    id = conn.lastInsertRowID
                    created.insert(id)
                }
                try conn.execute(
                    "INSERT INTO image_blobs (image_id, blob_id, position) VALUES (?, ?, ?)",
                    [.integer(imageID), .integer(id), .integer(Int64(position))])
            }
            guard let image = try Self.image(conn, where: "id = ?", [.integer(imageID)]) else {
                throw CatalogError.unexpectedValue(column: 0, expected: "the image just inserted", found: .null)
            }
            return (image, created)
        }
    }

    /// Records the chunk map of a blob recorded before chunk maps were kept (start-up, once it verified).
    public func setChunkMap(blobRowID: Int64, chunkMap: String) throws {
        try database.write { conn in
            try conn.execute(
                "UPDATE blobs SET chunk_map = ? WHERE id = ? AND chunk_map IS NULL", [.text(chunkMap), .integer(blobRowID)])
        }
    }

    /// Records the bootstrap digest of an image recorded before it was kept.
    public func setBootstrapDigest(imageID: Int64, digest: String) throws {
        try database.write { conn in
            try conn.execute(
                "UPDATE images SET bootstrap_digest = ? WHERE id = ? AND bootstrap_digest IS NULL", [.text(digest), .integer(imageID)])
        }
    }

    /// Removes an image row (refused while snapshots use it) and every blob no other image names.
    /// - Returns: the removed image and the blobs that are no longer referenced (their files are the caller's).
    public func remove(reference: String) throws -> (image: ImageRecord, orphans: [BlobRecord]) {
        try database.write { conn in
            guard let image = try Self.image(conn, where: "reference = ?", [.text(reference)]) else {
                throw CatalogError.notFound(reference: reference)
            }
            try Self.checkUnused(conn, image)
            try conn.execute("DELETE FROM images WHERE id = ?", [.integer(image.id)])
            let orphans = try conn.query(
                Self.blobColumns + " WHERE NOT EXISTS (SELECT 1 FROM image_blobs ib WHERE ib.blob_id = blobs.id) ORDER BY id"
            ).map(Self.blob(row:))
            for orphan in orphans { try conn.execute("DELETE FROM blobs WHERE id = ?", [.integer(orphan.id)]) }
            return (image, orphans)
        }
    }

    /// The image recorded under `reference`, refused if a snapshot sits on it (what `remove` checks again).
    public func removable(reference: String) throws -> ImageRecord {
        try database.read { conn in
            guard let image = try Self.image(conn, where: "reference = ?", [.text(reference)]) else {
                throw CatalogError.notFound(reference: reference)
            }
            try Self.checkUnused(conn, image)
            return image
        }
    }

    private static func checkUnused(_ conn: SQLConnection, _ image: ImageRecord) throws {
        let users = try conn.query("SELECT key FROM snapshots WHERE image_id = ? ORDER BY key", [.integer(image.id)])
        if !users.isEmpty { throw CatalogError.inUse(reference: image.reference, snapshots: try users.map { try $0.string(0) }) }
    }

    /// How many images use a bootstrap file (several references can share one manifest).
    public func imagesUsing(bootstrapPath: String) throws -> Int {
        try database.read { conn in
            Int(try conn.query("SELECT COUNT(*) FROM images WHERE bootstrap_path = ?", [.text(bootstrapPath)]).first?.int(0) ?? 0)
        }
    }

    // MARK: - Rows

    static let blobColumns = """
        SELECT id, blob_id, domain, chunk_map, registry, repository, stored_size, uncompressed_size, backing_path, meta_path, present,
               source_layer, index_package
        FROM blobs
        """

    static func blob(row: SQLRow) throws -> BlobRecord {
        BlobRecord(
            id: try row.int(0), blobID: try row.string(1), domain: try row.string(2), chunkMap: try row.optionalString(3),
            registry: try row.optionalString(4), repository: try row.optionalString(5), storedSize: try row.int(6),
            uncompressedSize: try row.int(7), backingPath: try row.string(8), metaPath: try row.string(9), present: try row.blob(10),
            sourceLayer: try row.optionalString(11), indexPackage: try row.optionalString(12))
    }

    static let imageColumns =
        "SELECT id, reference, manifest_digest, format, bootstrap_path, created_ns, bootstrap_digest, domain, pinned FROM images"

    /// An image row (`imageColumns`) with its blobs.
    static func image(row: SQLRow, blobs: [BlobRecord]) throws -> ImageRecord {
        let formatText = try row.string(3)
        guard let format = ImageRecord.Format(rawValue: formatText) else {
            throw CatalogError.unexpectedValue(column: 3, expected: "an image format", found: .text(formatText))
        }
        return ImageRecord(
            id: try row.int(0), reference: try row.string(1), manifestDigest: try row.string(2), format: format,
            bootstrapPath: try row.string(4), bootstrapDigest: try row.optionalString(6), domain: try row.string(7),
            createdNanoseconds: try row.int(5), pinned: try row.int(8) != 0, blobs: blobs)
    }

    static func image(_ conn: SQLConnection, where clause: String, _ parameters: [SQLValue]) throws -> ImageRecord? {
        guard let row = try conn.query(Self.imageColumns + " WHERE " + clause, parameters).first else { return nil }
        let id = try row.int(0)
        let blobs = try conn.query(
            """
            SELECT b.id, b.blob_id, b.domain, b.chunk_map, b.registry, b.repository, b.stored_size, b.uncompressed_size, b.backing_path,
                   b.meta_path, b.present, b.source_layer, b.index_package
            FROM image_blobs ib JOIN blobs b ON b.id = ib.blob_id WHERE ib.image_id = ? ORDER BY ib.position
            """, [.integer(id)]
        ).map(blob(row:))
        return try image(row: row, blobs: blobs)
    }
}

/// Persists the engine's chunk bitmaps in the `blobs` table.
public struct CatalogChunkStore: Sendable {
    public let database: Database

    public init(database: Database) {
        self.database = database
    }

    public func save(blobID: Int64, bitmap: [UInt8]) throws {
        try database.write { conn in
            try conn.execute("UPDATE blobs SET present = ? WHERE id = ?", [.blob(bitmap), .integer(blobID)])
        }
    }
}
