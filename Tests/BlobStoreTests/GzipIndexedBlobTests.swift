import Archive
import Foundation
import Glibc
import Logging
import RAFSBuilder
import Synchronization
import TestFixtures
import TestThreads
import Testing

@testable import BlobStore
@testable import RAFS

/// A gzip-indexed blob through the engine: its stored form is a layer's uncompressed tar, and its chunks are
/// the files' data in it, separated by tar headers.
@Suite(.ownThread) struct GzipIndexedBlobTests {
    struct Built {
        var directory: String
        var tar: String
        var rafs: RafsBlob
        var blob: BuiltBlob
    }

    /// A GNU tar of `count` files of 50,000 bytes each, gzip'd, indexed with a 64 KiB span. `pairs`: files of
    /// 20,000 bytes, each odd one a copy of the one before it (deflate encodes it as references back into that
    /// one, across any checkpoint between them), at a 16 KiB span.
    static func build(_ label: String, count: Int, pairs: Bool = false) throws -> Built {
        let directory = try ImageFixtures.scratchDirectory(label)
        let tree = directory + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/files", withIntermediateDirectories: true)
        for index in 0..<count {
            var state = UInt64(pairs ? index / 2 + 1 : index + 1) &* 0x9E37_79B9_7F4A_7C15
            var bytes = (0..<(pairs ? 20_000 : 50_000)).map { _ -> UInt8 in
                state = state &* 6_364_136_223_846_793_005 &+ 1
                return UInt8(truncatingIfNeeded: state >> 33)
            }
            // A copy differs in its first byte: a chunk of its own (not deduplicated), the rest references.
            if pairs && index % 2 == 1 { bytes[0] ^= 0xFF }
            try ImageFixtures.write(bytes, to: tree + "/files/f\(index)")
        }
        let tar = directory + "/layer.tar"
        #expect(try ImageFixtures.run("/bin/tar", ["--format=gnu", "--sort=name", "-C", tree, "-cf", tar, "."]).status == 0)
        #expect(try ImageFixtures.run("/bin/gzip", ["-k", "-n", tar]).status == 0)
        var builder = ZranIndexBuilder(span: pairs ? 16 << 10 : 64 << 10)
        builder.options.syncOutput = false
        let result = try builder.build(
            layers: [LayerInput(path: tar + ".gz", digest: "sha256:" + String(repeating: "a", count: 64))],
            workDirectory: directory + "/index")
        let image = try ErofsImage(path: result.bootstrapPath)
        let blob = try #require(result.build.blobs.first)
        let rafs = try RafsBlob(path: blob.path, entry: image.blobs[0], chunkTable: try image.rafsChunkTable())
        return Built(directory: directory, tar: tar, rafs: rafs, blob: blob)
    }

