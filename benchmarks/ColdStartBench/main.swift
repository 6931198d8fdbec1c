// ColdStartBench: cold start of a container from a large image, containerd's overlayfs snapshotter
// (pull + unpack + run) against snapshotterd (CRI pull of the nydus-style image: remote snapshots, then
// run with lazily fetched data), in one run, as a ratio, with the registry bytes each one moved.
//
// The image: a static busybox, `--image-mib` MiB of incompressible files the start-up never reads, and a
// start-up set (`--startup-files` x 1 MiB, a few percent of the image) the container reads whole before
// it prints "ready". Everything runs on 127.0.0.1: Debian's docker-registry (access log on, to count
// bytes), Debian's containerd 1.6 + runc in a temp root, snapshotterd as its `ondemand` proxy plugin.
// A second lazy run uses the same image converted with a prefetch table naming the start-up set
// (`snapctl convert --prefetch`), against a daemon and containerd of its own. A third runs the image
// unconverted (gzip layers, as skopeo pushes it) with a gzip index (`snapctl index`), also against a daemon
// and containerd of its own.
//
// A cold start happens once per containerd and daemon, and one container start on these shared machines
// varies by +-0.2 s, so the whole comparison is repeated `--runs` times, each run with a fresh containerd
// and snapshotterd (nothing pulled, nothing cached) against the same registry; the medians are compared.
//
// Usage: ColdStartBench --daemon .build/release/snapshotterd [--image-mib 512] [--startup-files 16] [--runs 3] [--profile near,region,far]
// --profile puts an emulated wide-area link (`LinkEmulator`: near, region, far) between every pull and the registry;
// with several, the image is built and pushed once and the comparison runs on each link in turn. On a link the
// cold start is also compared with its limit (`StartSetLimit`): the local floor + the bytes the start needs at
// the link's rate + one RTT per dependent round.
// COLDSTART_METRICS=1 prints the daemon's /metrics after the lazy run; COLDSTART_LOG_LEVEL sets its and containerd's log level.

import BlobStore
import CRIClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LinuxKernel
import Logging
import RAFSBuilder
import SwiftProtobuf
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

struct Settings {
    var daemon = ".build/release/snapshotterd"
    var imageMiB = 512
    var startupFiles = 16
    var runs = 3
    /// The links to measure on, in order; none: the registry on loopback.
    var profiles: [LinkEmulator.Profile] = []

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--daemon": daemon = iterator.next() ?? daemon
            case "--image-mib": imageMiB = Int(iterator.next() ?? "") ?? imageMiB
            case "--startup-files": startupFiles = Int(iterator.next() ?? "") ?? startupFiles
            case "--runs": runs = max(1, Int(iterator.next() ?? "") ?? runs)
            case "--profile":
                for name in (iterator.next() ?? "").split(whereSeparator: { $0 == "," || $0 == " " }) {
                    guard let named = LinkEmulator.Profile.named(String(name)) else {
                        fail("unknown profile \(name): near, region, far or short")
                    }
                    profiles.append(named)
                }
            default: fail("unknown argument \(argument)")
            }
        }
    }
}

/// A failed step inside the run: thrown, so that everything started so far is stopped before exiting.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ColdStartBench: \(message)\n".utf8))
    exit(1)
}

func now() -> Double { Double(monotonicNanoseconds()) / 1e9 }

let settings = Settings(CommandLine.arguments)
for tool in ["/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", "/usr/bin/docker-registry", "/usr/bin/skopeo", "/bin/busybox"]
where !FileManager.default.isExecutableFile(atPath: tool) {
    fail("\(tool) is missing (make setup)")
}
guard geteuid() == 0 else { fail("needs root (mounts, runc)") }
let daemonBinary = Tools.absolute(settings.daemon)
guard FileManager.default.isExecutableFile(atPath: daemonBinary) else { fail("no snapshotterd at \(daemonBinary)") }

