import BlobStore
import Foundation
import LinuxKernel
import Logging
import OCI
import SnapshotterAPI
import TestSupport
import TestThreads
import Testing

/// Plain OCI images (gzip layers, as skopeo pushes them) started lazily from a gzip index, through the real
/// daemon, kernel (fanotify) and `docker-registry` 2.8, which has no referrers API (the tag fallback is used).
@Suite("Gzip-indexed plain images through the real daemon, kernel and registry", .serialized, .ownThread)
struct GzipIndexedImageTests {
    /// Pushes the setup's plain image (skopeo compresses its layer with gzip) as `repository:v1` and returns its
    /// reference through the counting proxy.
    static func pushPlain(_ setup: LazyImageTests.Setup, repository: String) throws -> String {
        try RegistryTestSupport.run(
            RegistryTestSupport.skopeoBinary,
            [
                "--insecure-policy", "copy", "--dest-tls-verify=false", "oci:\(setup.image.sourceLayout):v1",
                "docker://\(setup.registry.host)/\(repository):v1",
            ])
        return "127.0.0.1:\(setup.proxy.port)/\(repository):v1"
    }

    @Test(
        "snapctl index pushes a gzip index; a pull then mounts the plain image without fetching its layer, and reads fetch ranges of it, verified",
        .timeLimit(.minutes(5)))
    func lazyStart() async throws {
        let setup = try await LazyImageTests.Setup("gzidx", frontEnd: "fanotify", bigMiB: 24)
        defer { setup.tearDown() }
        let reference = try Self.pushPlain(setup, repository: "plain")
        let indexed = try runCommand(
            DaemonHarness.snapctlPath, ["--socket", setup.harness.socket, "--json", "index", "--span-mib", "1", "docker://" + reference])
        try #require(indexed.status == 0, "snapctl index failed: \(indexed.output)\n\(setup.harness.log())")
        let published = try JSONDecoder().decode(IndexResponse.self, from: Data(indexed.output.utf8))
        #expect(published.layers == 1 && published.checkpoints >= 20, "a 24 MiB layer at a 1 MiB span: \(published)")
        #expect(published.indexBytes < published.layerBytes / 2, "the index is small beside the layer: \(published)")

        let servedBefore = setup.blobBytesServed
        let pulled = try setup.harness.client().pull(reference: reference)
        #expect(pulled.pulled && pulled.image.format == "gzip-indexed", "\(pulled.image)\n\(setup.harness.log())")
        #expect(pulled.image.localBytes == 0, "nothing of the layer is local after the pull")
        let pullBytes = setup.blobBytesServed - servedBefore
        let layerBytes = published.layerBytes
        #expect(pullBytes < layerBytes / 2, "the pull fetched \(pullBytes) bytes of blobs; the layer has \(layerBytes)")
        // Nor the index's windows (32 KiB a checkpoint after the first): reads fetch the ones they start at.
        let windowBytes = Int64(published.checkpoints - 1) * 32768
        #expect(
            pullBytes <= published.indexBytes - windowBytes / 2,
            "the pull fetched \(pullBytes) bytes of an index of \(published.indexBytes), \(windowBytes) of them windows")

