import Foundation
import Logging
import TestFixtures
import TestThreads
import Testing

@testable import BlobStore
@testable import Catalog
@testable import RAFS

#if canImport(Glibc)
import Glibc
#endif

/// What vouches for a blob's chunk map, and what happens to bytes nobody vouches for: unit-level checks on the
/// real nydus 2.2 fixture (bootstrap + blob) and on the catalog. The end-to-end attacks are `TrustAttackTests`.
@Suite("Trust: blob meta checked against the bootstrap, undescribed ranges refused, catalog keyed by chunk map", .ownThread)
struct TrustVerificationTests {
    static func fixture() throws -> (image: ErofsImage, entry: RafsBlobEntry, table: [RafsChunkTableEntry]) {
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        return (image, image.blobs[0], try image.rafsChunkTable())
    }

    @Test("nydus's own image: its chunk table vouches for the blob meta; the commitment changes with any digest")
    func fixtureCommitment() throws {
        let (_, entry, table) = try Self.fixture()
        let blob = try RafsBlob(path: ImageFixtures.blob, entry: entry, chunkTable: table)
        #expect(blob.commitmentSource == .chunkTable)
        #expect(try RafsBlob(path: ImageFixtures.blob, entry: entry, chunkTable: table).commitment == blob.commitment)
        var other = table
        other[0].digest[0] ^= 1
        #expect(try RafsBlob(path: ImageFixtures.blob, entry: entry, chunkTable: other).commitment != blob.commitment)
        // Without the chunk table, its ToC (whose digest the blob table records) vouches for meta and digests.
        let viaToc = try RafsBlob(path: ImageFixtures.blob, entry: entry, chunkTable: [])
        #expect(viaToc.commitmentSource == .toc)
        #expect(viaToc.chunkDigests == blob.chunkDigests)
    }

