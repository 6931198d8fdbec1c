import Foundation
import TestFixtures
import TestThreads
import Testing

@testable import RAFS

@Suite("RAFS v6 bootstrap reader (nydus fixtures)", .ownThread)
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
        #expect(entries.map(\.type) == [.directory, .regular, .regular])
        #expect(entries.map(\.permissions) == [0o755, 0o644, 0o644])
        #expect(entries.map(\.size) == [67, 16931, 13400])
        let lib = try image.stat("/lib.rs")
        #expect(lib.nlink == 1)
        #expect(lib.dataLayout == ErofsInode.DataLayout.chunkBased.rawValue)
        #expect(try image.stat("/") == entries[0])
        #expect(throws: ImageFormatError.notFound(path: "/missing")) { _ = try image.stat("/missing") }
        #expect(throws: ImageFormatError.notADirectory(path: "/lib.rs/x")) { _ = try image.stat("/lib.rs/x") }
        // Chunk data lives on device 1: without a reader for it, the read names the device.
        #expect(throws: ImageFormatError.deviceUnavailable(device: 1)) { _ = try image.readFile("/lib.rs") }
    }

    @Test("bootstrap layer from nydus-snapshotter lists and stats")
    func layerBootstrap() throws {
        let scratch = try ImageFixtures.scratchDirectory("layer")
        defer { ImageFixtures.cleanup(scratch) }
        let path = try ImageFixtures.extractLayerBootstrap(into: scratch)
        let image = try ErofsImage(path: path)
        #expect(image.blobs.map(\.blobID) == ["cdde6f5645daea414d60bc75611102a8bc8dae6198f087366365d6ff85bf5726"])
        #expect(image.devices.map(\.tagString) == image.blobs.map(\.blobID))
        #expect(image.blobs[0].compression == .lz4Block)
        let entries = try image.entries()
        #expect(Set(entries.map(\.nid)).count == Int(image.superBlock.inodeCount))
        let bin = try image.stat("/bin")
        #expect(bin.type == .symlink)
        #expect(bin.symlinkTarget == "usr/bin")
        #expect(bin.permissions == 0o777)
        #expect(try image.stat("/etc/alternatives/awk").symlinkTarget == "/usr/bin/mawk")
        let etc = try image.stat("/etc")
        #expect(etc.type == .directory)
        // Every chunk-based file maps to blob 0 with chunk-info indexes inside that blob.
        var chunks = 0
        for entry in entries where entry.type == .regular && entry.size > 0 {
            for mapping in try image.chunkMappings(of: try image.inode(nid: entry.nid)) {
                #expect(mapping.device == 1)
                #expect(mapping.index?.rafsBlobIndex == 0)
                #expect((mapping.index?.rafsChunkInfoIndex ?? .max) < image.blobs[0].chunkCount)
                chunks += 1
            }
        }
        #expect(chunks > 0)
        #expect(try image.rafsChunkTable().count == 201200 / RafsChunkTableEntry.size)
    }
}
