import Foundation
import Synchronization
import TestFixtures
import TestSupport
import TestThreads
import Testing

@testable import Archive
@testable import RAFS
@testable import RAFSBuilder

#if canImport(Glibc)
import Glibc
#endif

/// Determinism, deduplication, hostile input and erofs-utils' opinion of built images.
@Suite("Builder: determinism, dedup, hostile layers, erofs-utils", .serialized, .ownThread)
struct BuilderPropertyTests {
    static func options(_ compression: ChunkCompression = .zstd, chunkSize: UInt32 = 1 << 20) -> BuildOptions {
        var options = BuildOptions(chunkSize: chunkSize, compression: compression)
        options.syncOutput = false
        return options
    }

    @Test("two builds of the same layers give identical bytes")
    func deterministic() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-determinism")
        defer { ImageFixtures.cleanup(scratch) }
        let layers = try BuilderFixtures.writeLayers(
            BuilderMountTests.layers(chunkSize: 1 << 16), in: scratch, compressions: ["gzip", "none", "zstd"])
        let inputs = layers.map({ LayerInput(path: $0) })
        let first = try ImageBuilder(options: Self.options(chunkSize: 1 << 16)).build(layers: inputs, outputDirectory: scratch + "/one")
        let second = try ImageBuilder(options: Self.options(chunkSize: 1 << 16)).build(layers: inputs, outputDirectory: scratch + "/two")
        #expect(try ImageFixtures.bytes(first.bootstrapPath) == ImageFixtures.bytes(second.bootstrapPath))
        #expect(first.blobs.map(\.blobID) == second.blobs.map(\.blobID))
        for (a, b) in zip(first.blobs, second.blobs) {
            #expect(try ImageFixtures.bytes(a.path) == ImageFixtures.bytes(b.path))
        }
    }

    @Test("chunks are stored once within and across layers; a layer with nothing new gets no blob")
    func dedup() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-dedup")
        defer { ImageFixtures.cleanup(scratch) }
        let chunk = 64 << 10
        let data = BuilderMountTests.pattern(chunk * 3, seed: 9)
        let zeros = [UInt8](repeating: 0, count: chunk * 4)
        let specs: [[LayerEntrySpec]] = [
            [.file("a", data), .file("zeros", zeros)],
            [.file("b", data), .file("part", Array(data[chunk..<(2 * chunk)]))],
            [.file("c", Array(data[0..<chunk]) + Array(data[0..<chunk]))],
        ]
        let layers = try BuilderFixtures.writeLayers(specs, in: scratch)
        let result = try ImageBuilder(options: Self.options(chunkSize: UInt32(chunk))).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/out")
        // Layer 0: 3 data chunks + 1 zero chunk (the other 3 zero chunks dedup); layers 1 and 2 add nothing.
        #expect(result.blobs.count == 1)
        #expect(result.blobs.first?.chunkCount == 4)
        #expect(result.dedupedChunks == 3 + 3 + 1 + 2)
        let devices = try BuilderFixtures.materialize(result: result, into: scratch)
        #expect(devices.count == 1)
        if getuid() == 0 {
            try BuilderFixtures.withMount(bootstrap: result.bootstrapPath, devices: devices, at: scratch + "/mnt") { () throws in
                #expect(try ImageFixtures.bytes(scratch + "/mnt/b") == data)
                #expect(try ImageFixtures.bytes(scratch + "/mnt/zeros") == zeros)
                #expect(try ImageFixtures.bytes(scratch + "/mnt/c") == Array(data[0..<chunk]) + Array(data[0..<chunk]))
            }
        }
    }

    @Test("layers without file data give a bootstrap with no blob that still mounts; progress reaches done")
    func noData() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-nodata")
        defer { ImageFixtures.cleanup(scratch) }
        let specs: [[LayerEntrySpec]] = [
            [.dir("etc"), .file("etc/empty", []), .symlink("etc/link", "empty")], [.whiteout("etc/.wh.link")],
        ]
        let layers = try BuilderFixtures.writeLayers(specs, in: scratch)
        let phases = PhaseLog()
        let result = try ImageBuilder(options: Self.options()).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/out", progress: { phases.add($0.phase) })
        #expect(result.blobs.isEmpty)
        #expect(phases.all.last == .done && phases.all.contains(.layer) && phases.all.contains(.bootstrap))
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch + "/out") == [ImageBuilder.bootstrapName])
        if getuid() == 0 {
            try BuilderFixtures.withMount(bootstrap: result.bootstrapPath, devices: [], at: scratch + "/mnt") {
                try BuilderMountTests.compare(mountPoint: scratch + "/mnt", expected: ExpectedTree(layers: specs))
            }
        }
    }

    @Test("a zstd layer cut short is refused as truncated", .enabled(if: ImageFixtures.tool("zstd") != nil))
    func truncatedZstd() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-zstd-cut")
        defer { ImageFixtures.cleanup(scratch) }
        let layers = try BuilderFixtures.writeLayers(
            [[.file("f", BuilderMountTests.pattern(200_000, seed: 3))]], in: scratch, compressions: ["zstd"])
        let whole = try ImageFixtures.bytes(layers[0])
        try ImageFixtures.write(Array(whole[0..<(whole.count / 2)]), to: layers[0])
        #expect {
            _ = try ImageBuilder(options: Self.options()).build(layers: [LayerInput(path: layers[0])], outputDirectory: scratch + "/out")
        } throws: { error in
            guard case .layer(_, _, .truncated) = error as? BuildError else { return false }
            return true
        }
    }

    /// Hostile layers: each must be refused with the expected error and leave nothing in the output.
    static func hostile() -> [(String, [UInt8], (BuildError) -> Bool)] {
        func tar(_ entries: [LayerEntrySpec]) -> [UInt8] { TestTar.archive(entries) }
        let valid = tar([.file("f", [UInt8](repeating: 7, count: 5000))])
        let deep = (0..<600).map { _ in "d" }.joined(separator: "/")
        func isLayer(_ error: BuildError) -> Bool { if case .layer = error { return true } else { return false } }
        return [
            ("dot-dot path", tar([.file("../escape", [1])]), isLayer),
            ("hard link with ..", tar([.file("f", [1]), .hardlink("h", "../../etc/passwd")]), isLayer),
            ("truncated data", Array(valid[0..<(512 + 1000)]), isLayer),
            ("truncated header", Array(valid[0..<300]), isLayer),
            (
                "file under a symlink", tar([.symlink("a", "/etc"), .file("a/passwd", [1])]),
                { if case .unsafeEntry = $0 { return true } else { return false } }
            ),
            (
                "hard link through a symlink", tar([.symlink("s", "/etc"), .hardlink("h", "s/passwd")]),
                { if case .badHardLink = $0 { return true } else { return false } }
            ),
            ("hard link to nothing", tar([.hardlink("h", "missing")]), { if case .badHardLink = $0 { return true } else { return false } }),
            (
                "hard link to a directory", tar([.dir("d"), .hardlink("h", "d")]),
                { if case .badHardLink = $0 { return true } else { return false } }
            ),
            ("too deep", tar([.file(deep, [1])]), { if case .tooDeep = $0 { return true } else { return false } }),
            (
                "name over 255 bytes", tar([.file(String(repeating: "n", count: 300), [1])]),
                { if case .unsafeEntry = $0 { return true } else { return false } }
            ),
            ("absurd size", tar([.file("big", [UInt8](repeating: 1, count: 3 << 20))]), isLayer),
        ]
    }

    @Test("hostile layers are refused with typed errors", arguments: 0..<11)
    func refusesHostile(_ index: Int) throws {
        let (name, bytes, matches) = Self.hostile()[index]
        let scratch = try ImageFixtures.scratchDirectory("builder-hostile")
        defer { ImageFixtures.cleanup(scratch) }
        try ImageFixtures.write(bytes, to: scratch + "/layer.tar")
        var options = Self.options()
        options.maximumFileSize = 2 << 20
        do {
            _ = try ImageBuilder(options: options).build(
                layers: [LayerInput(path: scratch + "/layer.tar")], outputDirectory: scratch + "/out")
            Issue.record("\(name): accepted")
        } catch {
            #expect(matches(error), "\(name): \(error)")
        }
        // Nothing written but the (empty) output directory.
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: scratch)) == ["layer.tar", "out"], "\(name)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch + "/out").isEmpty, "\(name)")
    }

    @Test("fsck.erofs and dump.erofs read the bootstrap", .enabled(if: ImageFixtures.tool("fsck.erofs") != nil))
    func erofsUtils() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-erofs-utils")
        defer { ImageFixtures.cleanup(scratch) }
        let layers = try BuilderFixtures.writeLayers(BuilderMountTests.layers(chunkSize: 1 << 20), in: scratch)
        let result = try ImageBuilder(options: Self.options()).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/out")
        let devices = try BuilderFixtures.materialize(result: result, into: scratch)
        let image = try ErofsImage(path: result.bootstrapPath)
        let dump = try #require(ImageFixtures.tool("dump.erofs"))
        // erofs-utils needs one --device per device-table slot ("failed to read superblock" otherwise).
        let deviceArguments = devices.map { "--device=\($0)" }
        let superBlock = try ImageFixtures.run(dump, ["-s"] + deviceArguments + [result.bootstrapPath])
        #expect(superBlock.status == 0, "\(superBlock.error)")
        let fields = ImageFixtures.dumpFields(superBlock.output)
        #expect(fields["Filesystem magic number"] == "0xE0F5E1E2")
        #expect(fields["Filesystem root nid"] == String(image.superBlock.rootNid))
        #expect(fields["Filesystem inode count"] == String(image.superBlock.inodeCount))
        #expect(fields["Filesystem features"]?.split(separator: " ").sorted() == ["chunked_file", "device_table"])
        let listing = try ImageFixtures.run(dump, ["--ls", "--path=/many"] + deviceArguments + [result.bootstrapPath])
        #expect(listing.status == 0, "\(listing.error)")
        #expect(listing.output.contains("entry-299-"))
        let fsck = try #require(ImageFixtures.tool("fsck.erofs"))
        let checked = try ImageFixtures.run(fsck, deviceArguments + [result.bootstrapPath])
        #expect(checked.status == 0, "fsck.erofs: \(checked.output) \(checked.error)")
    }
}

