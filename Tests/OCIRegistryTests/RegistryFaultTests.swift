import Foundation
import LinuxKernel
import TestSupport
import TestThreads
import Testing

@testable import OCI
@testable import OCIRegistry

@Suite(
    "Registry client under faults", .enabled(if: RegistryTestSupport.haveTools, "needs docker-registry, skopeo (apt) and python3"),
    .ownThread)
struct RegistryFaultTests {
    /// A registry holding one image with a 4 MiB layer, pushed by skopeo.
    struct Fixture {
        let registry: TestRegistry
        let work: String
        let image: TestImage
        var layer: Descriptor { image.layers[0].descriptor }
        func stop() {
            registry.stop()
            try? FileSystem.removeTree(work)
        }
    }

    static func fixture() throws -> Fixture {
        let registry = try TestRegistry()
        let work = try RegistryTestSupport.tempDirectory()
        let image = try TestImage(directory: work + "/layout", layerSizes: [4 << 20], seed: 11)
        try image.pushWithSkopeo(to: "\(registry.host)/fault/app:v1")
        return Fixture(registry: registry, work: work, image: image)
    }

    @Test("a byte flipped in transit: digest mismatch, nothing stored")
    func flippedByte() async throws {
        let f = try Self.fixture()
        defer { f.stop() }
        let proxy = try PythonHelper.faultProxy(upstreamPort: f.registry.port, mode: "flip")
        defer { proxy.stop() }
        let client = RegistryTestSupport.client()
        let error = await #expect(throws: RegistryError.self) {
            try await client.fetchBlob(
                registry: "127.0.0.1:\(proxy.port)", repository: "fault/app", descriptor: f.layer, to: f.work + "/blob")
        }
        guard case .digestMismatch(_, let expected, let found)? = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(expected == f.layer.digest)
        #expect(found != f.layer.digest)
        #expect(!FileSystem.exists(f.work + "/blob"))
        #expect(!FileSystem.exists(f.work + "/blob.partial"))
    }

    @Test("connection dropped in the middle of a blob: retried and resumed from the last byte with Range")
    func droppedConnection() async throws {
        let f = try Self.fixture()
        defer { f.stop() }
        let proxy = try PythonHelper.faultProxy(upstreamPort: f.registry.port, mode: "drop")
        defer { proxy.stop() }
        let client = RegistryTestSupport.client()
        let n = try await client.fetchBlob(
            registry: "127.0.0.1:\(proxy.port)", repository: "fault/app", descriptor: f.layer, to: f.work + "/blob")
        #expect(n == f.layer.size)
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: f.work + "/blob"))) == f.image.layers[0].bytes)
        let blobGets = proxy.requests.filter { $0.hasPrefix("GET") && $0.contains("/blobs/") }
        #expect(blobGets.count == 2)
        #expect(blobGets.last?.contains("range=bytes=\(f.layer.size / 2)-") == true, "\(blobGets)")
    }

    @Test("429 is retried with backoff; a 307 redirect is followed")
    func throttledAndRedirected() async throws {
        let f = try Self.fixture()
        defer { f.stop() }
        for mode in ["429", "redirect"] {
            let proxy = try PythonHelper.faultProxy(upstreamPort: f.registry.port, mode: mode)
            defer { proxy.stop() }
            let client = RegistryTestSupport.client()
            try await client.fetchBlob(
                registry: "127.0.0.1:\(proxy.port)", repository: "fault/app", descriptor: f.layer, to: f.work + "/blob-\(mode)")
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: f.work + "/blob-\(mode)"))) == f.image.layers[0].bytes)
            let blobGets = proxy.requests.filter { $0.hasPrefix("GET") && $0.contains("/blobs/") }
            #expect(blobGets.count == (mode == "429" ? 3 : 1), "\(mode): \(blobGets)")
        }
    }

    @Test("registry stopped, then back on the same port: the retries reach it")
    func registryRestarted() async throws {
        let f = try Self.fixture()
        defer { f.stop() }
        f.registry.stopProcess()
        let client = RegistryTestSupport.client { $0.retry = RetryPolicy(maxAttempts: 8, initialDelayMilliseconds: 200) }
        let (host, layer, path) = (f.registry.host, f.layer, f.work + "/blob")
        let download = Task {
            try await client.fetchBlob(registry: host, repository: "fault/app", descriptor: layer, to: path)
        }
        try await Task.sleep(nanoseconds: 500_000_000)
        try f.registry.start()
        #expect(try await download.value == f.layer.size)
    }

    @Test("a manifest claiming absurd sizes is refused before any blob is fetched")
    func absurdManifest() async throws {
        let f = try Self.fixture()
        defer { f.stop() }
        let client = RegistryTestSupport.client()
        var huge = f.layer
        huge.size = 1 << 50
        let manifest = ImageManifest(config: f.image.config.descriptor, layers: [huge])
        try await client.pushManifest(
            registry: f.registry.host, repository: "fault/app", reference: "absurd",
            bytes: Array(try JSONEncoder().encode(manifest)), mediaType: MediaType.ociManifest)
        let error = await #expect(throws: RegistryError.self) {
            try await client.resolve(ImageReference(parsing: "\(f.registry.host)/fault/app:absurd"))
        }
        guard case .format(.absurdManifest)? = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        await #expect(throws: RegistryError.self) {
            try await client.fetchBlob(registry: f.registry.host, repository: "fault/app", descriptor: huge, to: f.work + "/x")
        }
    }

    @Test("cancelling the task stops the transfer")
    func cancellation() async throws {
        let f = try Self.fixture()
        defer { f.stop() }
        f.registry.stopProcess()  // nothing answers: the client sits in its retry loop until cancelled
        let client = RegistryTestSupport.client { $0.retry = RetryPolicy(maxAttempts: 50, initialDelayMilliseconds: 200) }
        let (host, layer, path) = (f.registry.host, f.layer, f.work + "/blob")
        let task = Task {
            try await client.fetchBlob(registry: host, repository: "fault/app", descriptor: layer, to: path)
        }
        try await Task.sleep(nanoseconds: 300_000_000)
        task.cancel()
        let result = await task.result
        guard case .failure(let error) = result, case .cancelled? = error as? RegistryError else {
            Issue.record("expected cancelled, got \(result)")
            return
        }
        #expect(!FileSystem.exists(f.work + "/blob.partial"))
    }
}