/// What one run measured.
struct Figures {
    var baseline = 0.0
    var baselinePull = 0.0
    var baselineBytes: Int64 = 0
    var warm = 0.0
    var ours = 0.0
    var oursPull = 0.0
    var oursBytes: Int64 = 0
    var oursWarm = 0.0
    var hinted = 0.0
    var hintedBytes: Int64 = 0
    var zran = 0.0
    var zranPull = 0.0
    var zranBytes: Int64 = 0
}

let command =
    ProcessInfo.processInfo.environment["COLDSTART_TRACE"] == nil
    ? ["/bin/sh", "-c", "cat /app/start/* > /dev/null && echo ready"]
    : ["/bin/sh", "-c", "cat /proc/uptime; cat /app/start/* > /dev/null && echo ready; cat /proc/uptime"]
func uptime() -> String {
    ((try? String(contentsOfFile: "/proc/uptime", encoding: .utf8)) ?? "").split(separator: " ").first.map(String.init) ?? ""
}

/// Writes back every dirty page before a side's cold start: the overlayfs side leaves ~1 GiB of content and
/// unpacked files behind, and their writeback would otherwise stall the next side's containerd (whose
/// metadata store fsyncs every transaction) and runc.
func settleDisk() {
    sync()
}

/// One cold start on each side, each with a containerd (and snapshotterd) that has never seen the image.
func measure(run: Int, work: String, registry: BenchRegistry, daemonBinary: String, zranConfig: String) async throws -> Figures {
    var figures = Figures()
    let environment = try Environment(directory: work + "/run\(run)", daemonBinary: daemonBinary, registry: registry)
    defer { environment.tearDown() }
    try environment.startDaemonAndContainerd()

    // containerd's overlayfs snapshotter: everything is downloaded and unpacked before the run.
    let oci = "\(registry.clientHost)/bench/oci:v1"
    settleDisk()
    var mark = registry.bytesSent()
    var start = now()
    try environment.ctr(["image", "pull", "--plain-http", oci])
    figures.baselinePull = now() - start
    let baselineOutput = try environment.ctr(["run", "--rm", oci, "b1"] + command)
    figures.baseline = now() - start
    figures.baselineBytes = registry.bytesSent() - mark
    guard baselineOutput.contains("ready") else { throw BenchFailure(description: "overlayfs run printed \(baselineOutput)") }
    // The floor both pay: the same container again, image unpacked and its files in the page cache.
    start = now()
    try environment.ctr(["run", "--rm", oci, "b2"] + command)
    figures.warm = now() - start

    // snapshotterd: CRI pull (remote snapshots, nothing unpacked), then the run fetches what it reads.
    let reference = "\(registry.clientHost)/bench/nydus:v1"
    settleDisk()
    mark = registry.bytesSent()
    start = now()
    try await environment.criPull(reference)
    figures.oursPull = now() - start
    if ProcessInfo.processInfo.environment["COLDSTART_TRACE"] != nil { print("o1 starts \(uptime())") }
    let oursOutput = try environment.ctr(
        ["run", "--rm", "--snapshotter", "ondemand", reference, "o1"] + command, namespace: "k8s.io")
    figures.ours = now() - start
    if ProcessInfo.processInfo.environment["COLDSTART_TRACE"] != nil { print("o1 ended \(uptime()): \(oursOutput)") }
    figures.oursBytes = registry.bytesSent() - mark
    guard oursOutput.contains("ready") else { throw BenchFailure(description: "ondemand run printed \(oursOutput)") }
    if ProcessInfo.processInfo.environment["COLDSTART_METRICS"] != nil {
        print(try Tools.run("/usr/bin/curl", ["-s", "--unix-socket", environment.directory + "/api.sock", "http://localhost/metrics"]))
    }
    // Our floor: the same container again on our snapshots, its start-up set now local and in the page cache.
    start = now()
    _ = try environment.ctr(["run", "--rm", "--snapshotter", "ondemand", reference, "o2"] + command, namespace: "k8s.io")
    figures.oursWarm = now() - start

    // The same with the prefetch table: the pull starts fetching the start-up set while containerd creates
    // the container. Its data blob is the one above (only the bootstrap differs), so it runs against a
    // snapshotterd and containerd of their own that have never seen it.
    let second = try Environment(directory: work + "/run\(run)-prefetch", daemonBinary: daemonBinary, registry: registry)
    defer { second.tearDown() }
    try second.startDaemonAndContainerd()
    let hintedReference = "\(registry.clientHost)/bench/nydus-prefetch:v1"
    settleDisk()
    mark = registry.bytesSent()
    start = now()
    try await second.criPull(hintedReference)
    let hintedOutput = try second.ctr(
        ["run", "--rm", "--snapshotter", "ondemand", hintedReference, "p1"] + command, namespace: "k8s.io")
    figures.hinted = now() - start
    figures.hintedBytes = registry.bytesSent() - mark
    guard hintedOutput.contains("ready") else { throw BenchFailure(description: "ondemand run (prefetch table) printed \(hintedOutput)") }
    // The unconverted image (gzip layers) with its gzip index: the layer's ranges are inflated from checkpoints.
    let third = try Environment(
        directory: work + "/run\(run)-zran", daemonBinary: daemonBinary, registry: registry, daemonConfig: zranConfig)
    defer { third.tearDown() }
    try third.startDaemonAndContainerd()
    let gzipReference = "\(registry.clientHost)/bench/gz:v1"
    settleDisk()
    mark = registry.bytesSent()
    start = now()
    try await third.criPull(gzipReference)
    figures.zranPull = now() - start
    let zranOutput = try third.ctr(["run", "--rm", "--snapshotter", "ondemand", gzipReference, "z1"] + command, namespace: "k8s.io")
    figures.zran = now() - start
    figures.zranBytes = registry.bytesSent() - mark
    guard zranOutput.contains("ready") else { throw BenchFailure(description: "ondemand run (gzip index) printed \(zranOutput)") }
    if let hold = ProcessInfo.processInfo.environment["COLDSTART_HOLD"] {
        // For a look by hand: this run's processes stay up until the file `hold` is removed.
        FileManager.default.createFile(atPath: hold, contents: Data("\(work)/run\(run)\n".utf8))
        print("holding: containerd \(second.containerdAddress), image \(hintedReference); rm \(hold) to go on")
        while FileManager.default.fileExists(atPath: hold) { usleep(200_000) }
    }
    return figures
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

var template = Array("/tmp/coldstart-XXXXXX".utf8CString)
guard let directoryPointer = mkdtemp(&template) else { fail("mkdtemp failed") }
let work = String(cString: directoryPointer)
let registry = try BenchRegistry(directory: work)
/// Stops the shared registry and removes the work directory (each run tears down its own processes).
@MainActor func cleanUp(_ registry: BenchRegistry, _ work: String) {
    link?.stop()
    registry.stop()
    TestCleanup.unmountAll(under: work)
    try? FileSystem.removeTree(work)
}

let mib = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
var indexFigures = ""
/// The emulated link of the profile being measured; stopped with everything else.
var link: LinkEmulator?

/// Prints the medians of one link's runs, and there the comparison with the start's limit.
@MainActor func report(_ runs: [Figures], profile: LinkEmulator.Profile?, limit: StartSetLimit) {
    let baseline = median(runs.map(\.baseline))
    let ours = median(runs.map(\.ours))
    let hintedSeconds = median(runs.map(\.hinted))
    let zranSeconds = median(runs.map(\.zran))
    let baselineBytes = runs.map(\.baselineBytes).max() ?? 0
    let oursBytes = runs.map(\.oursBytes).max() ?? 0
    let hintedBytes = runs.map(\.hintedBytes).max() ?? 0
    let zranBytes = runs.map(\.zranBytes).max() ?? 0
    let perRun = { (side: KeyPath<Figures, Double>) in
        runs.map { String(format: "%.1f", $0.baseline / $0[keyPath: side]) }.joined(separator: ", ")
    }
    let where_ = profile.map { "link \($0)" } ?? "loopback registry"
    print("")
    print(
        "cold start of a container reading \(settings.startupFiles) MiB of a \(settings.imageMiB) MiB image (\(where_)), "
            + "median of \(runs.count) runs:")
    print(
        String(
            format: "  overlayfs (ctr pull + unpack + run):    %6.2f s  (pull+unpack %.2f s)  registry sent %@", baseline,
            median(runs.map(\.baselinePull)), mib(baselineBytes)))
    print(
        String(
            format: "  ondemand  (CRI pull + lazy run):        %6.2f s  (pull %.2f s)         registry sent %@", ours,
            median(runs.map(\.oursPull)), mib(oursBytes)))
    print(
        String(
            format: "  ondemand, image with a prefetch table:  %6.2f s                        registry sent %@", hintedSeconds,
            mib(hintedBytes)))
    let warm = median(runs.map(\.oursWarm))
    print(
        String(
            format: "  for reference, warm runs (data local, page cache hot): overlayfs %.2f s, ondemand %.2f s", median(runs.map(\.warm)),
            warm))
    let goal = profile?.name == "far" ? " (goal on far >= 60x)" : ""
    print(
        String(
            format: "  ratio: %.1fx faster (runs: %@)%@, %.1fx fewer bytes", baseline / ours, perRun(\.ours), goal,
            Double(baselineBytes) / Double(max(oursBytes, 1))))
    print(
        String(
            format: "  ratio with a prefetch table: %.1fx faster (runs: %@), %.1fx fewer bytes", baseline / hintedSeconds,
            perRun(\.hinted), Double(baselineBytes) / Double(max(hintedBytes, 1))))
    print(
        String(
            format: "  ondemand, unconverted image + gzip index: %6.2f s  (pull %.2f s)  registry sent %@", zranSeconds,
            median(runs.map(\.zranPull)), mib(zranBytes)))
    print(
        String(
            format: "  ratio unconverted + gzip index vs overlayfs: %.1fx faster (runs: %@; goal >= 30x), %.1fx fewer bytes",
            baseline / zranSeconds, perRun(\.zran), Double(baselineBytes) / Double(max(zranBytes, 1))))
    print(
        String(
            format: "  speed of unconverted + gzip index relative to the converted (RAFS) image: %.2f (goal >= 0.7)", ours / zranSeconds))
    print("  \(indexFigures)")
    guard let profile else { return }
    // The limit: the local floor (our warm run) + what the start needs at the link's rate + one RTT per round.
    let best = limit.seconds(floor: warm, bytesPerSecond: profile.bytesPerSecond, rttMilliseconds: profile.rttMilliseconds)
    print(
        String(
            format:
                "  link %@: the start needs %@ (%@ of file data, the rest manifest, config, bootstrap, blob meta); limit = warm %.2f s + %.2f s at %.0f Mbit/s + %d RTT = %.2f s",
            profile.name, mib(limit.bytes), mib(limit.dataBytes), warm, Double(limit.bytes) / profile.bytesPerSecond,
            profile.megabitsPerSecond, StartSetLimit.dependentRounds, best))
    print(
        String(
            format: "  link %@: cold start vs its limit: ondemand %.2f, with a prefetch table %.2f (goal >= 0.8)", profile.name,
            best / ours,
            best / hintedSeconds))
}

do {
    print("building a \(settings.imageMiB) MiB image with a \(settings.startupFiles) MiB start-up set ...")
    let image = try LargeImage(directory: work + "/image", imageMiB: settings.imageMiB, startupFiles: settings.startupFiles)
    let convertStart = now()
    let converted = try ImageConverter(options: .init(targetReference: "v1")).convert(source: image.layout, destination: work + "/nydus")
    print(String(format: "converted to nydus-style in %.1f s", now() - convertStart))
    let startFiles = ["/bin/busybox"] + (0..<settings.startupFiles).map { "/app/start/f\($0)" }
    let limit = try StartSetLimit(layout: work + "/nydus", converted: converted, files: startFiles, work: work + "/limit")
    // The same image with a prefetch table naming what the container reads at start-up (`snapctl convert
    // --prefetch`, nydus's --prefetch-policy fs): the daemon fetches those files as soon as it is pulled.
    var hinted = ImageConverter.Options(targetReference: "v1")
    hinted.build.prefetchPaths = ["/bin/busybox", "/app/start"]
    _ = try ImageConverter(options: hinted).convert(source: image.layout, destination: work + "/nydus-prefetch")

    try registry.start()
    // The unconverted image as image tools push it (skopeo compresses the layer with gzip), first: once the
    // uncompressed layer is in the registry, skopeo would reuse it instead.
    try Tools.run(
        "/usr/bin/skopeo",
        [
            "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-compress-format", "gzip", "oci:\(image.layout):v1",
            "docker://\(registry.host)/bench/gz:v1",
        ])
    try Tools.push(layout: image.layout, to: "\(registry.host)/bench/oci:v1")
    try Tools.push(layout: work + "/nydus", to: "\(registry.host)/bench/nydus:v1")
    try Tools.push(layout: work + "/nydus-prefetch", to: "\(registry.host)/bench/nydus-prefetch:v1")
    // The pushed layouts are not needed again: their space goes to the runs' content stores.
    for layout in [image.layout, work + "/nydus", work + "/nydus-prefetch"] { try? FileSystem.removeTree(layout) }
    // The gzip index of the unconverted image, which the zran side's daemons trust by digest (as hosts that did
    // not build it would).
    let published = try await GzipIndexPublisher(client: RegistryTestSupport.client(), logger: Logger(label: "bench")).publish(
        "\(registry.host)/bench/gz:v1", work: work + "/index")
    indexFigures = String(
        format: "gzip index: %@ of a %@ layer, built in %.1f s", mib(published.indexBytes), mib(published.layerBytes), published.seconds)
    print(indexFigures)
    let zranConfig = work + "/zran.toml"
    try "[zran]\ntrusted_indexes = [\"\(published.indexDigest)\"]\n".write(toFile: zranConfig, atomically: true, encoding: .utf8)

    for profile in settings.profiles.isEmpty ? [nil] : settings.profiles.map(Optional.some) {
        registry.pullHost = nil
        if let profile {
            // Everything pushed; from here on every pull crosses the emulated link.
            LinkEmulator.removeStale()
            let emulated = try LinkEmulator(profile: profile, upstreamPort: registry.port)
            link = emulated
            registry.pullHost = "127.0.0.1:\(emulated.port)"
            print("link: \(profile)")
        }
        let label = profile?.name ?? "loopback"
        try FileSystem.makeDirectories(work + "/" + label, mode: 0o700)
        var runs: [Figures] = []
        for run in 1...settings.runs {
            let figures = try await measure(
                run: run, work: work + "/" + label, registry: registry, daemonBinary: daemonBinary, zranConfig: zranConfig)
            print(
                String(
                    format:
                        "%@ run %d: overlayfs %.2f s (pull+unpack %.2f s), ondemand %.2f s (pull %.2f s), with prefetch table %.2f s, unconverted + gzip index %.2f s (pull %.2f s); %.1fx, %.1fx, %.1fx",
                    label, run, figures.baseline, figures.baselinePull, figures.ours, figures.oursPull, figures.hinted, figures.zran,
                    figures.zranPull, figures.baseline / figures.ours, figures.baseline / figures.hinted, figures.baseline / figures.zran))
            runs.append(figures)
        }
        report(runs, profile: profile, limit: limit)
        link?.stop()
        link = nil
        TestCleanup.unmountAll(under: work + "/" + label)
        try? FileSystem.removeTree(work + "/" + label)
    }
} catch {
    cleanUp(registry, work)
    fail("\(error)")
}
cleanUp(registry, work)
