import Foundation
import TestFixtures
import TestSupport
import TestThreads
import Testing

@testable import Digests
@testable import OCI
@testable import RAFS
@testable import RAFSBuilder

#if canImport(Glibc)
import Glibc
#endif

/// Layouts and layers as the ecosystem's own tools write them, converted and compared file by file with what
/// those tools unpack.
@Suite("Images real tools wrote", .serialized, .ownThread)
struct EcosystemLayoutTests {
    /// Runs a tool; a failure stops the test with its stderr.
    static func run(_ tool: String, _ arguments: [String]) throws {
        let path = try #require(ImageFixtures.tool(tool), "\(tool) is missing (scripts/setup.sh installs it)")
        let result = try ImageFixtures.run(path, arguments)
        try #require(result.status == 0, "\(tool) \(arguments.joined(separator: " ")): \(result.error)")
    }

    /// Converts the layout's `tag` and mounts the result (bootstrap from its layer, blobs materialized), then
    /// runs `body` on the mount point.
    static func convertAndMount(layout: String, tag: String, scratch: String, _ body: (String) throws -> Void) throws {
        var build = BuildOptions()
        build.syncOutput = false
        let converter = ImageConverter(options: .init(build: build, sourceReference: tag, targetReference: tag + "-nydus"))
        let result = try converter.convert(source: layout, destination: scratch + "/nydus")
        _ = try mountConverted(try OCILayout(path: scratch + "/nydus"), manifest: result.manifest, scratch: scratch) { try body($0) }
    }

    /// Mounts a converted image: the bootstrap from its last layer, the blobs materialized from the layout.
    /// Returns the bootstrap's path.
    static func mountConverted(
        _ converted: OCILayout, manifest: ImageManifest, scratch: String, _ body: (String) throws -> Void
    ) throws -> String {
        let boot = try #require(manifest.layers.last)
        try FileManager.default.createDirectory(atPath: scratch + "/boot", withIntermediateDirectories: true)
        let untar = try ImageFixtures.run("/bin/tar", ["-xzf", converted.blobPath(boot.digest), "-C", scratch + "/boot"])
        try #require(untar.status == 0, "\(untar.error)")
        let bootstrap = scratch + "/boot/image/image.boot"
        let image = try ErofsImage(path: bootstrap)
        var devices: [String] = []
        for index in image.blobs.indices {
            let blob = try RafsBlob(image: image, index: index, directory: converted.sha256Directory)
            devices.append(scratch + "/dev\(index)")
            try blob.materialize(to: devices[index])
        }
        try BuilderFixtures.withMount(bootstrap: bootstrap, devices: devices, at: scratch + "/mnt") { try body(scratch + "/mnt") }
        return bootstrap
    }

    static func status(_ path: String) throws -> stat {
        var result = stat()
        try #require(lstat(path, &result) == 0, "lstat \(path): errno \(errno)")
        return result
    }

    /// Every entry under `expected` and `actual`: the same paths, types, modes, owners, sizes, contents and link
    /// targets, and the same extended attributes.
    static func compareTrees(expected: String, actual: String) throws {
        let paths = BuilderFixtures.listing(expected)
        #expect(paths.count >= 5, "the unpacked reference holds only \(paths.sorted())")
        #expect(BuilderFixtures.listing(actual) == paths, "the converted image lists other paths than the unpacked one")
        for path in paths.sorted() {
            let want = try Self.status(expected + "/" + path)
            let got = try Self.status(actual + "/" + path)
            #expect(want.st_mode == got.st_mode, "\(path): mode \(String(got.st_mode, radix: 8)), want \(String(want.st_mode, radix: 8))")
            #expect(want.st_uid == got.st_uid && want.st_gid == got.st_gid, "\(path): owner")
            switch want.st_mode & S_IFMT {
            case S_IFREG:
                let same = try ImageFixtures.bytes(expected + "/" + path) == ImageFixtures.bytes(actual + "/" + path)
                #expect(same, "\(path): content differs")
            case S_IFLNK:
                let target = try FileManager.default.destinationOfSymbolicLink(atPath: expected + "/" + path)
                #expect(try FileManager.default.destinationOfSymbolicLink(atPath: actual + "/" + path) == target, "\(path): link target")
            default: break
            }
        }
        #expect(try BuilderFixtures.xattrs(under: actual) == BuilderFixtures.xattrs(under: expected), "extended attributes differ")
    }

