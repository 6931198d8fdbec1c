import Foundation
import LinuxKernel
import Synchronization
import TestSupport
import TestThreads
import Testing

@testable import OCI
@testable import OCIRegistry

@Suite(
    "Registry client against docker-registry (plain HTTP)",
    .enabled(if: RegistryTestSupport.haveTools, "needs docker-registry, skopeo, openssl, htpasswd (apt)"), .ownThread)
struct RegistryPullPushTests {
    @Test("pull what skopeo pushed: ping, manifest by tag and digest, blobs verified, byte range", arguments: ["oci", "v2s2"])
    func pullSkopeoPushed(format: String) async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let image = try TestImage(directory: work + "/layout", layerSizes: [300_000, 1_000], seed: 3)
        try image.pushWithSkopeo(to: "\(registry.host)/test/app:v1", format: format)

        let client = RegistryTestSupport.client()
        let ping = try await client.ping(registry: registry.host)
        #expect(ping.apiVersion == "registry/2.0")

        let ref = try ImageReference(parsing: "\(registry.host)/test/app:v1")
        let resolved = try await client.resolve(ref)
        let manifest = resolved.imageManifest
        #expect(resolved.manifest.descriptor.mediaType == (format == "oci" ? MediaType.ociManifest : MediaType.dockerManifest))
        #expect(manifest.layers.count == 2)

        var byDigest = ref
        byDigest.digest = resolved.manifest.descriptor.digest
        let again = try await client.fetchManifest(byDigest)
        #expect(again.bytes == resolved.manifest.bytes)