        _ = try setup.harness.client().prepare(key: "z1", image: reference)
        let target = setup.harness.directory + "/z1"
        _ = try setup.harness.client().mount(key: "z1", target: target)
        // One small file: a range of the layer, not the layer.
        let small = try #require(setup.image.files.filter { $0.value.count < 64 << 10 }.sorted { $0.key < $1.key }.first)
        let (bytesBefore, getsBefore) = (setup.blobBytesServed, setup.blobGets)
        #expect(try LazyImageTests.read(target + "/" + small.key).get() == small.value, "\(small.key) differs")
        try await setup.waitForRegistryQuiet()
        let readBytes = setup.blobBytesServed - bytesBefore
        #expect(setup.blobGets > getsBefore, "reading \(small.key) fetched nothing: it was local already")
        #expect(readBytes < layerBytes / 2, "reading \(small.key) fetched \(readBytes) of \(layerBytes) bytes")
        // A daemon killed with -9 and started again serves the image from its catalog, index and meta files.
        setup.harness.crash()
        try setup.harness.start()
        #expect(try setup.harness.client().images().first?.format == "gzip-indexed")
        // Every file, byte for byte.
        for (path, bytes) in setup.image.files { #expect(try LazyImageTests.read(target + "/" + path).get() == bytes, "\(path) differs") }

        // A registry that now answers with corrupted bytes: a reader of what is not local gets EIO, never other
        // bytes (the chunk digests of the trusted index are checked after inflating).
        try setup.harness.client().unmount(target: target)
        _ = try setup.harness.client().remove(key: "z1")
        try setup.harness.client().removeImage(reference: reference)
        _ = try setup.harness.client().pull(reference: reference)
        _ = try setup.harness.client().prepare(key: "z2", image: reference)
        let second = setup.harness.directory + "/z2"
        _ = try setup.harness.client().mount(key: "z2", target: second)
        // Restarted, the daemon fetches windows again (it cannot tell a window from a hole): under the corrupting
        // registry they come corrupted too, and must not be kept.
        setup.harness.crash()
        try setup.harness.start()
        try setup.setProxyMode("flipall")
        let big = try #require(setup.image.files.max { $0.value.count < $1.value.count })
        // A read in the middle inflates from a checkpoint whose window it fetches (corrupted, like the layer).
        if case .success = LazyImageTests.read(second + "/" + big.key, offset: 16 << 20, count: 65536) {
            Issue.record("a read in the middle of \(big.key) succeeded from a corrupting registry")
        }
        switch LazyImageTests.read(second + "/" + big.key) {
        case .success(let bytes):
            Issue.record("a corrupted layer range was served: \(bytes.count) bytes, equal: \(bytes == big.value)")
        case .failure(let error): #expect(error.errno == EIO, "\(error)")
        }
        try setup.setProxyMode("pass")
        // The same range first: it starts at the same checkpoint, whose window must not be the corrupted one.
        #expect(
            try LazyImageTests.read(second + "/" + big.key, offset: 16 << 20, count: 65536).get()
                == Array(big.value[(16 << 20)..<((16 << 20) + 65536)]), "the middle of \(big.key) after the registry recovers")
        #expect(try LazyImageTests.read(second + "/" + big.key).get() == big.value, "after the registry recovers")
    }

    @Test("an index this host did not build nor trust is ignored: the image is fetched whole and converted", .timeLimit(.minutes(5)))
    func untrustedIndexIgnored() async throws {
        let setup = try await LazyImageTests.Setup("gzuntrusted", frontEnd: "fanotify", bigMiB: 4)
        defer { setup.tearDown() }
        let reference = try Self.pushPlain(setup, repository: "other")
        // Someone else pushes an index (here: a genuine one, but not one this daemon built or was told to trust).
        let work = setup.harness.directory + "/publish"
        let published = try await GzipIndexPublisher(client: RegistryTestSupport.client(), logger: Logger(label: "test")).publish(
            "\(setup.registry.host)/other:v1", work: work)
        #expect(published.indexDigest.hasPrefix("sha256:"))
        let pulled = try setup.harness.client().pull(reference: reference)
        #expect(pulled.image.format == "converted", "an untrusted index was used: \(pulled.image.format)")
        #expect(setup.harness.log().contains("gzip index ignored"))
        _ = try setup.harness.client().prepare(key: "u1", image: reference)
        let target = setup.harness.directory + "/u1"
        _ = try setup.harness.client().mount(key: "u1", target: target)
        for (path, bytes) in setup.image.files { #expect(try LazyImageTests.read(target + "/" + path).get() == bytes, "\(path) differs") }
    }

    @Test("snapctl index --prefetch records a prefetch table: its files are fetched right after the pull", .timeLimit(.minutes(5)))
    func prefetchTable() async throws {
        let setup = try await LazyImageTests.Setup("gzprefetch", frontEnd: "fanotify", bigMiB: 8)
        defer { setup.tearDown() }
        let reference = try Self.pushPlain(setup, repository: "hinted")
        let small = try #require(setup.image.files.filter { $0.value.count < 64 << 10 }.sorted { $0.key < $1.key }.first)
        let indexed = try runCommand(
            DaemonHarness.snapctlPath, ["--socket", setup.harness.socket, "index", reference, "--prefetch", "/" + small.key])
        try #require(indexed.status == 0, "snapctl index failed: \(indexed.output)")
        _ = try setup.harness.client().pull(reference: reference)
        try await setup.waitForRegistryQuiet()
        #expect(try setup.harness.client().images().first?.localBytes ?? 0 > 0, "nothing was prefetched")
        _ = try setup.harness.client().prepare(key: "h1", image: reference)
        let target = setup.harness.directory + "/h1"
        _ = try setup.harness.client().mount(key: "h1", target: target)
        let gets = setup.blobGets
        #expect(try LazyImageTests.read(target + "/" + small.key).get() == small.value)
        #expect(setup.blobGets == gets, "the prefetched file was fetched again")
    }

    @Test(
        "two repositories' indexes of one manifest, with different bootstraps: the second pull leaves the first image's bootstrap alone",
        .timeLimit(.minutes(5)))
    func twinIndexes() async throws {
        let setup = try await LazyImageTests.Setup("gztwins", frontEnd: "fanotify", bigMiB: 4)
        defer { setup.tearDown() }
        let first = try Self.pushPlain(setup, repository: "twin-a")
        let second = try Self.pushPlain(setup, repository: "twin-b")
        let small = try #require(setup.image.files.filter { $0.value.count < 64 << 10 }.sorted { $0.key < $1.key }.first)
        // The same manifest; the second index carries a prefetch table, so its bootstrap differs.
        for (reference, extra) in [(first, [String]()), (second, ["--prefetch", "/" + small.key])] {
            let indexed = try runCommand(DaemonHarness.snapctlPath, ["--socket", setup.harness.socket, "index", reference] + extra)
            try #require(indexed.status == 0, "snapctl index failed: \(indexed.output)")
        }
        let pulledFirst = try setup.harness.client().pull(reference: first)
        let pulledSecond = try setup.harness.client().pull(reference: second)
        #expect(pulledFirst.image.digest == pulledSecond.image.digest, "the two pushes are not one manifest")
        #expect(pulledFirst.image.format == "gzip-indexed" && pulledSecond.image.format == "gzip-indexed")
        // Each image's bootstrap is still the one its pull verified and recorded: a restarted daemon serves both.
        setup.harness.crash()
        try setup.harness.start()
        let images = try setup.harness.client().status().images ?? []
        #expect(images.count == 2)
        for image in images { #expect(image.error == nil, "\(image.reference) is not served: \(image.error ?? "")") }
        _ = try setup.harness.client().prepare(key: "t1", image: first)
        let target = setup.harness.directory + "/t1"
        _ = try setup.harness.client().mount(key: "t1", target: target)
        for (path, bytes) in setup.image.files { #expect(try LazyImageTests.read(target + "/" + path).get() == bytes, "\(path) differs") }
    }
}