    /// On 68766fa the converter refused it: umoci writes the root as the entry `/`, and an insert at a path as
    /// absolute names ("absolute paths are not allowed in layers").
    @Test(
        "an OCI layout umoci wrote (its root as \"/\", an insert at /opt) converts to an image with exactly the files umoci unpacks",
        .enabled(if: getuid() == 0))
    func umociLayout() throws {
        let scratch = try ImageFixtures.scratchDirectory("umoci")
        defer { ImageFixtures.cleanup(scratch) }
        let tree = scratch + "/tree"
        for directory in ["etc", "bin", "usr/lib/deep/er", "var/empty"] {
            try FileManager.default.createDirectory(atPath: tree + "/" + directory, withIntermediateDirectories: true)
        }
        try ImageFixtures.write(Array("umoci\n".utf8), to: tree + "/etc/hostname")
        try ImageFixtures.write(RegistryTestSupport.randomBytes(3 << 20, seed: 11), to: tree + "/usr/lib/deep/er/lib.so")
        try ImageFixtures.write(RegistryTestSupport.randomBytes(70_000, seed: 12), to: tree + "/bin/tool")
        chmod(tree + "/bin/tool", 0o4755)
        try FileManager.default.createSymbolicLink(atPath: tree + "/bin/sh", withDestinationPath: "tool")
        try FileManager.default.createSymbolicLink(atPath: tree + "/etc/abs", withDestinationPath: "/etc/hostname")
        try FileManager.default.linkItem(atPath: tree + "/bin/tool", toPath: tree + "/usr/lib/tool-hardlink")
        try Self.run("setfattr", ["-n", "user.origin", "-v", "umoci", tree + "/etc/hostname"])
        let extra = scratch + "/extra"
        try FileManager.default.createDirectory(atPath: extra + "/share", withIntermediateDirectories: true)
        try ImageFixtures.write(Array("inserted at /opt\n".utf8), to: extra + "/share/README")

        let layout = scratch + "/oci"
        try Self.run("umoci", ["init", "--layout", layout])
        try Self.run("umoci", ["new", "--image", layout + ":v1"])
        try Self.run("umoci", ["insert", "--image", layout + ":v1", tree, "/"])
        try Self.run("umoci", ["insert", "--image", layout + ":v1", extra, "/opt"])
        try Self.run("umoci", ["unpack", "--image", layout + ":v1", scratch + "/bundle"])

        try Self.convertAndMount(layout: layout, tag: "v1", scratch: scratch) { mount in
            try Self.compareTrees(expected: scratch + "/bundle/rootfs", actual: mount)
        }
    }

    /// An OCI layout holding `layers` (tar files, compressed as given: "gzip" or "zstd") under tag `tag`, with
    /// the config's diff_ids computed from the uncompressed tars.
    static func writeLayout(_ path: String, tag: String, layers: [(tar: String, compression: String)]) throws {
        let layout = try OCILayout.create(at: path)
        var descriptors: [Descriptor] = []
        var diffIDs: [String] = []
        for (tar, compression) in layers {
            diffIDs.append(Digest.sha256(of: try ImageFixtures.bytes(tar)).description)
            let compressed = tar + (compression == "zstd" ? ".zst" : ".gz")
            let tool =
                compression == "zstd"
                ? ["zstd", "-q", "-f", "-o", compressed, tar] : ["sh", "-c", "gzip -n -c '\(tar)' > '\(compressed)'"]
            try Self.run(tool[0], Array(tool.dropFirst()))
            let type = compression == "zstd" ? MediaType.ociLayerZstd : MediaType.ociLayerGzip
            descriptors.append(try layout.writeBlob(try ImageFixtures.bytes(compressed), mediaType: type))
        }
        let config = """
            {"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[\(diffIDs.map { "\"\($0)\"" }.joined(separator: ","))]}}
            """
        let configDescriptor = try layout.writeBlob(Array(config.utf8), mediaType: MediaType.ociConfig)
        var manifest = try layout.writeBlob(
            try OCILayout.encode(ImageManifest(config: configDescriptor, layers: descriptors)), mediaType: MediaType.ociManifest)
        manifest.annotations = [OCILayout.refNameAnnotation: tag]
        try layout.writeIndex(ImageIndex(manifests: [manifest]))
    }