extension BuilderPropertyTests {
    @Test("the prefetch table lists the given paths by nid; the reader expands directories; erofs-utils still agree")
    func prefetchTable() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-prefetch")
        defer { ImageFixtures.cleanup(scratch) }
        let layers = try BuilderFixtures.writeLayers(BuilderMountTests.layers(chunkSize: 1 << 20), in: scratch)
        var options = Self.options()
        options.prefetchPaths = ["/usr/bin/tool", "/data", "/usr/bin/tool"]
        let result = try ImageBuilder(options: options).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/out")
        let image = try ErofsImage(path: result.bootstrapPath)
        #expect(image.rafs?.prefetchTableSize == 8, "two distinct paths, one u32 nid each")
        let table = try image.prefetchTable()
        #expect(table.map(\.nid) == [try image.lookup("/usr/bin/tool").nid, try image.lookup("/data").nid])
        let expected = try image.entries().filter { $0.path == "/usr/bin/tool" || ($0.path.hasPrefix("/data/") && $0.type == .regular) }
        #expect(Set(try image.prefetchFiles().map(\.nid)) == Set(try expected.map { try image.lookup($0.path).nid }))
        #expect(try image.prefetchFiles().count == expected.count)

        if let fsck = ImageFixtures.tool("fsck.erofs") {
            let devices = try BuilderFixtures.materialize(result: result, into: scratch)
            let checked = try ImageFixtures.run(fsck, devices.map { "--device=\($0)" } + [result.bootstrapPath])
            #expect(checked.status == 0, "fsck.erofs: \(checked.output) \(checked.error)")
        }

