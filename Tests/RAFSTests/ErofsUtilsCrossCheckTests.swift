import Foundation
import TestFixtures
import TestThreads
import Testing

@testable import RAFS

/// Debian's erofs-utils (`dump.erofs`, `fsck.erofs`) as a second opinion on what the reader decodes.
@Suite(
    "Cross-check with erofs-utils",
    .enabled(
        if: ImageFixtures.tool("dump.erofs") != nil && ImageFixtures.tool("fsck.erofs") != nil,
        "needs dump.erofs and fsck.erofs (apt-get install erofs-utils)"), .ownThread
)
struct ErofsUtilsCrossCheckTests {
    /// Whitespace-separated "Key: value" pairs on one line, e.g. `NID: 128   Links: 2   Layout: 2`.
    static func pairs(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            for (index, word) in words.enumerated() where word.hasSuffix(":") && index + 1 < words.count {
                result[String(word.dropLast())] = String(words[index + 1])
            }
        }
        return result
    }

    static func dump(_ image: String, device: String, _ arguments: [String]) throws -> String {
        let tool = try #require(ImageFixtures.tool("dump.erofs"))
        let result = try ImageFixtures.run(tool, arguments + ["--device=\(device)", image])
        #expect(result.status == 0, "dump.erofs \(arguments): \(result.error)")
        return result.output
    }

    /// (bootstrap, a device path dump.erofs can open). dump.erofs reads only metadata, so the layer
    /// bootstrap, whose blob is not here, gets /dev/null.
    static func images() throws -> [(String, String, () -> Void)] {
        let scratch = try ImageFixtures.scratchDirectory("erofs-utils")
        let layer = try ImageFixtures.extractLayerBootstrap(into: scratch)
        return [(ImageFixtures.bootstrap, ImageFixtures.blob, {}), (layer, "/dev/null", { ImageFixtures.cleanup(scratch) })]
    }

    @Test("dump.erofs -s superblock fields match")
    func superBlock() throws {
        for (path, device, cleanup) in try Self.images() {
            defer { cleanup() }
            let image = try ErofsImage(path: path)
            let fields = ImageFixtures.dumpFields(try Self.dump(path, device: device, ["-s"]))
            let sb = image.superBlock
            #expect(fields["Filesystem magic number"] == "0xE0F5E1E2")
            #expect(fields["Filesystem inode metadata start block"] == String(sb.metaBlockAddress))
            #expect(fields["Filesystem shared xattr metadata start block"] == String(sb.xattrBlockAddress))
            #expect(fields["Filesystem root nid"] == String(sb.rootNid))
            #expect(fields["Filesystem inode count"] == String(sb.inodeCount))
            // dump.erofs adds the extra devices' blocks to the superblock's own count.
            let total = UInt64(sb.blocks) + image.devices.reduce(0) { $0 + UInt64($1.blocks) }
            #expect(fields["Filesystem blocks"] == String(total))
            #expect(fields["Filesystem features"]?.split(separator: " ").sorted() == ["chunked_file", "device_table"])
        }
    }

    @Test("dump.erofs --ls and --path agree with the listing")
    func listing() throws {
        for (path, device, cleanup) in try Self.images() {
            defer { cleanup() }
            let image = try ErofsImage(path: path)
            let entries = try image.entries()
            // Directories: the same names, nids and types (capped to keep the run short).
            for entry in entries.filter({ $0.type == .directory }).prefix(40) {
                let output = try Self.dump(path, device: device, ["--ls", "--path=\(entry.path)"])
                var theirs: [String] = []
                var inTable = false
                for line in output.split(separator: "\n") {
                    let words = line.split(separator: " ", omittingEmptySubsequences: true)
                    if words == ["NID", "TYPE", "FILENAME"] {
                        inTable = true
                        continue
                    }
                    if inTable, words.count >= 3 { theirs.append(words[0] + " " + words[1] + " " + words[2...].joined(separator: " ")) }
                }
                let ours = try image.directoryEntries(of: try image.inode(nid: entry.nid)).map { dirent in
                    "\(dirent.nid) \(Self.direntTypeNumber(dirent.fileType)) \(dirent.name)"
                }
                #expect(theirs == ours, "\(entry.path)")
            }
            // Inodes: size, nid, links, uid, gid and permissions.
            for entry in entries.prefix(60) {
                let pairs = Self.pairs(try Self.dump(path, device: device, ["--path=\(entry.path)"]))
                #expect(pairs["NID"] == String(entry.nid), "\(entry.path)")
                #expect(pairs["Size"] == String(entry.size), "\(entry.path)")
                #expect(pairs["Links"] == String(entry.nlink), "\(entry.path)")
                #expect(pairs["Uid"] == String(entry.uid), "\(entry.path)")
                #expect(pairs["Gid"] == String(entry.gid), "\(entry.path)")
                #expect(pairs["Layout"] == String(entry.dataLayout), "\(entry.path)")
                let access = pairs["Access"].map { String($0.prefix(4)) }
                #expect(access.flatMap { UInt16($0, radix: 8) } == entry.permissions, "\(entry.path)")
            }
        }
    }

    static func direntTypeNumber(_ type: ErofsFileType) -> Int {
        switch type {
        case .regular: return 1
        case .directory: return 2
        case .characterDevice: return 3
        case .blockDevice: return 4
        case .fifo: return 5
        case .socket: return 6
        case .symlink: return 7
        case .unknown: return 0
        }
    }

    @Test("fsck.erofs --extract over the materialized blob yields the reader's bytes")
    func fsckExtract() throws {
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        let blob = try RafsBlob(image: image, index: 0, directory: ImageFixtures.directory)
        let scratch = try ImageFixtures.scratchDirectory("fsck")
        defer { ImageFixtures.cleanup(scratch) }
        let device = scratch + "/blob"
        try blob.materialize(to: device)
        let fsck = try #require(ImageFixtures.tool("fsck.erofs"))
        let result = try ImageFixtures.run(fsck, ["--device=\(device)", "--extract=\(scratch)/out", ImageFixtures.bootstrap])
        #expect(result.status == 0, "fsck.erofs: \(result.output) \(result.error)")
        for entry in try image.entries() where entry.type == .regular {
            let extracted = try ImageFixtures.bytes(scratch + "/out" + entry.path)
            #expect(extracted == (try image.readFile(entry.path, devices: [1: blob])), "\(entry.path)")
        }
    }
}