    /// A tree with what real images hold and simple archivers get wrong.
    static func makeAwkwardTree(_ tree: String) throws {
        let long =
            "long/" + String(repeating: "d", count: 100) + "/" + String(repeating: "e", count: 100) + "/"
            + String(repeating: "f", count: 90)
        for directory in ["a", "b", "dev", "run", "tmp", long] {
            try FileManager.default.createDirectory(atPath: tree + "/" + directory, withIntermediateDirectories: true)
        }
        try ImageFixtures.write(Array("deep\n".utf8), to: tree + "/" + long + "/file.txt")
        try ImageFixtures.write(Array("named long\n".utf8), to: tree + "/a/" + String(repeating: "n", count: 150))
        try ImageFixtures.write(RegistryTestSupport.randomBytes(1_500_000, seed: 21), to: tree + "/a/shared.bin")
        try FileManager.default.linkItem(atPath: tree + "/a/shared.bin", toPath: tree + "/b/same-inode.bin")
        try ImageFixtures.write(RegistryTestSupport.randomBytes(9000, seed: 22), to: tree + "/b/ping")
        chmod(tree + "/b/ping", 0o4711)
        chmod(tree + "/tmp", 0o1777)
        try Self.run("setfattr", ["-n", "user.note", "-v", "kept", tree + "/a/shared.bin"])
        // A version-2 file capability (cap_net_bind_service, effective), as setcap writes it.
        try Self.run("setfattr", ["-n", "security.capability", "-v", "0x0100000200040000000000000000000000000000", tree + "/b/ping"])
        try Self.run("mkfifo", [tree + "/run/fifo"])
        try Self.run("mknod", [tree + "/dev/null", "c", "1", "3"])
        try FileManager.default.createSymbolicLink(atPath: tree + "/b/abs", withDestinationPath: "/a/shared.bin")
        try FileManager.default.createSymbolicLink(atPath: tree + "/b/rel", withDestinationPath: "../" + long + "/file.txt")
        chown(tree + "/b/ping", 1000, 1000)
        try Self.makeSparseFile(tree + "/b/disk.img", size: 3 << 20, dataAt: [0, 1_200_000, (3 << 20) - 4096])
    }

