import Foundation
import Testing

@testable import BlobStore

@Suite("RAFS v6 bootstrap reader (nydus fixtures)")
struct ErofsImageTests {
    @Test("superblock, device table and blob table of rafs-v6-2.2.boot")
    func superBlockAndTables() throws {
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        let sb = image.superBlock
        #expect(sb.blockSizeBits == 12)
        #expect(sb.rootNid == 128)
        #expect(sb.inodeCount == 3)
        #expect(sb.metaBlockAddress == 2)
        #expect(sb.extraDevices == 1)
        #expect(sb.deviceTableOffset == 1408)
        #expect(sb.compatFeatures.contains(.rafsV6))
        #expect(sb.incompatFeatures == [.chunkedFile, .deviceTable])

        #expect(image.devices.count == 1)
        #expect(image.devices[0].tagString == ImageFixtures.blobID)
        #expect(image.devices[0].blocks == 9)

        let rafs = try #require(image.rafs)
        #expect(rafs.chunkSize == 1 << 20)
        #expect(rafs.flags.contains(.hashBlake3))
        #expect(rafs.flags.contains(.compressionZstd))

        #expect(image.blobs.count == 1)
        let blob = image.blobs[0]
        #expect(blob.blobID == ImageFixtures.blobID)
        #expect(blob.chunkCount == 2)
        #expect(blob.chunkSize == 1 << 20)
        #expect(blob.compression == .zstd)
        #expect(blob.digestAlgorithm == .blake3)
        #expect(blob.uncompressedSize == 36864)
        #expect(blob.features.contains(.hasToc))
        #expect(blob.metaCompressor == RafsBlobEntry.Compression.none)

        let chunks = try image.rafsChunkTable()
        #expect(chunks.count == 2)
    }

    @Test("listing of rafs-v6-2.2.boot")
    func listing() throws {
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        let entries = try image.entries()
        #expect(entries.map(\.path) == ["/", "/lib.rs", "/sync_io.rs"])
        for entry in entries { print(entry.path, entry.type, String(entry.mode, radix: 8), entry.size, entry.uid, entry.gid, entry.nlink, entry.mtime) }
        let lib = try image.stat("/lib.rs")
        #expect(lib.type == .regular)
        let mappings = try image.chunkMappings(of: try image.lookup("/lib.rs"))
        #expect(mappings.allSatisfy { $0.device == 1 })
        print(mappings)
    }

    @Test("bootstrap layer from nydus-snapshotter lists and stats")
    func layerBootstrap() throws {
        let scratch = try ImageFixtures.scratchDirectory("layer")
        defer { ImageFixtures.cleanup(scratch) }
        let path = try ImageFixtures.extractLayerBootstrap(into: scratch)
        let image = try ErofsImage(path: path)
        let entries = try image.entries()
        #expect(entries.count > 10)
        print(entries.count, image.blobs.map(\.blobID), image.devices.count)
        for entry in entries.prefix(40) { print(entry.path, entry.type, String(entry.mode, radix: 8), entry.size, entry.symlinkTarget ?? "", entry.xattrs.map(\.name)) }
    }
}
