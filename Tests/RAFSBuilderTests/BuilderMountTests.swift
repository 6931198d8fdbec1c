import Foundation
import TestFixtures
import TestSupport
import TestThreads
import Testing

@testable import Digests
@testable import RAFS
@testable import RAFSBuilder

#if canImport(Glibc)
import Glibc
#endif

/// Images built from test layers, mounted by the kernel (file-backed EROFS with one `device=` per blob) and
/// compared entry by entry with an independently computed merged view.
@Suite(
    "Builder: built images mount and match the merged layers",
    .serialized,
    .enabled(if: getuid() == 0, "needs root to mount EROFS"), .ownThread
)
struct BuilderMountTests {
    static func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &* 6_364_136_223_846_793_005 &+ 1
        var out = [UInt8](repeating: 0, count: count)
        for index in 0..<count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            // Compressible but not trivial: runs of a few values.
            out[index] = UInt8(truncatingIfNeeded: (state >> 59) &+ UInt64(index / 512))
        }
        return out
    }

    /// Three layers with every entry type, xattrs, hard links, device nodes, whiteouts and an opaque directory.
    static func layers(chunkSize: Int) -> [[LayerEntrySpec]] {
        let tool = pattern(chunkSize * 5 / 2, seed: 1)
        var hosts = LayerEntrySpec.file("etc/hosts", Array("127.0.0.1 localhost\n".utf8))
        hosts.xattrs = ["user.color": Array("blue".utf8), "security.capability": [1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0x80]]
        var overlayDir = LayerEntrySpec.dir("data")
        overlayDir.xattrs = ["trusted.overlay.opaque": Array("y".utf8)]
        var null = LayerEntrySpec(path: "dev/null", kind: .characterDevice, mode: 0o666, major: 1, minor: 3)
        null.uid = 0
        let sda = LayerEntrySpec(path: "dev/sda", kind: .blockDevice, mode: 0o660, gid: 6, major: 8, minor: 300)
        let fifo = LayerEntrySpec(path: "run/fifo", kind: .fifo, mode: 0o640)
        let layer0: [LayerEntrySpec] = [
            .dir("etc"), .dir("usr"), .dir("usr/bin"), overlayDir, .dir("opq"), .dir("opq/sub"), .dir("dev"), .dir("run"),
            .dir("gonedir"), hosts,
            .file("usr/bin/tool", tool, mode: 0o4755),
            .hardlink("usr/bin/tool2", "usr/bin/tool"),
            .symlink("link", "usr/bin/tool"),
            .symlink("abs", "/etc/hosts"),
            .file("data/zeros", [UInt8](repeating: 0, count: chunkSize * 3 + 17)),
            .file("data/big", tool),
            .file("opq/a", Array("a".utf8)), .file("opq/sub/b", Array("b".utf8)),
            .file("gone", Array("bye".utf8)), .file("gonedir/x", Array("x".utf8)),
            null, sda, fifo,
        ]
        let longName = "deep/" + String(repeating: "n", count: 200)
        let layer1: [LayerEntrySpec] = [
            .whiteout(".wh.gone"), .whiteout(".wh.gonedir"), .dir("opq"), .whiteout("opq/.wh..wh..opq"),
            .file("opq/new", Array("new".utf8)),
            .file("etc/hosts", Array("10.0.0.1 other\n".utf8), mode: 0o600, uid: 1000, gid: 1000, mtime: 1_600_000_000),
            .file("usr/bin/copy", tool),
            .dir("deep"), .file(longName, Array("long".utf8)),
            .file("bigid", Array("id".utf8), uid: 70000, gid: 80000),
            .file("empty", []),
        ]
        var layer2: [LayerEntrySpec] = [.dir("many", mode: 0o750)]
        for index in 0..<300 { layer2.append(.file("many/entry-\(index)-" + String(repeating: "x", count: 20), Array("\(index)".utf8))) }
        layer2.append(.symlink("longlink", String(repeating: "t/", count: 2040)))
        layer2.append(.file("exact", pattern(chunkSize, seed: 7)))
        layer2.append(.file("usr/bin/again", tool))
        return [layer0, layer1, layer2]
    }

    /// Compares the mounted tree with the expected merged view.
    static func compare(mountPoint: String, expected: ExpectedTree) throws {
        let seen = BuilderFixtures.listing(mountPoint)
        let xattrs = try BuilderFixtures.xattrs(under: mountPoint)
        #expect(
            seen == Set(expected.nodes.keys),
            "paths differ: extra \(seen.subtracting(expected.nodes.keys).sorted().prefix(5)), missing \(Set(expected.nodes.keys).subtracting(seen).sorted().prefix(5))"
        )
        for (path, node) in expected.nodes {
            let spec = node.spec
            let full = mountPoint + "/" + path
            var st = stat()
            try #require(lstat(full, &st) == 0, "\(path)")
            #expect(UInt32(st.st_mode) & 0o7777 == spec.mode & 0o7777, "\(path) mode")
            #expect(st.st_uid == spec.uid && st.st_gid == spec.gid, "\(path) owner")
            #expect(Int64(st.st_mtim.tv_sec) == spec.mtime, "\(path) mtime")
            switch spec.kind {
            case .file, .hardlink:
                #expect(UInt32(st.st_mode) & S_IFMT == S_IFREG, "\(path) type")
                #expect(try ImageFixtures.bytes(full) == spec.data, "\(path) content")
            case .directory:
                #expect(UInt32(st.st_mode) & S_IFMT == S_IFDIR, "\(path) type")
            case .symlink:
                var buffer = [CChar](repeating: 0, count: 8192)
                let length = readlink(full, &buffer, buffer.count)
                let target = String(decoding: buffer[0..<max(0, length)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                #expect(target.count == spec.link.count && target == spec.link, "\(path) target (\(target.count) bytes)")
            case .characterDevice, .blockDevice:
                #expect(UInt32(st.st_mode) & S_IFMT == (spec.kind == .characterDevice ? S_IFCHR : S_IFBLK), "\(path) type")
                let rdev = UInt64(st.st_rdev)
                let major = UInt32((rdev >> 8) & 0xFFF) | UInt32((rdev >> 32) & ~0xFFF)
                let minor = UInt32(rdev & 0xFF) | UInt32((rdev >> 12) & ~0xFF)
                #expect(major == spec.major && minor == spec.minor, "\(path) rdev")
            case .fifo:
                #expect(UInt32(st.st_mode) & S_IFMT == S_IFIFO, "\(path) type")
            }
            #expect((xattrs[path] ?? [:]) == spec.xattrs, "\(path) xattrs")
        }
    }

    @Test("every entry type, three layers, whiteouts", arguments: ChunkCompression.allCases, [1 << 20, 64 << 10])
    func buildMountCompare(compression: ChunkCompression, chunkSize: Int) throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-mount")
        defer { ImageFixtures.cleanup(scratch) }
        let specs = Self.layers(chunkSize: chunkSize)
        let layers = try BuilderFixtures.writeLayers(specs, in: scratch, compressions: ["none", "gzip", "zstd"])
        var options = BuildOptions(chunkSize: UInt32(chunkSize), compression: compression)
        options.syncOutput = false
        let result = try ImageBuilder(options: options).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/out")
        // Layer 2 stores only new chunks; all three layers have some.
        #expect(result.blobs.count == 3)
        #expect(result.dedupedChunks >= 3)
        for blob in result.blobs {
            #expect(SHA256.hash(try ImageFixtures.bytes(blob.path)).hexString == blob.blobID)
        }
        let devices = try BuilderFixtures.materialize(result: result, into: scratch)
        try BuilderFixtures.withMount(bootstrap: result.bootstrapPath, devices: devices, at: scratch + "/mnt") {
            try Self.compare(mountPoint: scratch + "/mnt", expected: ExpectedTree(layers: specs))
            var tool = stat()
            var tool2 = stat()
            #expect(lstat(scratch + "/mnt/usr/bin/tool", &tool) == 0 && lstat(scratch + "/mnt/usr/bin/tool2", &tool2) == 0)
            #expect(tool.st_ino == tool2.st_ino && tool.st_nlink == 2, "hard links share an inode")
        }

        // Our reader sees the same image.
        let image = try ErofsImage(path: result.bootstrapPath)
        #expect(image.blobs.map(\.blobID) == result.blobs.map(\.blobID))
        #expect(image.devices.map(\.tagString) == result.blobs.map(\.blobID))
    }

    @Test("a bootstrap naming one blob twice, or a device other than its blob, is refused when opened")
    func blobTableNamesEachBlobOnce() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-blob-table")
        defer { ImageFixtures.cleanup(scratch) }
        let specs = Self.layers(chunkSize: 64 << 10)
        let layers = try BuilderFixtures.writeLayers(specs, in: scratch, compressions: ["none", "none", "none"])
        var options = BuildOptions(chunkSize: 64 << 10, compression: .none)
        options.syncOutput = false
        let result = try ImageBuilder(options: options).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/out")
        try #require(result.blobs.count == 3)
        let boot = try ImageFixtures.bytes(result.bootstrapPath)
        let firstID = Array(result.blobs[0].blobID.utf8)
        func refusal(_ edit: (inout [UInt8]) -> Void) throws -> String {
            var crafted = boot
            edit(&crafted)
            let path = scratch + "/crafted.boot"
            try Data(crafted).write(to: URL(fileURLWithPath: path))
            do {
                _ = try ErofsImage(path: path)
                return "opened"
            } catch {
                return "\(error)"
            }
        }
        // Blob 1 and its device renamed to blob 0: both tables agree, and name one blob twice.
        let twice = try refusal { bytes in
            let entry = CraftedImages.blobTableEntryOffset(bytes, index: 1)
            bytes.replaceSubrange(entry..<entry + 64, with: firstID)
            let slot = CraftedImages.deviceSlotOffset(bytes, index: 1)
            bytes.replaceSubrange(slot..<slot + 64, with: firstID)
        }
        #expect(twice.contains("blobs 0 and 1 are both"), "\(twice)")
        // Only device 2 renamed: the kernel would open blob 0's data as device 2.
        let retagged = try refusal { bytes in
            let slot = CraftedImages.deviceSlotOffset(bytes, index: 1)
            bytes.replaceSubrange(slot..<slot + 64, with: firstID)
        }
        #expect(retagged.contains("device 2 is tagged"), "\(retagged)")
        #expect(try refusal { _ in } == "opened")
    }
}
