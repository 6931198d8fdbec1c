import Foundation
import LinuxKernel
import TestSupport
import TestThreads
import Testing

@testable import OCI
@testable import OCIRegistry

@Suite(
    "Registry client mirrors and proxy", .enabled(if: RegistryTestSupport.haveTools, "needs docker-registry, skopeo (apt) and python3"),
    .ownThread)
struct RegistryHostsTests {
    @Test("hosts.toml: pulls go to the mirror first, fall back to the server when the mirror lacks content, pushes go to the server")
    func mirrors() async throws {
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let upstream = try TestRegistry()
        defer { upstream.stop() }
        let mirror = try TestRegistry()
        defer { mirror.stop() }
        let image = try TestImage(directory: work + "/layout", layerSizes: [20_000], seed: 51)
        try image.pushWithSkopeo(to: "\(mirror.host)/m/app:v1")
        let onlyUpstream = try TestImage(directory: work + "/layout2", tag: "v2", layerSizes: [10_000], seed: 52)
        try onlyUpstream.pushWithSkopeo(to: "\(upstream.host)/m/app:v2")

        // The registry name "registry.invalid" is never resolved: every request goes to the hosts.toml endpoints.
        try FileSystem.makeDirectories(work + "/certs.d/registry.invalid")
        try RegistryTestSupport.write(
            work + "/certs.d/registry.invalid/hosts.toml",
            """
            server = "http://\(upstream.host)"

            [host."http://\(mirror.host)"]
              capabilities = ["pull", "resolve"]
            """)
        let client = RegistryTestSupport.client { $0.hostsDirectory = work + "/certs.d" }
        let fromMirror = try await client.resolve(ImageReference(parsing: "registry.invalid/m/app:v1"))
        #expect(fromMirror.manifest.descriptor.digest == image.manifestDescriptor.digest)
        let fallback = try await client.resolve(ImageReference(parsing: "registry.invalid/m/app:v2"))
        #expect(fallback.manifest.descriptor.digest == onlyUpstream.manifestDescriptor.digest)
        let pushed = try TestImage(directory: work + "/layout3", tag: "v3", layerSizes: [5_000], seed: 53)
        try await pushed.push(with: client, registry: "registry.invalid", repository: "m/app")
        let direct = RegistryTestSupport.client()
        _ = try await direct.fetchManifest(ImageReference(parsing: "\(upstream.host)/m/app:v3"))
        await #expect(throws: RegistryError.self) { try await direct.fetchManifest(ImageReference(parsing: "\(mirror.host)/m/app:v3")) }
    }

    /// On 0f63ae3 a mirror answering 429 was retried six times, each after its Retry-After (30 s), and then the
    /// pull failed: 429 was not a reason to try the server behind it.
    @Test(
        "a mirror answering 429 with a long Retry-After is left for the server at once: blob GETs and ranges complete",
        .timeLimit(.minutes(1)))
    func throttledMirror() async throws {
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let upstream = try TestRegistry()
        defer { upstream.stop() }
        let image = try TestImage(directory: work + "/layout", layerSizes: [300_000], seed: 54)
        try image.pushWithSkopeo(to: "\(upstream.host)/m/app:v1")
        // The mirror holds the same content (it forwards to the server) but throttles every blob GET.
        let mirror = try PythonHelper.faultProxy(upstreamPort: upstream.port, mode: "throttled")
        defer { mirror.stop() }
        try FileSystem.makeDirectories(work + "/certs.d/registry.invalid")
        try RegistryTestSupport.write(
            work + "/certs.d/registry.invalid/hosts.toml",
            """
            server = "http://\(upstream.host)"

            [host."http://127.0.0.1:\(mirror.port)"]
              capabilities = ["pull", "resolve"]
            """)
        let client = RegistryTestSupport.client { $0.hostsDirectory = work + "/certs.d" }
        let layer = image.layers[0]
        let slice = try await client.fetchBlobRange(
            registry: "registry.invalid", repository: "m/app", digest: layer.descriptor.digest, range: 1000..<201_000)
        #expect(slice == Array(layer.bytes[1000..<201_000]))
        let path = work + "/layer"
        try await client.fetchBlob(registry: "registry.invalid", repository: "m/app", descriptor: layer.descriptor, to: path)
        #expect(try FileSystem.readFile(path) == layer.bytes)
        // The mirror was asked once per fetch (the manifest it may serve; blobs it throttles).
        let throttled = mirror.requests.filter { $0.hasPrefix("GET ") && $0.contains("/blobs/") }
        #expect(throttled.count == 2, "\(throttled)")
    }

    @Test("an HTTP proxy setting sends every request through the proxy")
    func httpProxy() async throws {
        let work = try RegistryTestSupport.tempDirectory()
        defer { try? FileSystem.removeTree(work) }
        let registry = try TestRegistry()
        defer { registry.stop() }
        let image = try TestImage(directory: work + "/layout", layerSizes: [30_000], seed: 61)
        try image.pushWithSkopeo(to: "\(registry.host)/p/app:v1")
        let proxy = try PythonHelper.faultProxy(upstreamPort: registry.port, mode: "pass")
        defer { proxy.stop() }
        let client = RegistryTestSupport.client { $0.proxy = "http://127.0.0.1:\(proxy.port)" }
        let resolved = try await client.resolve(ImageReference(parsing: "\(registry.host)/p/app:v1"))
        try await client.fetchBlob(
            registry: registry.host, repository: "p/app", descriptor: resolved.imageManifest.layers[0], to: work + "/blob")
        let seen = proxy.requests
        #expect(seen.contains { $0.contains("GET http://\(registry.host)/v2/p/app/manifests/v1") }, "\(seen)")
        #expect(seen.contains { $0.contains("/v2/p/app/blobs/\(image.layers[0].descriptor.digest)") }, "\(seen)")
    }
}
