import Foundation
import TestFixtures
import TestSupport
import Testing

@testable import OCI
@testable import RAFS
@testable import RAFSBuilder

#if canImport(Glibc)
import Glibc
#endif

/// Layouts and layers as the ecosystem's own tools write them, converted and compared file by file with what
/// those tools unpack.
@Suite("Images real tools wrote", .serialized)
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
        let converted = try OCILayout(path: scratch + "/nydus")
        let boot = try #require(result.manifest.layers.last)
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
}