    static func backing(_ built: Built, _ name: String) throws -> String {
        let path = built.directory + "/" + name
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: built.rafs.deviceSize)
        try handle.close()
        return path
    }

    /// Each chunk's bytes in the backing file are the tar's bytes at its stored offset.
    static func expectChunks(_ built: Built, in backing: String) throws {
        let tar = try ImageFixtures.bytes(built.tar)
        let device = try ImageFixtures.bytes(backing)
        for chunk in built.rafs.chunks {
            let stored = Array(tar[Int(chunk.compressedOffset)..<Int(chunk.compressedEnd)])
            let written = Array(device[Int(chunk.uncompressedOffset)..<Int(chunk.uncompressedEnd)])
            #expect(stored == written, "chunk \(chunk.index)")
        }
    }

    /// On 53e90ff each file was a GET of its own: runs had to be contiguous in the stored blob, and the tar
    /// header before each file broke them (through the gzip index, each GET also inflated from a checkpoint).
    @Test("files separated by tar headers come in one GET; through the gzip index, the same bytes, inflated")
    func oneGetAcrossTarHeaders() async throws {
        let built = try Self.build("gzblob", count: 6)
        defer { ImageFixtures.cleanup(built.directory) }
        #expect(built.rafs.chunks.count == 6)
        var settings = FetchSettings()
        settings.readaheadBytes = 0
        let plain = FileRangeSource(path: built.tar)
        let engine = BlobEngine(settings: settings, logger: Logger(label: "test"))
        let first = try Self.backing(built, "backing-plain")
        try engine.register(id: 1, rafs: built.rafs, backingPath: first, source: plain)
        try await engine.ensure(blobID: 1, offset: 0, length: built.rafs.deviceSize)
        #expect(plain.requestCount == 1, "\(plain.requests.withLock { $0 })")
        try Self.expectChunks(built, in: first)

        // The same blob from the gzip layer through its index.
        let gzipped = FileRangeSource(path: built.tar + ".gz")
        let indexed = GzipIndexedBlobSource(layer: gzipped, indexPath: try #require(built.blob.gzipIndexPath))
        let second = try Self.backing(built, "backing-indexed")
        let other = BlobEngine(settings: settings, logger: Logger(label: "test"))
        try other.register(id: 2, rafs: built.rafs, backingPath: second, source: indexed)
        try await other.ensure(blobID: 2, offset: 0, length: built.rafs.deviceSize)
        #expect(gzipped.requestCount == 1)
        try Self.expectChunks(built, in: second)

        // A corrupted gzip range is an error, never bytes.
        let corrupt = FileRangeSource(path: built.tar + ".gz", fault: .flipByte(at: 40_000))
        let third = try Self.backing(built, "backing-corrupt")
        let failing = BlobEngine(settings: settings, logger: Logger(label: "test"))
        try failing.register(
            id: 3, rafs: built.rafs, backingPath: third, source: GzipIndexedBlobSource(layer: corrupt, indexPath: built.blob.gzipIndexPath!)
        )
        await #expect(throws: (any Error).self) { try await failing.ensure(blobID: 3, offset: 0, length: built.rafs.deviceSize) }
    }

    /// Before this, a window fetched from the registry was kept (in the file and as fetched) before anything
    /// inflated from it had been verified: a corrupted window failed its reads for good.
    @Test(
        "a window left in the registry is fetched when a read starts at its checkpoint; a corrupted one fails that read and is fetched again"
    )
    func lazyWindows() async throws {
        let built = try Self.build("gzwindows", count: 12, pairs: true)
        defer { ImageFixtures.cleanup(built.directory) }
        let indexPath = try #require(built.blob.gzipIndexPath)
        let encoded = try ImageFixtures.bytes(indexPath)
        let index = try GzipIndex(decodingTable: encoded, encodedSize: UInt64(encoded.count))
        #expect(index.checkpoints.count >= 3, "\(index.checkpoints.count) checkpoints")
        // The index as a pull leaves it: the table, and holes where the windows go.
        var sparse = encoded
        for location in index.windowLocations where location.size > 0 {
            for at in Int(location.offset)..<Int(location.offset) + location.size { sparse[at] = 0 }
        }
        let local = built.directory + "/index.sparse"
        try ImageFixtures.write(sparse, to: local)
        let windows = GarbleFirstSource(path: indexPath, garbled: 1)
        let gzipped = FileRangeSource(path: built.tar + ".gz")
        var settings = FetchSettings()
        settings.readaheadBytes = 0
        let engine = BlobEngine(settings: settings, logger: Logger(label: "test"))
        let backing = try Self.backing(built, "backing")
        try engine.register(
            id: 1, rafs: built.rafs, backingPath: backing, source: GzipIndexedBlobSource(layer: gzipped, indexPath: local, windows: windows)
        )
        // A copy whose run starts at a checkpoint inside the file it copies: it inflates from that window.
        let candidates = built.rafs.chunks.filter { chunk in
            let position = index.checkpoint(before: chunk.compressedOffset)
            let checkpoint = index.checkpoints[position]
            return position > 0 && index.windowLocations[position].size > 0
                && checkpoint.uncompressedOffset + 20_512 > chunk.compressedOffset
        }
        let last = try #require(
            candidates.first, "no copy starts inflating inside its original: \(index.checkpoints.map(\.uncompressedOffset))")
        await #expect(throws: (any Error).self, "inflated from a garbled window") {
            try await engine.ensure(blobID: 1, offset: last.uncompressedOffset, length: UInt64(last.uncompressedSize))
        }
        try await engine.ensure(blobID: 1, offset: last.uncompressedOffset, length: UInt64(last.uncompressedSize))
        #expect(windows.reads == 2, "the garbled window was fetched again")
        // Kept now: the rest of the blob fetches each other window at most once, and this one not again.
        try await engine.ensure(blobID: 1, offset: 0, length: built.rafs.deviceSize)
        let others = index.windowLocations.filter { $0.size > 0 }.count - 1
        #expect(windows.reads <= 2 + others, "\(windows.reads) window reads")
        try Self.expectChunks(built, in: backing)
    }
}