    @Test("a chunk table that places a chunk elsewhere than the blob meta does is refused, naming the chunk")
    func tableDisagrees() throws {
        let (_, entry, table) = try Self.fixture()
        var moved = table
        let row = try #require(moved.firstIndex { $0.index == 1 })
        moved[row].uncompressedOffset += 4096
        #expect {
            _ = try RafsBlob(path: ImageFixtures.blob, entry: entry, chunkTable: moved)
        } throws: { error in
            guard case .badChunkInfo(_, let chunk, let reason)? = error as? ImageFormatError else { return false }
            return chunk == 1 && reason.contains("chunk table")
        }
    }

    @Test("a blob meta nothing in the bootstrap vouches for is refused")
    func unvouched() throws {
        let (_, entry, _) = try Self.fixture()
        var bare = entry
        bare.tocDigest = [UInt8](repeating: 0, count: 32)
        #expect {
            _ = try RafsBlob(path: ImageFixtures.blob, entry: bare, chunkTable: [])
        } throws: { error in
            guard case .badBlobMeta(_, let reason)? = error as? ImageFormatError else { return false }
            return reason.contains("commits to neither")
        }
    }

    /// The fixture with chunk 1 moved 4 KiB up in both the blob meta and the chunk table (an image that lies
    /// consistently): device block 20480..<24576 then lies in no chunk.
    static func gappedBlob(scratch: String) throws -> RafsBlob {
        let (_, entry, table) = try Self.fixture()
        var bytes = try ImageFixtures.bytes(ImageFixtures.blob)
        #expect(entry.metaCompressorRaw == 0 && !entry.features.contains(.chunkInfoV2))
        let word = Int(entry.metaOffset) + 1 * BlobChunkInfo.v1Size
        var value: UInt64 = 0
        for index in 0..<8 { value |= UInt64(bytes[word + index]) << (8 * UInt64(index)) }
        value += 4096
        for index in 0..<8 { bytes[word + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
        let path = scratch + "/" + entry.blobID
        try ImageFixtures.write(bytes, to: path)
        var grown = entry
        grown.uncompressedSize += 4096
        var moved = table
        moved[try #require(moved.firstIndex { $0.index == 1 })].uncompressedOffset += 4096
        return try RafsBlob(path: path, entry: grown, chunkTable: moved)
    }

    @Test("a range no chunk describes is refused by the engine (EIO), never answered as present or as a hole")
    func undescribedRange() async throws {
        let scratch = try ImageFixtures.scratchDirectory("trust-gap")
        defer { ImageFixtures.cleanup(scratch) }
        let blob = try Self.gappedBlob(scratch: scratch)
        #expect(blob.describes(offset: 0, length: 20480))
        #expect(!blob.describes(offset: 20480, length: 4096))
        #expect(!blob.describes(offset: 16384, length: 8192))
        #expect(blob.describes(offset: 24576, length: 16384))
        #expect(!blob.describes(offset: blob.deviceSize, length: 1))

        let backing = scratch + "/backing"
        try ImageFixtures.write([], to: backing)
        #expect(truncate(backing, off_t(blob.deviceSize)) == 0)
        let engine = BlobEngine(logger: Logger(label: "test"))
        try engine.register(id: 1, rafs: blob, backingPath: backing, source: FileRangeSource(path: blob.path))
        #expect(!engine.isPresent(blobID: 1, offset: 20480, length: 4096))
        await #expect(throws: BlobStoreError.undescribedRange(blob: 1, offset: 20480, length: 4096, deviceSize: blob.deviceSize)) {
            try await engine.ensure(blobID: 1, offset: 20480, length: 4096)
        }
        // Described ranges are still served, verified.
        try await engine.ensure(blobID: 1, offset: 24576, length: 4096)
        #expect(engine.isPresent(blobID: 1, offset: 24576, length: 4096))
    }

    @Test("a catalog of schema 2 migrates to 3 with every row kept, blobs in the shared domain, foreign keys on")
    func migration() throws {
        let scratch = try ImageFixtures.scratchDirectory("trust-migrate")
        defer { ImageFixtures.cleanup(scratch) }
        let path = scratch + "/catalog.db"
        do {
            let old = try Database(path: path, migrations: Array(Catalog.migrations.prefix(2)), logger: Logger(label: "test"))
            try old.write { conn in
                try conn.execute(
                    "INSERT INTO images (reference, manifest_digest, format, bootstrap_path, created_ns) VALUES ('r', 'sha256:m', 'nydus', '/b', 1)"
                )
                try conn.execute(
                    """
                    INSERT INTO blobs (blob_id, registry, repository, stored_size, uncompressed_size, backing_path, meta_path, present, created_ns)
                    VALUES ('abc', 'reg', 'repo', 10, 20, '/cache/abc', '/blobs/abc.meta', x'05', 2)
                    """)
                try conn.execute("INSERT INTO image_blobs (image_id, blob_id, position) VALUES (1, 1, 0)")
                try conn.execute(
                    "INSERT INTO snapshots (key, kind, labels, created_ns, updated_ns, image_id) VALUES ('s', 'committed', '{}', 1, 1, 1)")
            }
        }
        let database = try Database(path: path, migrations: Catalog.migrations, logger: Logger(label: "test"))
        #expect(try database.schemaVersion() == Catalog.migrations.map(\.version).max())
        let image = try #require(try ImageCatalog(database: database).image(reference: "r"))
        #expect(image.domain == Catalog.sharedDomain && image.bootstrapDigest == nil)
        #expect(
            image.blobs == [
                BlobRecord(
                    id: 1, blobID: "abc", domain: Catalog.sharedDomain, chunkMap: nil, registry: "reg", repository: "repo", storedSize: 10,
                    uncompressedSize: 20, backingPath: "/cache/abc", metaPath: "/blobs/abc.meta", present: [5])
            ])
        #expect(try database.read { try $0.query("PRAGMA foreign_keys").first?.int(0) } == 1)
        // The image_blobs reference still points at the rebuilt table.
        #expect(throws: CatalogError.self) { try database.write { try $0.execute("DELETE FROM blobs WHERE id = 1") } }
        #expect(try database.integrityCheck() == ["ok"])
    }

    @Test("one blob id with two chunk maps: the second image gets a domain of its own, equal maps share")
    func domains() throws {
        let scratch = try ImageFixtures.scratchDirectory("trust-domain")
        defer { ImageFixtures.cleanup(scratch) }
        let catalog = ImageCatalog(
            database: try Database(path: scratch + "/c.db", migrations: Catalog.migrations, logger: Logger(label: "t")))
        func image(_ reference: String, chunkMap: String) throws -> ImageRecord {
            let domain = try catalog.domain(for: [("b1", chunkMap)])
            let blob = NewBlob(
                blobID: "b1", chunkMap: chunkMap, registry: "r", repository: reference, storedSize: 1, uncompressedSize: 1,
                backingPath: "/cache/\(domain)/b1", metaPath: "/blobs/\(domain)/b1.meta")
            return try catalog.insert(
                NewImage(
                    reference: reference, manifestDigest: "sha256:" + reference, format: .nydus, bootstrapPath: "/b/" + reference,
                    bootstrapDigest: "d", domain: domain, blobs: [blob])
            ).image
        }
        let victim = try image("victim", chunkMap: "aaa")
        let attacker = try image("attacker", chunkMap: "bbb")
        let twin = try image("twin", chunkMap: "aaa")
        #expect(victim.domain == Catalog.sharedDomain)
        #expect(attacker.domain != Catalog.sharedDomain && attacker.blobs[0].id != victim.blobs[0].id)
        #expect(twin.domain == Catalog.sharedDomain && twin.blobs[0].id == victim.blobs[0].id)
        // A stale decision (the shared row appeared meanwhile with another map) is refused, not shared.
        #expect(throws: CatalogError.self) {
            try catalog.insert(
                NewImage(
                    reference: "late", manifestDigest: "sha256:late", format: .nydus, bootstrapPath: "/b/late", bootstrapDigest: "d",
                    domain: Catalog.sharedDomain,
                    blobs: [
                        NewBlob(
                            blobID: "b1", chunkMap: "ccc", registry: "r", repository: "late", storedSize: 1, uncompressedSize: 1,
                            backingPath: "/x", metaPath: "/y")
                    ]))
        }
    }
}