        for (i, layer) in manifest.layers.enumerated() {
            let path = "\(work)/layer\(i)"
            let n = try await client.fetchBlob(registry: registry.host, repository: "test/app", descriptor: layer, to: path)
            #expect(n == layer.size)
            if format == "oci" {  // v2s2 conversion recompresses layers; their digests were still verified
                #expect(Array(try Data(contentsOf: URL(fileURLWithPath: path))) == image.layers[i].bytes)
            }
            #expect(!FileSystem.exists(path + ".partial"))
        }
        let slice = try await client.fetchBlobRange(
            registry: registry.host, repository: "test/app", digest: manifest.layers[0].digest,
            range: 1000..<5000)
        #expect(slice == Array(Array(try Data(contentsOf: URL(fileURLWithPath: "\(work)/layer0")))[1000..<5000]))
        #expect(try await client.listTags(registry: registry.host, repository: "test/app") == ["v1"])
    }

    /// Prefetch tables and whole-image prefetch stream at background CPU priority: the transfer thread (where
    /// the receiver runs) has nice 10 at least; an ordinary stream's thread keeps the process's own.
    @Test("a background ranged stream runs on a thread at nice 10 or more, an ordinary one at the process's nice")
    func backgroundStream() async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let image = try TestImage(directory: work + "/layout", layerSizes: [300_000], seed: 5)
        try image.pushWithSkopeo(to: "\(registry.host)/test/app:v1")
        let client = RegistryTestSupport.client()
        let layer = try await client.resolve(try ImageReference(parsing: "\(registry.host)/test/app:v1")).imageManifest.layers[0]
        /// Field 19 of /proc/thread-self/stat (the fields after the command's closing parenthesis start at 3).
        func threadNice() -> Int? {
            guard let stat = try? String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 16 ? Int(fields[16]) : nil
        }
        let processNice = Int(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0))
        for background in [false, true] {
            let seen = Mutex<(nice: Int?, bytes: Int)>((nil, 0))
            try await client.streamBlobRange(
                registry: registry.host, repository: "test/app", digest: layer.digest, range: 0..<200_000, background: background
            ) { bytes in
                seen.withLock { $0 = ($0.nice ?? threadNice(), $0.bytes + bytes.count) }
                return true
            }
            let result = seen.withLock { $0 }
            #expect(result.bytes == 200_000)
            #expect(result.nice == (background ? max(processNice, 10) : processNice), "background: \(background)")
        }
    }

    @Test("unknown tag and unknown blob are not-found errors with the registry's code")
    func notFound() async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let image = try TestImage(directory: work + "/layout", layerSizes: [10], seed: 4)
        try image.pushWithSkopeo(to: "\(registry.host)/test/app:v1")
        let client = RegistryTestSupport.client()
        let error = await #expect(throws: RegistryError.self) {
            try await client.fetchManifest(ImageReference(parsing: "\(registry.host)/test/app:nope"))
        }
        guard case .notFound = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(error?.serverCodes == ["MANIFEST_UNKNOWN"])
        #expect(error?.description.contains("/v2/test/app/manifests/nope") == true)
        let missing = Descriptor(mediaType: MediaType.ociLayer, digest: Digest.sha256(of: [1, 2, 3]), size: 3)
        await #expect(throws: RegistryError.self) {
            try await client.fetchBlob(registry: registry.host, repository: "test/app", descriptor: missing, to: work + "/missing")
        }
        #expect(!FileSystem.exists(work + "/missing"))
        #expect(!FileSystem.exists(work + "/missing.partial"))
    }

    @Test("push monolithic and chunked; skopeo reads back what we pushed", arguments: ["monolithic", "chunked"])
    func push(mode: String) async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let image = try TestImage(directory: work + "/layout", layerSizes: [1_500_000, 70_000, 0], seed: 5)
        let client = RegistryTestSupport.client()
        let upload: RegistryClient.UploadMode = mode == "chunked" ? .chunked(chunkBytes: 256 * 1024) : .monolithic
        try await image.push(with: client, registry: registry.host, repository: "pushed/app", mode: upload)

        // A second push finds every blob present and uploads nothing.
        let again = try await client.pushBlob(
            registry: registry.host, repository: "pushed/app", descriptor: image.layers[0].descriptor,
            from: .bytes(image.layers[0].bytes), mode: upload)
        #expect(again == false)

        // Independent reader: skopeo copies the image out into an OCI layout and checks every digest.
        try RegistryTestSupport.run(
            RegistryTestSupport.skopeoBinary,
            [
                "--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false", "docker://\(registry.host)/pushed/app:v1",
                "oci:\(work)/out:v1",
            ])
        for layer in image.layers {
            let copied = try Data(contentsOf: URL(fileURLWithPath: "\(work)/out/blobs/sha256/\(layer.descriptor.digest.encoded)"))
            #expect(Array(copied) == layer.bytes)
        }
        let raw = try RegistryTestSupport.run(
            RegistryTestSupport.skopeoBinary, ["inspect", "--raw", "--tls-verify=false", "docker://\(registry.host)/pushed/app:v1"])
        #expect(Array(raw.utf8) == image.manifestBytes)
    }

    @Test("a file source pushes chunked and the blob comes back intact")
    func pushFromFile() async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let bytes = RegistryTestSupport.randomBytes(3 * 1024 * 1024 + 17, seed: 9)
        try Data(bytes).write(to: URL(fileURLWithPath: work + "/blob"))
        let descriptor = Descriptor(mediaType: MediaType.ociLayer, digest: Digest.sha256(of: bytes), size: Int64(bytes.count))
        let client = RegistryTestSupport.client { $0.uploadChunkBytes = 1 << 20 }
        #expect(
            try await client.pushBlob(
                registry: registry.host, repository: "file/push", descriptor: descriptor, from: .file(path: work + "/blob")))
        try await client.fetchBlob(registry: registry.host, repository: "file/push", descriptor: descriptor, to: work + "/back")
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: work + "/back"))) == bytes)
    }

    @Test("an index selects the manifest for the platform; no match is a clear error")
    func platformSelection() async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let client = RegistryTestSupport.client()
        var entries: [Descriptor] = []
        for (i, arch) in ["arm64", "amd64"].enumerated() {
            let image = try TestImage(directory: "\(work)/\(arch)", layerSizes: [1000 + i], seed: UInt64(20 + i), architecture: arch)
            try await image.push(
                with: client, registry: registry.host, repository: "multi/app", tag: image.manifestDescriptor.digest.description)
            var entry = image.manifestDescriptor
            entry.platform = Platform(architecture: arch)
            entries.append(entry)
        }
        let index = ImageIndex(manifests: entries)
        let indexBytes = Array(try JSONEncoder().encode(index))
        try await client.pushManifest(
            registry: registry.host, repository: "multi/app", reference: "latest", bytes: indexBytes, mediaType: MediaType.ociIndex)

        let ref = try ImageReference(parsing: "\(registry.host)/multi/app:latest")
        let arm = try await client.resolve(ref, platform: Platform(architecture: "aarch64"))
        #expect(arm.manifest.descriptor.digest == entries[0].digest)
        #expect(arm.index?.descriptor.mediaType == MediaType.ociIndex)
        let amd = try await client.resolve(ref, platform: Platform(architecture: "x86_64"))
        #expect(amd.manifest.descriptor.digest == entries[1].digest)
        await #expect(throws: RegistryError.self) { try await client.resolve(ref, platform: Platform(architecture: "s390x")) }
    }
}