extension GzipIndexedBlobTests {
    /// Before this, a cold window was fetched first and the layer's range only after it: one more round trip.
    @Test("a cold window and the layer's range are asked for at once", .timeLimit(.minutes(1)))
    func windowAlongsideRange() async throws {
        let built = try Self.build("gzconcurrent", count: 12, pairs: true)
        defer { ImageFixtures.cleanup(built.directory) }
        let indexPath = try #require(built.blob.gzipIndexPath)
        let encoded = try ImageFixtures.bytes(indexPath)
        let index = try GzipIndex(decodingTable: encoded, encodedSize: UInt64(encoded.count))
        let chunk = try #require(built.rafs.chunks.first { index.windowLocations[index.checkpoint(before: $0.compressedOffset)].size > 0 })
        // The window's answer waits until the layer has been asked: fetched one after the other, this hangs.
        let asked = AsyncStream<Void>.makeStream()
        let layer = AnnouncingSource(inner: FileRangeSource(path: built.tar + ".gz"), announce: asked.continuation)
        let windows = AwaitingSource(path: indexPath, until: asked.stream)
        var settings = FetchSettings()
        settings.readaheadBytes = 0
        let engine = BlobEngine(settings: settings, logger: Logger(label: "test"))
        let backing = try Self.backing(built, "backing")
        try engine.register(
            id: 1, rafs: built.rafs, backingPath: backing,
            source: GzipIndexedBlobSource(layer: layer, indexPath: indexPath, windows: windows))
        try await engine.ensure(blobID: 1, offset: chunk.uncompressedOffset, length: UInt64(chunk.uncompressedSize))
        let device = try ImageFixtures.bytes(backing)
        let tar = try ImageFixtures.bytes(built.tar)
        #expect(
            Array(device[Int(chunk.uncompressedOffset)..<Int(chunk.uncompressedEnd)])
                == Array(tar[Int(chunk.compressedOffset)..<Int(chunk.compressedEnd)]))
    }
}

/// Announces each stream it starts, then serves it from `inner`.
final class AnnouncingSource: BlobRangeSource {
    let inner: FileRangeSource
    let announce: AsyncStream<Void>.Continuation

    init(inner: FileRangeSource, announce: AsyncStream<Void>.Continuation) {
        self.inner = inner
        self.announce = announce
    }

    func read(offset: UInt64, length: UInt64) async throws -> [UInt8] { try await inner.read(offset: offset, length: length) }

    func stream(offset: UInt64, length: UInt64, background: Bool, into consumer: any StoredBytesConsumer) async throws {
        announce.yield()
        let bytes = try await inner.read(offset: offset, length: length)
        try bytes.withUnsafeBytes { try consumer.receive($0) }
    }
}

/// Answers reads of a file only after something arrived on `until`.
final class AwaitingSource: BlobRangeSource, @unchecked Sendable {
    // @unchecked: the stream is iterated by one read at a time (the test makes one).
    let path: String
    let until: AsyncStream<Void>

    init(path: String, until: AsyncStream<Void>) {
        self.path = path
        self.until = until
    }

    func read(offset: UInt64, length: UInt64) async throws -> [UInt8] {
        for await _ in until { break }
        return Array(try ImageFixtures.bytes(path)[Int(offset)..<Int(offset + length)])
    }
}

/// Serves a file's ranges; the first `garbled` answers are garbage of the right length.
final class GarbleFirstSource: BlobRangeSource {
    let path: String
    let garbled: Int
    private let count = Mutex(0)
    var reads: Int { count.withLock { $0 } }

    init(path: String, garbled: Int) {
        self.path = path
        self.garbled = garbled
    }

    func read(offset: UInt64, length: UInt64) async throws -> [UInt8] {
        let number = count.withLock { count -> Int in
            count += 1
            return count
        }
        let bytes = Array(try ImageFixtures.bytes(path)[Int(offset)..<Int(offset + length)])
        return number <= garbled ? bytes.map { $0 ^ 0x5A } : bytes
    }
}
