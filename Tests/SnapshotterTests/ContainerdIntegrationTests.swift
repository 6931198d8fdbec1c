import CRIClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LinuxKernel
import OCI
import RAFSBuilder
import SnapshotterAPI
import SwiftProtobuf
import TestSupport
import TestThreads
import Testing

/// The real thing: Debian's containerd 1.6 and runc, a docker-registry, and snapshotterd as the
/// `ondemand` proxy plugin. Needs root (mounts, runc) and the packages scripts/setup.sh installs.
@Suite(
    "containerd 1.6 with snapshotterd as proxy plugin", .serialized, .timeLimit(.minutes(5)),
    .enabled(
        if: ContainerdHarness.available && BusyboxImage.available && RegistryTestSupport.haveTools,
        "needs root, containerd, runc, busybox-static, docker-registry and skopeo (make setup)"), .ownThread)
struct ContainerdIntegrationTests {
    static let snapshotter = ContainerdHarness.snapshotter

    /// CRI's pull, as kubelet asks it: the only containerd 1.6 path that tells a snapshotter which image a layer
    /// is from.
    static func criPull(_ reference: String, containerd: ContainerdHarness) async throws -> Runtime_V1_PullImageResponse {
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: containerd.address), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            try await Runtime_V1_ImageService.Client(wrapping: client).pullImage(.with { $0.image.image = reference })
        }
    }

    @Test("plain image: pull, run, snapshots ls/info/usage/rm, restarts of both daemons, GC after image rm")
    func plainImage() async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory("ctd-plain")
        defer { try? FileSystem.removeTree(work) }
        let image = try BusyboxImage(directory: work)
        let reference = "\(registry.host)/test/busybox:v1"
        try BusyboxImage.push(layout: image.layout, tag: image.tag, to: reference)

        let daemon = try DaemonHarness("ctd-plain")
        defer { daemon.tearDown() }
        try daemon.start()
        let containerd = try ContainerdHarness("plain", proxySocket: daemon.containerdSocket)
        defer { containerd.tearDown() }
        try containerd.start()

        try containerd.ctrOK(["image", "pull", "--plain-http", "--snapshotter", Self.snapshotter, reference])
        // containerd unpacked the layer into one of our snapshots, committed under its chain ID.
        let afterPull = try daemon.client().list()
        #expect(afterPull.count == 1)
        #expect(afterPull.first?.kind == .committed)
        #expect(afterPull.first?.name.hasSuffix("/" + image.diffID) == true)

        let output = try containerd.ctrOK(
            ["run", "--rm", "--snapshotter", Self.snapshotter, reference, "t1", "/bin/cat", "/etc/hello.txt"])
        #expect(output.contains(BusyboxImage.hello))

        let listed = try containerd.ctrOK(["snapshots", "--snapshotter", Self.snapshotter, "ls"])
        #expect(listed.contains(image.diffID))
        #expect(listed.contains("Committed"))
        let info = try containerd.ctrOK(["snapshots", "--snapshotter", Self.snapshotter, "info", image.diffID])
        #expect(info.contains("\"Kind\": \"Committed\""))
        let usage = try containerd.ctrOK(["snapshots", "--snapshotter", Self.snapshotter, "usage", image.diffID])
        #expect(usage.contains(image.diffID))

        // A snapshot of containerd's own (gc.root) stays; one removed by the client goes at GC.
        try containerd.ctrOK(["snapshots", "--snapshotter", Self.snapshotter, "prepare", "keep-me"])
        try containerd.ctrOK(["snapshots", "--snapshotter", Self.snapshotter, "prepare", "drop-me", image.diffID])
        try containerd.ctrOK(["snapshots", "--snapshotter", Self.snapshotter, "rm", "drop-me"])

        // Our daemon restarted: containerd redials, and List/Stat still see every snapshot.
        #expect(daemon.stop() == 0)
        try daemon.start()
        // containerd redials with backoff (up to a few seconds): the first calls may still fail.
        var relisted = ""
        for _ in 0..<100 {
            let result = try containerd.ctr(["snapshots", "--snapshotter", Self.snapshotter, "ls"])
            if result.status == 0 {
                relisted = result.output
                break
            }
            usleep(100_000)
        }
        #expect(relisted.contains(image.diffID) && relisted.contains("keep-me"))

        // containerd restarted while a container runs: the container keeps reading its files.
        try containerd.ctrOK(["run", "-d", "--snapshotter", Self.snapshotter, reference, "t2", "/bin/sleep", "300"])
        containerd.stop()
        try containerd.start()
        let read = try containerd.ctrOK(["task", "exec", "--exec-id", "e1", "t2", "/bin/cat", "/etc/hello.txt"])
        #expect(read.contains(BusyboxImage.hello))
        try containerd.ctrOK(["task", "kill", "--signal", "SIGKILL", "t2"])
        for _ in 0..<50 where (try containerd.ctr(["task", "rm", "t2"])).status != 0 { usleep(100_000) }
        try containerd.ctrOK(["container", "rm", "t2"])

        // GC after the image is gone: List, then Remove of everything unreferenced; keep-me stays.
        try containerd.ctrOK(["image", "rm", "--sync", reference])
        var remaining: [String] = []
        for _ in 0..<50 {
            remaining = try daemon.client().list().map(\.name)
            if remaining.count == 1 { break }
            usleep(100_000)
        }
        #expect(remaining.count == 1)
        #expect(remaining.first?.hasSuffix("/keep-me") == true)
    }

    @Test("nydus-style image through CRI: remote snapshots, run reads lazily, registry serves a fraction")
    func nydusImage() async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        // Tag resolutions (the daemon's; containerd resolves with HEAD) take a second: what the daemon fetches
        // before that answer, it fetched without waiting for the manifest.
        let proxy = try PythonHelper.faultProxy(upstreamPort: registry.port, mode: "slowtag")
        defer { proxy.stop() }
        let work = try RegistryTestSupport.tempDirectory("ctd-nydus")
        defer { try? FileSystem.removeTree(work) }
        // 24 MiB no start-up path reads: what a lazy pull must not download.
        let image = try BusyboxImage(
            directory: work, extraFiles: ["data/big.bin": RegistryTestSupport.randomBytes(24 << 20, seed: 7)])
        let nydusLayout = work + "/nydus"
        let converted = try ImageConverter(options: .init(targetReference: image.tag)).convert(
            source: image.layout, destination: nydusLayout)
        // Pushed straight to the registry; pulls go through the proxy, which counts what it serves.
        try BusyboxImage.push(layout: nydusLayout, tag: image.tag, to: "\(registry.host)/test/nydus:v1")
        let imageBytes = try BusyboxImage.layoutBytes(nydusLayout)
        let reference = "127.0.0.1:\(proxy.port)/test/nydus:v1"

        let daemon = try DaemonHarness("ctd-nydus")
        defer { daemon.tearDown() }
        try daemon.start()
        let containerd = try ContainerdHarness(
            "nydus", proxySocket: daemon.containerdSocket, cri: true, plainHTTPRegistries: ["127.0.0.1:\(proxy.port)"])
        defer { containerd.tearDown() }
        try containerd.start()

        let pulled = try await Self.criPull(reference, containerd: containerd)
        #expect(!pulled.imageRef.isEmpty)

        // Every layer became a remote snapshot: committed by us, never unpacked by containerd.
        let snapshots = try daemon.client().list()
        #expect(!snapshots.isEmpty)
        #expect(snapshots.allSatisfy { $0.kind == .committed && $0.labels["containerd.io/snapshot.ref"] != nil })
        // containerd fetches the manifest by digest; the daemon resolves the tag once for the first layer, and
        // later layers, whose labels name the same manifest digest, ask the registry nothing.
        let tagResolutions = proxy.requests.filter { $0.hasPrefix("GET ") && $0.contains("/manifests/v1 ") }
        #expect(tagResolutions.count == 1, "the tag was resolved \(tagResolutions.count) times: \(tagResolutions)")
        // CRI names the image's layers (bootstrap last): the daemon's pull fetched the bootstrap and the blobs'
        // tails alongside the tag's manifest, not one round trip after it (on 0f63ae3 it waited for the manifest).
        let requests = proxy.requests
        let manifestAnswered = requests.firstIndex { $0.hasPrefix("SENT ") && $0.contains("/manifests/v1") }
        let bootstrapAsked = requests.firstIndex { $0.hasPrefix("GET ") && $0.contains(converted.bootstrapLayer.digest.description) }
        let dataBlob = try #require(converted.manifest.layers.first { $0.digest != converted.bootstrapLayer.digest })
        let tailAsked = requests.firstIndex {
            $0.hasPrefix("GET ") && $0.contains(dataBlob.digest.description) && $0.contains("range=bytes=-")
        }
        #expect(
            manifestAnswered != nil && bootstrapAsked != nil && tailAsked != nil && bootstrapAsked! < manifestAnswered!
                && tailAsked! < manifestAnswered!,
            "the bootstrap or a blob's tail was asked for only after the manifest came:\n\(requests.joined(separator: "\n"))")
        // And what came early was used: one GET each, no second fetch after the manifest.
        let gets = { (digest: Digest) in requests.filter { $0.hasPrefix("GET ") && $0.contains(digest.description) }.count }
        #expect(gets(converted.bootstrapLayer.digest) == 1 && gets(dataBlob.digest) == 1, "\(requests.joined(separator: "\n"))")

        let output = try containerd.ctrOK(
            ["run", "--rm", "--snapshotter", Self.snapshotter, reference, "t1", "/bin/cat", "/etc/hello.txt"], namespace: "k8s.io")
        #expect(output.contains(BusyboxImage.hello))
        // Remote snapshots report what the cache holds for their layers (they used to report their empty
        // directories: 0 for every layer of a lazily served image).
        let usage = try containerd.ctrOK(["snapshots", "--snapshotter", Self.snapshotter, "usage"], namespace: "k8s.io")
        let sized = usage.split(separator: "\n").dropFirst().filter { line in
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            return fields.count >= 3 && fields[1] != "0"
        }
        #expect(!sized.isEmpty, "every remote snapshot reports 0 bytes:\n\(usage)")

        let served = proxy.requests.compactMap { line -> Int64? in
            let words = line.split(separator: " ")
            return words.first == "SENT" && words.count > 1 ? Int64(words[1]) : nil
        }.reduce(0, +)
        print("nydus image: \(imageBytes) bytes in the registry, \(served) served for pull + run")
        #expect(served > 0)
        #expect(served * 4 < imageBytes, "the registry served \(served) of \(imageBytes) bytes")

        // The limit of containerd 1.6's own `ctr image pull`: it downloads every layer, sends no image
        // labels, and cannot unpack a nydus blob layer (no stream processor for its media type).
        let ctrPull = try containerd.ctr(["image", "pull", "--plain-http", "--snapshotter", Self.snapshotter, reference])
        #expect(ctrPull.status != 0)
        #expect(ctrPull.output.contains("no processor for media-type"))
    }

    @Test("plain gzip image with a gzip index through CRI: remote snapshots, run reads ranges of the original layer")
    func gzipIndexedImage() async throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let proxy = try PythonHelper.faultProxy(upstreamPort: registry.port, mode: "pass")
        defer { proxy.stop() }
        let work = try RegistryTestSupport.tempDirectory("ctd-gzidx")
        defer { try? FileSystem.removeTree(work) }
        // 24 MiB no start-up path reads: what a lazy start must not download.
        let image = try BusyboxImage(directory: work, extraFiles: ["data/big.bin": RegistryTestSupport.randomBytes(24 << 20, seed: 9)])
        // skopeo compresses the layer with gzip on the way to the registry, as image tools push plain images.
        try RegistryTestSupport.run(
            RegistryTestSupport.skopeoBinary,
            [
                "--insecure-policy", "copy", "--dest-tls-verify=false", "oci:\(image.layout):\(image.tag)",
                "docker://\(registry.host)/test/plain:v1",
            ])
        let reference = "127.0.0.1:\(proxy.port)/test/plain:v1"

        let daemon = try DaemonHarness("ctd-gzidx")
        defer { daemon.tearDown() }
        try daemon.start()
        let indexed = try daemon.client().index(reference: reference)
        let layerBytes = indexed.layerBytes
        let servedBeforeRun = proxy.requests.filter { $0.hasPrefix("SENT ") }.count
        let containerd = try ContainerdHarness(
            "gzidx", proxySocket: daemon.containerdSocket, cri: true, plainHTTPRegistries: ["127.0.0.1:\(proxy.port)"])
        defer { containerd.tearDown() }
        try containerd.start()

        let pulled = try await Self.criPull(reference, containerd: containerd)
        #expect(!pulled.imageRef.isEmpty)
        #expect(try daemon.client().images().first?.format == "gzip-indexed", "\(daemon.log().suffix(2000))")
        let snapshots = try daemon.client().list()
        #expect(!snapshots.isEmpty && snapshots.allSatisfy { $0.kind == .committed && $0.labels["containerd.io/snapshot.ref"] != nil })

        // `ctr run` of a task that exits at once can lose its output on a loaded machine (its exit status still
        // counts: a failed read would make cat exit 1): an empty output is retried with a new container.
        var output = ""
        for attempt in 1...3 where !output.contains(BusyboxImage.hello) {
            output = try containerd.ctrOK(
                ["run", "--rm", "--snapshotter", Self.snapshotter, reference, "z\(attempt)", "/bin/cat", "/etc/hello.txt"],
                namespace: "k8s.io")
            #expect(output.isEmpty || output.contains(BusyboxImage.hello), "cat printed other bytes: \(output)")
        }
        #expect(output.contains(BusyboxImage.hello))
        let served = proxy.requests.dropFirst(servedBeforeRun).compactMap { line -> Int64? in
            let words = line.split(separator: " ")
            return words.first == "SENT" && words.count > 1 && line.contains("/blobs/") ? Int64(words[1]) : nil
        }.reduce(0, +)
        print("gzip-indexed image: layer of \(layerBytes) bytes, \(served) bytes of blobs served for pull + run")
        #expect(served * 4 < layerBytes, "the registry served \(served) of the layer's \(layerBytes) bytes")
    }
}
