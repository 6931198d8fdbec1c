import Foundation
import TestFixtures
import TestSupport
import TestThreads
import Testing

@testable import Digests
@testable import RAFSBuilder

#if canImport(Glibc)
import Glibc
#endif

/// A realistic tree: about 200 MB of the host's /usr packed by GNU tar into three layers (plain, gzip,
/// zstd), converted, mounted, and compared file by file with the host.
@Suite(
    "Builder: a copy of /usr", .serialized, .enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/usr/include")),
    .ownThread)
struct BuilderRealTreeTests {
    static let roots = ["usr/include", "usr/libexec", "usr/sbin"]

    static func hash(_ path: String) throws -> String {
        SHA256.hash(try Data(contentsOf: URL(fileURLWithPath: path))).hexString
    }

    @Test("/usr subtrees in three layers mount and match the host")
    func usrTree() throws {
        let scratch = try ImageFixtures.scratchDirectory("builder-usr")
        defer { ImageFixtures.cleanup(scratch) }
        var layers: [String] = []
        for (index, root) in Self.roots.enumerated() {
            let tar = scratch + "/layer\(index).tar"
            let made = try ImageFixtures.run("/bin/tar", ["--numeric-owner", "-C", "/", "-cf", tar, root])
            try #require(made.status == 0, "tar: \(made.error)")
            switch index {
            case 1:
                try #require(try ImageFixtures.run("/bin/gzip", ["-1", "-n", tar]).status == 0)
                layers.append(tar + ".gz")
            case 2:
                try #require(try ImageFixtures.run("/usr/bin/zstd", ["-q", "--rm", tar]).status == 0)
                layers.append(tar + ".zst")
            default:
                layers.append(tar)
            }
        }
        var options = BuildOptions()
        options.syncOutput = false
        let started = Date()
        let result = try ImageBuilder(options: options).build(
            layers: layers.map({ LayerInput(path: $0) }), outputDirectory: scratch + "/out")
        let built = Date().timeIntervalSince(started)
        #expect(result.blobs.count == 3)
        #expect(result.fileBytes > 100 << 20)
        let devices = try BuilderFixtures.materialize(result: result, into: scratch)
        try BuilderFixtures.withMount(bootstrap: result.bootstrapPath, devices: devices, at: scratch + "/mnt") {
            var compared = 0
            for root in Self.roots {
                let host = "/" + root
                let mounted = scratch + "/mnt/" + root
                let hostPaths = BuilderFixtures.listing(host)
                let mountedPaths = BuilderFixtures.listing(mounted)
                #expect(hostPaths == mountedPaths, "\(root): \(hostPaths.symmetricDifference(mountedPaths).sorted().prefix(5))")
                for path in hostPaths.sorted() {
                    var a = stat()
                    var b = stat()
                    guard lstat(host + "/" + path, &a) == 0, lstat(mounted + "/" + path, &b) == 0 else {
                        Issue.record("\(root)/\(path): lstat failed")
                        continue
                    }
                    #expect(a.st_mode == b.st_mode && a.st_uid == b.st_uid && a.st_gid == b.st_gid, "\(root)/\(path)")
                    #expect(a.st_mtim.tv_sec == b.st_mtim.tv_sec, "\(root)/\(path) mtime")
                    switch a.st_mode & S_IFMT {
                    case S_IFREG:
                        #expect(a.st_size == b.st_size, "\(root)/\(path) size")
                        #expect(try Self.hash(host + "/" + path) == Self.hash(mounted + "/" + path), "\(root)/\(path) content")
                    case S_IFLNK:
                        let target = try FileManager.default.destinationOfSymbolicLink(atPath: host + "/" + path)
                        #expect(
                            try FileManager.default.destinationOfSymbolicLink(atPath: mounted + "/" + path) == target, "\(root)/\(path)")
                    case S_IFCHR, S_IFBLK:
                        #expect(a.st_rdev == b.st_rdev, "\(root)/\(path) rdev")
                    default:
                        break
                    }
                    compared += 1
                }
            }
            #expect(compared > 1000)
        }
        print("usr tree: \(result.fileBytes >> 20) MiB of files, \(result.inodeCount) entries, built in \(Int(built * 1000)) ms (debug)")
    }
}
