import Foundation
import TestFixtures
import TestThreads
import Testing

@testable import RAFS

/// Corrupted copies of the nydus fixture: each must give a typed error naming the fault, never a crash or
/// a hang.
@Suite("Hostile images and blobs", .ownThread)
struct HostileImageTests {
    /// Writes `bytes` to a scratch file, runs `body` on its path, and cleans up.
    static func withCopy<T>(_ bytes: [UInt8], name: String = "image.boot", _ body: (String) throws -> T) throws -> T {
        let scratch = try ImageFixtures.scratchDirectory("hostile")
        defer { ImageFixtures.cleanup(scratch) }
        let path = scratch + "/" + name
        try ImageFixtures.write(bytes, to: path)
        return try body(path)
    }

    static func put32(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index))) }
    }

    static func put64(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt64) {
        for index in 0..<8 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
    }

    @Test("truncated bootstrap", arguments: [0, 1000, 1100, 8192, 12300])
    func truncated(length: Int) throws {
        let bytes = Array(try ImageFixtures.bytes(ImageFixtures.bootstrap).prefix(length))
        try Self.withCopy(bytes) { path in
            do {
                let image = try ErofsImage(path: path)
                _ = try image.entries()
                Issue.record("a bootstrap cut at \(length) bytes was accepted")
            } catch let error as ImageFormatError {
                switch error {
                case .truncated, .outOfBounds, .badInode: break
                default: Issue.record("unexpected error \(error)")
                }
            }
        }
    }

    @Test("superblock with a bad magic")
    func badMagic() throws {
        var bytes = try ImageFixtures.bytes(ImageFixtures.bootstrap)
        bytes[1024] ^= 0xFF
        try Self.withCopy(bytes) { path in
            #expect(
                throws: ImageFormatError.badMagic(
                    what: "EROFS superblock", offset: 1024, expected: 0xE0F5_E1E2,
                    found: 0xE0F5_E11D)
            ) {
                _ = try ErofsImage(path: path)
            }
        }
    }

    @Test("root nid whose inode lies past the end of the file")
    func rootPastEnd() throws {
        var bytes = try ImageFixtures.bytes(ImageFixtures.bootstrap)
        bytes[1024 + 14] = 0xFF
        bytes[1024 + 15] = 0xFF
        try Self.withCopy(bytes) { path in
            #expect(throws: ImageFormatError.self) { _ = try ErofsImage(path: path) }
            do {
                _ = try ErofsImage(path: path)
            } catch let error as ImageFormatError {
                guard case .badInode(let nid, _) = error else {
                    Issue.record("unexpected \(error)")
                    return
                }
                #expect(nid == 0xFFFF)
            }
        }
    }

    /// Offset of the dirent named `name` in the root directory's inline data.
    static func rootDirentOffset(_ image: ErofsImage, named name: String) throws -> Int {
        let root = try image.inode(nid: image.rootNid)
        let entries = try image.directoryEntries(of: root)
        let index = try #require(entries.firstIndex { $0.name == name })
        return Int(root.trailerOffset) + index * ErofsDirent.size
    }

    @Test("directory entry pointing past the end of the file")
    func direntPastEnd() throws {
        var bytes = try ImageFixtures.bytes(ImageFixtures.bootstrap)
        let offset = try Self.rootDirentOffset(try ErofsImage(path: ImageFixtures.bootstrap), named: "lib.rs")
        Self.put64(&bytes, offset, 1 << 40)
        try Self.withCopy(bytes) { path in
            let image = try ErofsImage(path: path)
            #expect(
                throws: ImageFormatError.badInode(nid: 1 << 40, reason: "its offset lies beyond the end of the bootstrap (20480 bytes)")
            ) {
                _ = try image.entries()
            }
            #expect(throws: ImageFormatError.self) { _ = try image.stat("/lib.rs") }
        }
    }

    @Test("directory entry pointing back at an ancestor (a loop)")
    func directoryLoop() throws {
        var bytes = try ImageFixtures.bytes(ImageFixtures.bootstrap)
        let clean = try ErofsImage(path: ImageFixtures.bootstrap)
        let offset = try Self.rootDirentOffset(clean, named: "lib.rs")
        Self.put64(&bytes, offset, clean.rootNid)
        bytes[offset + 10] = 2  // FT_DIR
        try Self.withCopy(bytes) { path in
            let image = try ErofsImage(path: path)
            #expect(throws: ImageFormatError.directoryLoop(path: "/lib.rs", nid: clean.rootNid)) {
                _ = try image.entries()
            }
            // Lookups through the loop stay bounded by the path's length.
            #expect(throws: ImageFormatError.notFound(path: "/lib.rs/lib.rs/nothing")) {
                _ = try image.lookup("/lib.rs/lib.rs/nothing")
            }
        }
    }

    @Test("chunk index pointing past the end of its device")
    func chunkPastDevice() throws {
        var bytes = try ImageFixtures.bytes(ImageFixtures.bootstrap)
        let clean = try ErofsImage(path: ImageFixtures.bootstrap)
        let inode = try clean.lookup("/lib.rs")
        let indexOffset = Int((inode.trailerOffset + 7) / 8 * 8)
        Self.put32(&bytes, indexOffset + 4, 0x00FF_FFFF)
        try Self.withCopy(bytes) { path in
            let image = try ErofsImage(path: path)
            let node = try image.lookup("/lib.rs")
            do {
                _ = try image.chunkMappings(of: node)
                Issue.record("a chunk past the device was accepted")
            } catch let error as ImageFormatError {
                guard case .badChunkIndex(let nid, let chunk, _) = error else {
                    Issue.record("unexpected \(error)")
                    return
                }
                #expect(nid == node.nid)
                #expect(chunk == 0)
            }
        }
    }

    @Test("absurd file size on a chunk-based inode does not allocate")
    func absurdSize() throws {
        var bytes = try ImageFixtures.bytes(ImageFixtures.bootstrap)
        let clean = try ErofsImage(path: ImageFixtures.bootstrap)
        let inode = try clean.lookup("/lib.rs")
        #expect(inode.isExtended)
        Self.put64(&bytes, Int(inode.offset) + 8, UInt64.max / 2)
        try Self.withCopy(bytes) { path in
            let image = try ErofsImage(path: path)
            #expect(throws: ImageFormatError.self) { _ = try image.readFile("/lib.rs") }
            #expect(throws: ImageFormatError.self) { _ = try image.chunkMappings(of: try image.lookup("/lib.rs")) }
        }
    }

    @Test("blob whose chunk info points past the blob's end")
    func chunkInfoPastEnd() throws {
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        var entry = image.blobs[0]
        var blob = try ImageFixtures.bytes(ImageFixtures.blob)
        // v1 entry 0: comp_info at ci_offset + 8; offset in its low 40 bits.
        Self.put32(&blob, Int(entry.metaOffset) + 8, 0x7FFF_0000)
        entry.tocDigest = [UInt8](repeating: 0, count: 32)
        try Self.withCopy(blob, name: entry.blobID) { path in
            #expect(throws: ImageFormatError.self) { _ = try RafsBlob(path: path, entry: entry) }
            do {
                _ = try RafsBlob(path: path, entry: entry)
            } catch let error as ImageFormatError {
                guard case .badChunkInfo(_, let chunk, _) = error else {
                    Issue.record("unexpected \(error)")
                    return
                }
                #expect(chunk == 0)
            }
        }
    }

    @Test("truncated blob and corrupted chunk data")
    func truncatedBlob() throws {
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        let full = try ImageFixtures.bytes(ImageFixtures.blob)
        try Self.withCopy(Array(full.prefix(9000)), name: "cut") { path in
            #expect(throws: ImageFormatError.self) { _ = try RafsBlob(path: path, entry: image.blobs[0]) }
        }
        // Flip a byte inside chunk 0's compressed data: zstd or the digest must catch it.
        let clean = try RafsBlob(image: image, index: 0, directory: ImageFixtures.directory)
        var corrupt = full
        corrupt[Int(clean.chunks[0].compressedOffset) + 100] ^= 0x55
        try Self.withCopy(corrupt, name: "flip") { path in
            let blob = try RafsBlob(path: path, entry: image.blobs[0], chunkTable: try image.rafsChunkTable())
            do {
                _ = try blob.readChunk(blob.chunks[0])
                Issue.record("a corrupted chunk was accepted")
            } catch let error as ImageFormatError {
                switch error {
                case .decompressionFailed, .digestMismatch: break
                default: Issue.record("unexpected \(error)")
                }
            }
        }
    }

    @Test("zstd and lz4 output is capped at the declared size")
    func decompressionBombs() throws {
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        let blob = try RafsBlob(image: image, index: 0, directory: ImageFixtures.directory)
        let chunk = blob.chunks[0]
        let stored = try ImageFile(path: blob.path).read(at: chunk.compressedOffset, count: Int(chunk.compressedSize), what: "test")
        // The real zstd frame declared smaller than it expands.
        #expect(throws: ImageFormatError.self) {
            _ = try ChunkDecompressor.decompress(stored, algorithm: .zstd, expectedSize: 100, context: "bomb")
        }
        #expect(throws: ImageFormatError.self) {
            _ = try ChunkDecompressor.decompress([1, 2, 3, 4, 5], algorithm: .zstd, expectedSize: 100, context: "garbage")
        }
        // An lz4 block: literal "a", a 25519-byte match at distance 1, then five literal "b".
        var block: [UInt8] = [0x1F, UInt8(ascii: "a"), 0x01, 0x00]
        block += [UInt8](repeating: 255, count: 100) + [0x00]
        block += [0x50] + [UInt8](repeating: UInt8(ascii: "b"), count: 5)
        let expanded = try ChunkDecompressor.decompress(block, algorithm: .lz4Block, expectedSize: 25525, context: "lz4")
        #expect(expanded.count == 25525)
        #expect(expanded.prefix(25520).allSatisfy { $0 == UInt8(ascii: "a") })
        #expect(throws: ImageFormatError.self) {
            _ = try ChunkDecompressor.decompress(block, algorithm: .lz4Block, expectedSize: 1000, context: "lz4 bomb")
        }
        #expect(throws: ImageFormatError.self) {
            _ = try ChunkDecompressor.decompress(block, algorithm: .lz4Block, expectedSize: 1 << 40, context: "absurd")
        }
    }
}
