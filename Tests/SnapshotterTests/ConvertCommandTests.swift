import Foundation
import LinuxKernel
import OCI
import SnapshotterAPI
import TestSupport
import Testing

/// `snapctl convert` and `snapctl inspect` through the real daemon: layouts and registries at either end.
@Suite("snapctl convert and inspect", .serialized)
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
}
