// ColdStartBench: cold start of a container from a large image, containerd's overlayfs snapshotter
// (pull + unpack + run) against snapshotterd (CRI pull of the nydus-style image: remote snapshots, then
// run with lazily fetched data), in one run, as a ratio, with the registry bytes each one moved.
//
// The image: a static busybox, `--image-mib` MiB of incompressible files the start-up never reads, and a
// start-up set (`--startup-files` x 1 MiB, a few percent of the image) the container reads whole before
// it prints "ready". Everything runs on 127.0.0.1: Debian's docker-registry (access log on, to count
// bytes), Debian's containerd 1.6 + runc in a temp root, snapshotterd as its `ondemand` proxy plugin.
// A second lazy run uses the same image converted with a prefetch table naming the start-up set
// (`snapctl convert --prefetch`), against a registry, daemon and containerd of its own.
//
// Usage: ColdStartBench --daemon .build/release/snapshotterd [--image-mib 512] [--startup-files 16]
// COLDSTART_METRICS=1 prints the daemon's /metrics after the lazy run; COLDSTART_LOG_LEVEL sets its log level.

import BlobStore
import CRIClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import SystemSupport

#if canImport(Glibc)
import Glibc
#endif

struct Settings {
    var daemon = ".build/release/snapshotterd"
    var imageMiB = 512
    var startupFiles = 16

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--daemon": daemon = iterator.next() ?? daemon
            case "--image-mib": imageMiB = Int(iterator.next() ?? "") ?? imageMiB
            case "--startup-files": startupFiles = Int(iterator.next() ?? "") ?? startupFiles
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

var template = Array("/tmp/coldstart-XXXXXX".utf8CString)
guard let directoryPointer = mkdtemp(&template) else { fail("mkdtemp failed") }
let work = String(cString: directoryPointer)
let environment = try Environment(directory: work, daemonBinary: daemonBinary)
defer { environment.tearDown() }

do {
    print("building a \(settings.imageMiB) MiB image with a \(settings.startupFiles) MiB start-up set ...")
    let image = try LargeImage(directory: work + "/image", imageMiB: settings.imageMiB, startupFiles: settings.startupFiles)
    let convertStart = now()
    _ = try ImageConverter(options: .init(targetReference: "v1")).convert(source: image.layout, destination: work + "/nydus")
    print(String(format: "converted to nydus-style in %.1f s", now() - convertStart))
    // The same image with a prefetch table naming what the container reads at start-up (`snapctl convert
    // --prefetch`, nydus's --prefetch-policy fs): the daemon fetches those files as soon as it is pulled.
    var hinted = ImageConverter.Options(targetReference: "v1")
    hinted.build.prefetchPaths = ["/bin/busybox", "/app/start"]
    _ = try ImageConverter(options: hinted).convert(source: image.layout, destination: work + "/nydus-prefetch")

    try environment.startRegistry()
    try Tools.push(layout: image.layout, to: "\(environment.registryHost)/bench/oci:v1")
    try Tools.push(layout: work + "/nydus", to: "\(environment.registryHost)/bench/nydus:v1")
    try environment.startDaemonAndContainerd()

    let command = ["/bin/sh", "-c", "cat /app/start/* > /dev/null && echo ready"]

    // containerd's overlayfs snapshotter: everything is downloaded and unpacked before the run.
    var mark = environment.registryBytes()
    var start = now()
    try environment.ctr(["image", "pull", "--plain-http", "\(environment.registryHost)/bench/oci:v1"])
    let baselinePull = now() - start
    let baselineOutput = try environment.ctr(["run", "--rm", "\(environment.registryHost)/bench/oci:v1", "b1"] + command)
    let baseline = now() - start
    let baselineBytes = environment.registryBytes() - mark
    guard baselineOutput.contains("ready") else { throw BenchFailure(description: "overlayfs run printed \(baselineOutput)") }
    // The floor both pay: the same container again, image unpacked and its files in the page cache.
    start = now()
    try environment.ctr(["run", "--rm", "\(environment.registryHost)/bench/oci:v1", "b2"] + command)
    let warm = now() - start

    // snapshotterd: CRI pull (remote snapshots, nothing unpacked), then the run fetches what it reads.
    let reference = "\(environment.registryHost)/bench/nydus:v1"
    mark = environment.registryBytes()
    start = now()
    try await environment.criPull(reference)
    let oursPull = now() - start
    let oursOutput = try environment.ctr(
        ["run", "--rm", "--snapshotter", "ondemand", reference, "o1"] + command, namespace: "k8s.io")
    let ours = now() - start
    let oursBytes = environment.registryBytes() - mark
    guard oursOutput.contains("ready") else { throw BenchFailure(description: "ondemand run printed \(oursOutput)") }
    if ProcessInfo.processInfo.environment["COLDSTART_METRICS"] != nil {
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        curl.arguments = ["-s", "--unix-socket", work + "/api.sock", "http://localhost/metrics"]
        try curl.run()
        curl.waitUntilExit()
    }
    // Our floor: the same container again on our snapshots, its start-up set now local and in the page cache.
    start = now()
    _ = try environment.ctr(["run", "--rm", "--snapshotter", "ondemand", reference, "o2"] + command, namespace: "k8s.io")
    let oursWarm = now() - start

    // The same with the prefetch table: the pull starts fetching the start-up set while containerd creates
    // the container. Its data blob is the one above (only the bootstrap differs), so it runs against a
    // registry, snapshotterd and containerd of its own that have never seen it.
    try FileManager.default.createDirectory(atPath: work + "/second", withIntermediateDirectories: true)
    let second = try Environment(directory: work + "/second", daemonBinary: daemonBinary)
    defer { second.tearDown() }
    try second.startRegistry()
    try Tools.push(layout: work + "/nydus-prefetch", to: "\(second.registryHost)/bench/nydus-prefetch:v1")
    try second.startDaemonAndContainerd()
    let hintedReference = "\(second.registryHost)/bench/nydus-prefetch:v1"
    mark = second.registryBytes()
    start = now()
    try await second.criPull(hintedReference)
    let hintedOutput = try second.ctr(
        ["run", "--rm", "--snapshotter", "ondemand", hintedReference, "p1"] + command, namespace: "k8s.io")
    let hintedSeconds = now() - start
    let hintedBytes = second.registryBytes() - mark
    guard hintedOutput.contains("ready") else { throw BenchFailure(description: "ondemand run (prefetch table) printed \(hintedOutput)") }

    let mib = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
    print("")
    print("cold start of a container reading \(settings.startupFiles) MiB of a \(settings.imageMiB) MiB image (loopback registry):")
    print(
        String(
            format: "  overlayfs (ctr pull + unpack + run): %7.2f s  (pull+unpack %.2f s)  registry sent %@", baseline, baselinePull,
            mib(baselineBytes)))
    print(
        String(
            format: "  ondemand  (CRI pull + lazy run):     %7.2f s  (pull %.2f s)          registry sent %@", ours, oursPull,
            mib(oursBytes)))
    print(
        String(
            format: "  ondemand, image with a prefetch table:  %7.2f s                        registry sent %@", hintedSeconds,
            mib(hintedBytes)))
    print(String(format: "  for reference, warm runs (data local, page cache hot): overlayfs %.2f s, ondemand %.2f s", warm, oursWarm))
    print(String(format: "  ratio: %.1fx faster, %.1fx fewer bytes", baseline / ours, Double(baselineBytes) / Double(max(oursBytes, 1))))
    print(
        String(
            format: "  ratio with a prefetch table: %.1fx faster, %.1fx fewer bytes", baseline / hintedSeconds,
            Double(baselineBytes) / Double(max(hintedBytes, 1))))
} catch {
    environment.tearDown()
    fail("\(error)")
}