    /// A file with holes: `size` bytes, 4 KiB of data at each offset, holes elsewhere.
    static func makeSparseFile(_ path: String, size: Int, dataAt offsets: [Int]) throws {
        FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(size))
        for (index, offset) in offsets.enumerated() {
            try handle.seek(toOffset: UInt64(offset))
            handle.write(Data(RegistryTestSupport.randomBytes(4096, seed: UInt64(30 + index))))
        }
        try handle.close()
    }

    @Test(
        "layers GNU tar and bsdtar write (GNU long names, PAX, sparse files, hard links across directories, xattrs, capabilities, FIFOs, devices) convert to exactly what umoci unpacks; gzip and zstd alike",
        .enabled(if: getuid() == 0))
    func realArchivers() throws {
        let scratch = try ImageFixtures.scratchDirectory("archivers")
        defer { ImageFixtures.cleanup(scratch) }
        try Self.makeAwkwardTree(scratch + "/tree")
        let second = scratch + "/second"
        try FileManager.default.createDirectory(atPath: second + "/opt/pax", withIntermediateDirectories: true)
        try ImageFixtures.write(
            Array("é and ü in a PAX name\n".utf8), to: second + "/opt/pax/" + "ünïcode-" + String(repeating: "x", count: 120))
        let third = scratch + "/third"
        try FileManager.default.createDirectory(atPath: third + "/srv", withIntermediateDirectories: true)
        try ImageFixtures.write(RegistryTestSupport.randomBytes(300_000, seed: 23), to: third + "/srv/bsd.bin")
        try Self.run("setfattr", ["-n", "user.by", "-v", "bsdtar", third + "/srv/bsd.bin"])
        try Self.makeSparseFile(second + "/opt/pax/sparse.db", size: 2 << 20, dataAt: [8192, 1 << 20])
        try Self.makeSparseFile(third + "/srv/sparse.bin", size: 1 << 20, dataAt: [4096 * 7])

        // Three archivers, three formats: GNU tar's gnu format, GNU tar's posix (PAX), bsdtar's default (PAX).
        let gnu = scratch + "/gnu.tar"
        let pax = scratch + "/pax.tar"
        let bsd = scratch + "/bsd.tar"
        // Sparse files as each writes them: old GNU `S` entries, PAX 1.0 maps, bsdtar's PAX.
        try Self.run("tar", ["--format=gnu", "--sparse", "--xattrs", "--xattrs-include=*", "-C", scratch + "/tree", "-cf", gnu, "."])
        try Self.run("tar", ["--format=posix", "--sparse", "--xattrs", "--xattrs-include=*", "-C", second, "-cf", pax, "."])
        try Self.run("bsdtar", ["--xattrs", "--read-sparse", "-C", third, "-cf", bsd, "."])

        var bootstraps: [String: [UInt8]] = [:]
        for compression in ["gzip", "zstd"] {
            let work = scratch + "/" + compression
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            let layers = try [gnu, pax, bsd].map { tar in
                let copy = work + "/" + (tar as NSString).lastPathComponent
                try FileManager.default.copyItem(atPath: tar, toPath: copy)
                return (copy, compression)
            }
            try Self.writeLayout(work + "/oci", tag: "v1", layers: layers)
            try Self.convertAndMount(layout: work + "/oci", tag: "v1", scratch: work) { mount in
                if compression == "gzip" {
                    try Self.run("umoci", ["unpack", "--image", work + "/oci:v1", work + "/bundle"])
                    try Self.compareTrees(expected: work + "/bundle/rootfs", actual: mount)
                }
                // The hard link across directories is one inode, as the archive said.
                #expect(try Self.status(mount + "/a/shared.bin").st_ino == Self.status(mount + "/b/same-inode.bin").st_ino)
            }
            bootstraps[compression] = try ImageFixtures.bytes(work + "/boot/image/image.boot")
        }
        #expect(bootstraps["gzip"] == bootstraps["zstd"], "the same tars compressed otherwise gave another image")
    }

    @Test(
        "a layer umoci repack wrote (whiteouts of deleted files and directories) converts to exactly what umoci unpacks",
        .enabled(if: getuid() == 0))
    func umociWhiteouts() throws {
        let scratch = try ImageFixtures.scratchDirectory("umoci-whiteouts")
        defer { ImageFixtures.cleanup(scratch) }
        let tree = scratch + "/tree"
        for directory in ["etc/conf.d", "usr/share/doc/pkg", "var/cache/apt"] {
            try FileManager.default.createDirectory(atPath: tree + "/" + directory, withIntermediateDirectories: true)
        }
        for (path, text) in [("etc/conf.d/a", "a"), ("etc/conf.d/b", "b"), ("usr/share/doc/pkg/README", "doc"), ("var/cache/apt/x", "x")] {
            try ImageFixtures.write(Array(text.utf8), to: tree + "/" + path)
        }
        let layout = scratch + "/oci"
        try Self.run("umoci", ["init", "--layout", layout])
        try Self.run("umoci", ["new", "--image", layout + ":v1"])
        try Self.run("umoci", ["insert", "--image", layout + ":v1", tree, "/"])
        // A second layer as a user's edit makes it: a file and a whole directory deleted, a directory emptied
        // and refilled, a file changed.
        try Self.run("umoci", ["unpack", "--image", layout + ":v1", scratch + "/edit"])
        let rootfs = scratch + "/edit/rootfs"
        try FileManager.default.removeItem(atPath: rootfs + "/etc/conf.d/a")
        try FileManager.default.removeItem(atPath: rootfs + "/usr/share/doc")
        try FileManager.default.removeItem(atPath: rootfs + "/var/cache/apt")
        try FileManager.default.createDirectory(atPath: rootfs + "/var/cache/apt", withIntermediateDirectories: true)
        try ImageFixtures.write(Array("new".utf8), to: rootfs + "/var/cache/apt/y")
        try ImageFixtures.write(Array("changed".utf8), to: rootfs + "/etc/conf.d/b")
        try Self.run("umoci", ["repack", "--image", layout + ":v2", scratch + "/edit"])
        try Self.run("umoci", ["unpack", "--image", layout + ":v2", scratch + "/bundle"])
        try Self.convertAndMount(layout: layout, tag: "v2", scratch: scratch) { mount in
            try Self.compareTrees(expected: scratch + "/bundle/rootfs", actual: mount)
            #expect(!FileManager.default.fileExists(atPath: mount + "/usr/share/doc"))
            #expect(!FileManager.default.fileExists(atPath: mount + "/var/cache/apt/x"))
        }
    }

    @Test(
        "an image that went through docker-archive (docker save's format, written and read by skopeo: uncompressed layers) converts to exactly what umoci unpacks",
        .enabled(if: getuid() == 0))
    func dockerArchive() throws {
        let scratch = try ImageFixtures.scratchDirectory("docker-archive")
        defer { ImageFixtures.cleanup(scratch) }
        try Self.makeAwkwardTree(scratch + "/tree")
        let upper = scratch + "/upper"
        for directory in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: upper + "/" + directory, withIntermediateDirectories: true)
        }
        try ImageFixtures.write(Array("replaced\n".utf8), to: upper + "/a/shared.bin")
        try ImageFixtures.write([], to: upper + "/b/.wh.ping")
        try Self.run(
            "tar", ["--format=gnu", "--sparse", "--xattrs", "--xattrs-include=*", "-C", scratch + "/tree", "-cf", scratch + "/l1.tar", "."])
        try Self.run("tar", ["--format=posix", "-C", upper, "-cf", scratch + "/l2.tar", "."])
        try Self.writeLayout(scratch + "/oci", tag: "v1", layers: [(scratch + "/l1.tar", "gzip"), (scratch + "/l2.tar", "gzip")])
        // Out to docker save's format and back: skopeo writes the layers uncompressed.
        try Self.run("skopeo", ["copy", "oci:\(scratch)/oci:v1", "docker-archive:\(scratch)/saved.tar:app:v1"])
        try Self.run("skopeo", ["copy", "docker-archive:\(scratch)/saved.tar", "oci:\(scratch)/back:v1"])
        try Self.run("umoci", ["unpack", "--image", scratch + "/back:v1", scratch + "/bundle"])
        try Self.convertAndMount(layout: scratch + "/back", tag: "v1", scratch: scratch) { mount in
            try Self.compareTrees(expected: scratch + "/bundle/rootfs", actual: mount)
            #expect(!FileManager.default.fileExists(atPath: mount + "/b/ping"), "the whiteout of the upper layer")
        }
        // The archive itself, read by our own importer, converts to the same tree.
        let named = try DockerArchive.importLayout(archive: scratch + "/saved.tar", into: scratch + "/imported", tag: "v1")
        #expect(named?.hasSuffix("app:v1") == true, "\(named ?? "no tag")")
        try FileManager.default.createDirectory(atPath: scratch + "/direct", withIntermediateDirectories: true)
        try Self.convertAndMount(layout: scratch + "/imported", tag: "v1", scratch: scratch + "/direct") { mount in
            try Self.compareTrees(expected: scratch + "/bundle/rootfs", actual: mount)
        }
        // Not a docker-archive: a clear error, not a crash.
        #expect(throws: BuildError.self) {
            try DockerArchive.importLayout(archive: scratch + "/l2.tar", into: scratch + "/not-an-archive", tag: "v1")
        }
    }

    /// docker 25+ saves an OCI layout and keeps the legacy names as symlinks (`<id>/layer.tar` ->
    /// `../blobs/sha256/<hex>`); `manifest.json` may name either.
    @Test("a docker-archive whose manifest names layers through symlinks (docker 25's legacy names) imports")
    func dockerArchiveSymlinks() throws {
        let scratch = try ImageFixtures.scratchDirectory("docker-archive-links")
        defer { ImageFixtures.cleanup(scratch) }
        let tree = scratch + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try ImageFixtures.write(Array("linked layer\n".utf8), to: tree + "/hello")
        try Self.run("tar", ["--format=posix", "-C", tree, "-cf", scratch + "/layer.tar", "."])
        let layer = try ImageFixtures.bytes(scratch + "/layer.tar")
        let hex = Digest.sha256(of: layer).encoded
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:\#(hex)"]}}"#.utf8)
        let configHex = Digest.sha256(of: config).encoded
        let archive = scratch + "/archive"
        try FileManager.default.createDirectory(atPath: archive + "/blobs/sha256", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: archive + "/legacy", withIntermediateDirectories: true)
        try ImageFixtures.write(layer, to: archive + "/blobs/sha256/" + hex)
        try ImageFixtures.write(config, to: archive + "/blobs/sha256/" + configHex)
        try FileManager.default.createSymbolicLink(atPath: archive + "/legacy/layer.tar", withDestinationPath: "../blobs/sha256/" + hex)
        let manifest = #"[{"Config":"blobs/sha256/\#(configHex)","RepoTags":["app:v2"],"Layers":["legacy/layer.tar"]}]"#
        try ImageFixtures.write(Array(manifest.utf8), to: archive + "/manifest.json")
        try Self.run("tar", ["-C", archive, "-cf", scratch + "/saved.tar", "."])

        let named = try DockerArchive.importLayout(archive: scratch + "/saved.tar", into: scratch + "/imported", tag: "v2")
        #expect(named == "app:v2")
        try Self.convertAndMount(layout: scratch + "/imported", tag: "v2", scratch: scratch) { mount in
            let read = try ImageFixtures.bytes(mount + "/hello")
            #expect(read == Array("linked layer\n".utf8))
        }
    }

    @Test(
        "a docker-archive of several images (docker save a b): the image is named by tag or @index; without a name, a clear error",
        .enabled(if: getuid() == 0))
    func multiImageDockerArchive() throws {
        let scratch = try ImageFixtures.scratchDirectory("docker-archive-multi")
        defer { ImageFixtures.cleanup(scratch) }
        for (name, size) in [("one", 3000), ("two", 5000)] {
            let tree = scratch + "/" + name
            try FileManager.default.createDirectory(atPath: tree + "/etc", withIntermediateDirectories: true)
            try ImageFixtures.write(Array(repeating: UInt8(size & 0xff), count: size), to: tree + "/etc/" + name)
            try Self.run("tar", ["-C", tree, "-cf", scratch + "/\(name).tar", "."])
            try Self.writeLayout(scratch + "/oci-\(name)", tag: "v1", layers: [(scratch + "/\(name).tar", "gzip")])
            try Self.run("skopeo", ["copy", "oci:\(scratch)/oci-\(name):v1", "docker-archive:\(scratch)/\(name)-saved.tar:\(name):v1"])
        }
        // docker save of two images: both archives' members in one tar, their manifest.json entries in one list.
        let merged = scratch + "/merged"
        try FileManager.default.createDirectory(atPath: merged, withIntermediateDirectories: true)
        var entries: [Any] = []
        for name in ["one", "two"] {
            try Self.run("tar", ["-C", merged, "-xf", scratch + "/\(name)-saved.tar"])
            let manifest =
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: merged + "/manifest.json"))) as? [Any]
            entries += manifest ?? []
        }
        try JSONSerialization.data(withJSONObject: entries).write(to: URL(fileURLWithPath: merged + "/manifest.json"))
        let archive = scratch + "/both.tar"
        try Self.run("tar", ["-C", merged, "-cf", archive, "."])

        #expect(throws: BuildError.self) { try DockerArchive.importLayout(archive: archive, into: scratch + "/unnamed", tag: "v1") }
        for (select, file) in [("two:v1", "two"), ("@0", "one"), ("docker.io/library/two:v1", "two")] {
            let destination = scratch + "/picked-" + file + "-" + String(select.hashValue & 0xffff)
            _ = try DockerArchive.importLayout(archive: archive, into: destination, tag: "v1", select: select)
            try FileManager.default.createDirectory(atPath: destination + "-mount", withIntermediateDirectories: true)
            try Self.convertAndMount(layout: destination, tag: "v1", scratch: destination + "-mount") { mount in
                #expect(FileManager.default.fileExists(atPath: mount + "/etc/" + file), "\(select) picked the wrong image")
            }
        }
        #expect(throws: BuildError.self) {
            try DockerArchive.importLayout(archive: archive, into: scratch + "/none", tag: "v1", select: "three:v1")
        }
        #expect(throws: BuildError.self) {
            try DockerArchive.importLayout(archive: archive, into: scratch + "/none2", tag: "v1", select: "@2")
        }
    }
}