        // Without a table there is nothing to prefetch; a path the image lacks is refused with its name.
        let plain = try ImageBuilder(options: Self.options()).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/plain")
        #expect(try ErofsImage(path: plain.bootstrapPath).prefetchFiles().isEmpty)
        options.prefetchPaths = ["/no/such/file"]
        #expect {
            try ImageBuilder(options: options).build(layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/bad")
        } throws: { "\($0)".contains("/no/such/file") }
        options.prefetchPaths = ["relative/path"]
        #expect(throws: BuildError.self) {
            try ImageBuilder(options: options).build(layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/rel")
        }
    }

    @Test("a prefetch table entry that names no inode is a format error, not a crash")
    func hostilePrefetchTable() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-prefetch-bad")
        defer { ImageFixtures.cleanup(scratch) }
        let layers = try BuilderFixtures.writeLayers(BuilderMountTests.layers(chunkSize: 1 << 20), in: scratch)
        var options = Self.options()
        options.prefetchPaths = ["/usr/bin/tool"]
        let result = try ImageBuilder(options: options).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/out")
        let offset = Int(try #require(ErofsImage(path: result.bootstrapPath).rafs).prefetchTableOffset)
        var bytes = try ImageFixtures.bytes(result.bootstrapPath)
        for index in 0..<4 { bytes[offset + index] = 0xFF }
        try Data(bytes).write(to: URL(fileURLWithPath: result.bootstrapPath))
        let image = try ErofsImage(path: result.bootstrapPath)
        #expect {
            try image.prefetchFiles()
        } throws: { error in
            guard case .badPrefetchTable = error as? ImageFormatError else { return false }
            return true
        }
    }
}

/// Progress phases seen by a build.
final class PhaseLog: Sendable {
    private let phases = Mutex<[BuildProgress.Phase]>([])
    func add(_ phase: BuildProgress.Phase) { phases.withLock { $0.append(phase) } }
    var all: [BuildProgress.Phase] { phases.withLock { $0 } }
}
