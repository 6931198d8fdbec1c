import Foundation
import LinuxKernel
import OCI
import SnapshotterAPI
import TestSupport
import TestThreads
import Testing

/// `snapctl convert` and `snapctl inspect` through the real daemon: layouts and registries at either end.
@Suite("snapctl convert and inspect", .serialized, .ownThread)
struct ConvertCommandTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/fixtures/nydus").path

    static func snapctl(_ harness: DaemonHarness, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try runCommand(DaemonHarness.snapctlPath, ["--socket", harness.socket] + arguments)
    }

    @Test("layout to layout, layout to registry, registry to registry; the result pulls and mounts", .timeLimit(.minutes(5)))
    func convert() async throws {
        let harness = try DaemonHarness("convert", arguments: ["--front-end", "fanotify"])
        defer { harness.tearDown() }
        let registry = try TestRegistry()
        defer { registry.stop() }
        try harness.start()
        let image = try NydusTestImage(directory: harness.directory + "/image", files: NydusTestImage.files(smallCount: 5, bigMiB: 2))

        let out = harness.directory + "/out"
        let local = try Self.snapctl(harness, ["convert", image.sourceLayout, out, "--tag", "v2", "--compression", "lz4"])
        #expect(local.status == 0, "\(local.output)")
        let layout = try OCILayout(path: out)
        let (_, manifest) = try layout.resolveManifest(reference: "v2", platform: .current)
        #expect(manifest.layers.last?.annotations?[NydusLayout.bootstrapAnnotation] == "true")
        #expect(manifest.layers.dropLast().allSatisfy { $0.mediaType == NydusLayout.blobMediaType })

        let pushed = try Self.snapctl(harness, ["convert", image.sourceLayout, "docker://\(registry.host)/conv:v1"])
        #expect(pushed.status == 0, "\(pushed.output)")
        try RegistryTestSupport.run(
            RegistryTestSupport.skopeoBinary,
            ["--insecure-policy", "copy", "--dest-tls-verify=false", "oci:\(image.sourceLayout):v1", "docker://\(registry.host)/plain:v1"])
        let remote = try Self.snapctl(harness, ["convert", "docker://\(registry.host)/plain:v1", "docker://\(registry.host)/conv2:v1"])
        #expect(remote.status == 0, "\(remote.output)")

        for reference in ["\(registry.host)/conv:v1", "\(registry.host)/conv2:v1"] {
            let pulled = try harness.client().pull(reference: reference)
            #expect(pulled.image.format == "nydus")
            let key = "k-\(pulled.image.digest.suffix(8))"
            _ = try harness.client().prepare(key: key, image: reference)
            let target = harness.directory + "/" + key
            _ = try harness.client().mount(key: key, target: target)
            for (path, bytes) in image.files {
                #expect(FileManager.default.contents(atPath: target + "/" + path).map(Array.init) == bytes, "\(path) differs")
            }
        }
        // A bad source is a clear error and exits non-zero.
        let bad = try Self.snapctl(harness, ["convert", harness.directory + "/nowhere", out + "2"])
        #expect(bad.status != 0 && bad.output.contains("nowhere"))
        // --prefetch reaches the builder: listed paths go into the prefetch table, a missing one is named.
        let hinted = try Self.snapctl(
            harness, ["convert", image.sourceLayout, out + "3", "--prefetch", "/usr/lib/big.bin", "--prefetch", "/etc/small"])
        #expect(hinted.status == 0, "\(hinted.output)")
        let missing = try Self.snapctl(harness, ["convert", image.sourceLayout, out + "4", "--prefetch", "/no/such/file"])
        #expect(missing.status != 0 && missing.output.contains("/no/such/file"), "\(missing.output)")
    }

    @Test("inspect lists nydus's own image and --verify catches a flipped byte", .timeLimit(.minutes(2)))
    func inspect() throws {
        let harness = try DaemonHarness("inspect")
        defer { harness.tearDown() }
        try harness.start()
        let blobs = harness.directory + "/blobs"
        try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true)
        let blobID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
        try FileManager.default.copyItem(atPath: Self.fixtures + "/" + blobID, toPath: blobs + "/" + blobID)
        let listed = try Self.snapctl(harness, ["inspect", Self.fixtures + "/rafs-v6-2.2.boot", "--blobs", blobs, "--verify"])
        #expect(listed.status == 0, "\(listed.output)")
        #expect(listed.output.contains("sha256:") && listed.output.contains("verified 2 chunks"))
        let json = try Self.snapctl(harness, ["inspect", "--json", Self.fixtures + "/rafs-v6-2.2.boot"])
        #expect(json.status == 0 && json.output.contains("\"path\""))

        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: blobs + "/" + blobID)))
        bytes[100] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: blobs + "/" + blobID))
        let flipped = try Self.snapctl(harness, ["inspect", Self.fixtures + "/rafs-v6-2.2.boot", "--blobs", blobs, "--verify"])
        #expect(flipped.status != 0)
        #expect(flipped.output.contains(blobID) && flipped.output.contains("chunk"), "\(flipped.output)")
    }

    /// On 68766fa both failed with "cannot connect to snapshotterd" (and the converter refused umoci's "/").
    @Test("with no daemon: snapctl converts a layout umoci wrote and inspects the result; errors keep their kinds", .timeLimit(.minutes(3)))
    func offline() throws {
        let work = try RegistryTestSupport.tempDirectory("convert-offline")
        defer { try? FileSystem.removeTree(work) }
        let tree = work + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/etc", withIntermediateDirectories: true)
        try Data("offline\n".utf8).write(to: URL(fileURLWithPath: tree + "/etc/hostname"))
        try Data(RegistryTestSupport.randomBytes(2 << 20, seed: 5)).write(to: URL(fileURLWithPath: tree + "/etc/data.bin"))
        for arguments in [
            ["init", "--layout", work + "/oci"], ["new", "--image", work + "/oci:v1"], ["insert", "--image", work + "/oci:v1", tree, "/"],
        ] {
            let made = try runCommand("/usr/bin/umoci", arguments)
            try #require(made.status == 0, "umoci \(arguments): \(made.output)")
        }
        // A socket nobody listens on: the commands run in a snapshotterd process of their own.
        let socket = ["--socket", work + "/nobody.sock"]
        let converted = try runCommand(
            DaemonHarness.snapctlPath, socket + ["convert", work + "/oci", work + "/nydus", "--source-tag", "v1", "--tag", "v1"])
        #expect(converted.status == 0, "\(converted.output)")
        #expect(converted.output.contains("converted") && converted.output.contains("no daemon answers"), "\(converted.output)")

        let layout = try OCILayout(path: work + "/nydus")
        let manifest = try JSONDecoder().decode(
            ImageManifest.self, from: Data(try layout.readBlob(try #require(try layout.readIndex().manifests.first).digest)))
        let boot = try #require(manifest.layers.last)
        try FileManager.default.createDirectory(atPath: work + "/boot", withIntermediateDirectories: true)
        let untar = try runCommand("/bin/tar", ["-xzf", layout.blobPath(boot.digest), "-C", work + "/boot"])
        try #require(untar.status == 0, "\(untar.output)")
        let inspected = try runCommand(
            DaemonHarness.snapctlPath,
            socket + ["inspect", "--offline", work + "/boot/image/image.boot", "--blobs", layout.sha256Directory, "--verify"])
        #expect(inspected.status == 0, "\(inspected.output)")
        #expect(inspected.output.contains("/etc/hostname") && inspected.output.contains("verified"), "\(inspected.output)")

        // docker save's format, straight from the archive (written here by skopeo).
        let saved = try runCommand("/usr/bin/skopeo", ["copy", "oci:\(work)/oci:v1", "docker-archive:\(work)/saved.tar:app:v1"])
        try #require(saved.status == 0, "skopeo: \(saved.output)")
        let fromArchive = try runCommand(
            DaemonHarness.snapctlPath, socket + ["convert", "docker-archive:" + work + "/saved.tar", work + "/from-archive"])
        #expect(fromArchive.status == 0 && fromArchive.output.contains("converted"), "\(fromArchive.output)")
        let archiveIndex = try OCILayout(path: work + "/from-archive").readIndex()
        #expect(archiveIndex.manifests.first?.annotations?[OCILayout.refNameAnnotation] == "v1", "tagged as docker save named it")

        let missing = try runCommand(DaemonHarness.snapctlPath, socket + ["convert", work + "/absent", work + "/out"])
        #expect(missing.status != 0 && missing.output.contains(work + "/absent"), "\(missing.output)")
        let relative = try runCommand(DaemonHarness.snapctlPath, socket + ["inspect", "--offline", "--json", "/no/such/image.boot"])
        #expect(relative.status != 0 && relative.output.contains("/no/such/image.boot"), "\(relative.output)")
    }
}
