import Foundation
import LinuxKernel
import TestSupport
import TestThreads
import Testing

@testable import OCI
@testable import OCIRegistry

/// The link emulator the WAN tests and `make bench-wan` use: real TCP through a namespace, a veth pair shaped
/// by tbf and a delay line. Checked against its own profile, so that figures measured through it mean what
/// they say.
@Suite(
    "WAN link emulator", .serialized,
    .enabled(if: LinkEmulator.available && RegistryTestSupport.haveTools, "needs root, ip and tc (iproute2), docker-registry, skopeo"),
    .ownThread)
struct LinkEmulatorTests {
    /// Lower bounds only: a loaded machine can make the relays slower, never faster (how close to its profile
    /// the link gets is `make bench-wan`'s to show).
    @Test("a round trip costs at least the profile's RTT, a blob comes at most at its rate, intact; stop removes the namespace")
    func roundTripAndRate() async throws {
        LinkEmulator.removeStale()
        let registry = try TestRegistry()
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory("link")
        defer { try? FileSystem.removeTree(work) }
        let image = try TestImage(directory: work + "/layout", layerSizes: [6 << 20], seed: 21)
        try image.pushWithSkopeo(to: "\(registry.host)/wan/app:v1")
        let layer = image.layers[0].descriptor

        let profile = LinkEmulator.Profile.short
        let link = try LinkEmulator(profile: profile, upstreamPort: registry.port)
        defer { link.stop() }
        let client = RegistryTestSupport.client()
        let host = "127.0.0.1:\(link.port)"
        // A first request opens the connection; the next ones reuse it and cost one round trip each.
        _ = try await client.blobSize(registry: host, repository: "wan/app", digest: layer.digest)
        var best = Double.infinity
        for _ in 0..<5 {
            let started = monotonicNanoseconds()
            _ = try await client.blobSize(registry: host, repository: "wan/app", digest: layer.digest)
            best = min(best, Double(monotonicNanoseconds() - started) / 1e6)
        }
        #expect(best >= profile.rttMilliseconds * 0.9, "a HEAD took \(best) ms through a \(profile) link")

        let started = monotonicNanoseconds()
        let size = try await client.fetchBlob(registry: host, repository: "wan/app", descriptor: layer, to: work + "/blob")
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        let rate = Double(size) / seconds
        print(
            "link \(profile): HEAD round trip \(best) ms; blob of \(size) bytes at \(rate / 1e6) MB/s (rate \(profile.bytesPerSecond / 1e6) MB/s)"
        )
        #expect(size == layer.size)
        #expect(rate <= profile.bytesPerSecond * 1.15, "\(rate / 1e6) MB/s through a \(profile.megabitsPerSecond) Mbit/s link")

        link.stop()
        let namespaces = try RegistryTestSupport.run("/usr/sbin/ip", ["netns", "list"])
        #expect(!namespaces.contains(link.namespace), "the namespace outlived stop()")
    }
}
