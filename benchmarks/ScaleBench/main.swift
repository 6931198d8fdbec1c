import Dispatch
import Foundation
import LinuxKernel
import OCI
import OCIRegistry
import SnapshotterAPI
import Synchronization
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

// The daemon at scale, through its socket: 1,000 images of 10 blobs each (10,000 blobs) pulled from a real
// docker-registry, 1,000 active snapshots on them with 200 mounted; then daemon RSS, start-up to ready,
// status/list/prepare/remove latency, and status under 1,500 idle clients plus a slowloris sender. The
// reference figures are the same calls on an empty catalog, measured first by the same process.
// Run by `make bench-scale`; prints figures with the goals beside them, asserts nothing.

struct Options {
    var daemon = ".build/release/snapshotterd"
    var images = 1000
    var blobsPerImage = 10
    var mounted = 200
    var idleClients = 1500
    /// Leaves the state directory (and its mounts) for a look, e.g. a profiled restart.
    var keep = false

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--daemon": daemon = iterator.next() ?? daemon
            case "--images": images = iterator.next().flatMap(Int.init) ?? images
            case "--blobs-per-image": blobsPerImage = iterator.next().flatMap(Int.init) ?? blobsPerImage
            case "--mounted": mounted = iterator.next().flatMap(Int.init) ?? mounted
            case "--idle-clients": idleClients = iterator.next().flatMap(Int.init) ?? idleClients
            case "--keep": keep = true
            default:
                FileHandle.standardError.write(
                    Data(
                        "usage: ScaleBench [--daemon PATH] [--images N] [--blobs-per-image N] [--mounted N] [--idle-clients N] [--keep]\n"
                            .utf8))
                exit(2)
            }
        }
    }
}

/// Prints a line at once (stdout to a file is block-buffered, and this bench runs for minutes).
func say(_ text: String) { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

func percentile(_ samples: [Double], _ p: Double) -> Double {
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, max(0, Int((Double(sorted.count) * p).rounded(.up)) - 1))]
}

/// Milliseconds each call of `body` took.
func measure(_ count: Int, _ body: (Int) throws -> Void) rethrows -> [Double] {
    try (0..<count).map { index in
        let start = now()
        try body(index)
        return now() - start
    }
}

func line(_ name: String, _ figure: String, goal: String, reference: String = "") {
    let label = name.padding(toLength: 34, withPad: " ", startingAt: 0)
    let value = figure.padding(toLength: 16, withPad: " ", startingAt: 0)
    say("\(label)\(value)goal \(goal)\(reference.isEmpty ? "" : "   (\(reference))")")
}

func milliseconds(_ value: Double) -> String { String(format: "%.2f ms", value) }

/// One uncompressed tar holding one small regular file: an image layer whose digest is unique to `name`.
func tarLayer(name: String) -> [UInt8] {
    let content = Array("layer \(name)\n".utf8)
    var header = [UInt8](repeating: 0, count: 512)
    func put(_ text: String, at offset: Int) { for (index, byte) in text.utf8.enumerated() { header[offset + index] = byte } }
    func octal(_ value: Int, at offset: Int, width: Int) {
        let digits = String(value, radix: 8)
        put(String(repeating: "0", count: width - 1 - digits.count) + digits, at: offset)
    }
    put(name, at: 0)
    octal(0o644, at: 100, width: 8)
    octal(0, at: 108, width: 8)
    octal(0, at: 116, width: 8)
    octal(content.count, at: 124, width: 12)
    octal(1_700_000_000, at: 136, width: 12)
    header[156] = UInt8(ascii: "0")
    put("ustar\u{0}00", at: 257)
    put("        ", at: 148)
    octal(header.reduce(0) { $0 + Int($1) }, at: 148, width: 7)
    let padding = (512 - content.count % 512) % 512
    return header + content + [UInt8](repeating: 0, count: padding + 1024)
}

/// Pushes `count` plain OCI images of `blobs` layers each (all layers distinct) as `scale/img-N:v1`.
func seedRegistry(_ registry: String, count: Int, blobs: Int) async throws {
    let client = RegistryTestSupport.client()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for image in 0..<count {
            if image >= 8 { try await group.next() }
            group.addTask {
                let repository = "scale/img-\(image)"
                var layers: [Descriptor] = []
                var diffIDs: [String] = []
                for index in 0..<blobs {
                    let bytes = tarLayer(name: "img\(image)/layer\(index)")
                    let descriptor = Descriptor(mediaType: MediaType.ociLayer, digest: Digest.sha256(of: bytes), size: Int64(bytes.count))
                    try await client.pushBlob(registry: registry, repository: repository, descriptor: descriptor, from: .bytes(bytes))
                    layers.append(descriptor)
                    diffIDs.append("\"\(descriptor.digest)\"")
                }
                let config = Array(
                    #"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[\#(diffIDs.joined(separator: ","))]}}"#
                        .utf8)
                let configDescriptor = Descriptor(
                    mediaType: MediaType.ociConfig, digest: Digest.sha256(of: config), size: Int64(config.count))
                try await client.pushBlob(registry: registry, repository: repository, descriptor: configDescriptor, from: .bytes(config))
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                let manifest = Array(try encoder.encode(ImageManifest(config: configDescriptor, layers: layers)))
                try await client.pushManifest(
                    registry: registry, repository: repository, reference: "v1", bytes: manifest, mediaType: MediaType.ociManifest)
            }
        }
        try await group.waitForAll()
    }
}

/// The real daemon on `directory`, started and stopped by the bench.
final class Daemon {
    let binary: String
    let directory: String
    var socket: String { directory + "/api.sock" }
    var process: Process?

    init(binary: String, directory: String) {
        self.binary = binary
        self.directory = directory
    }

    /// Starts the daemon; returns the milliseconds from spawn until `status` answered.
    @discardableResult
    func start() throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--root", directory + "/root", "--socket", socket, "--config", "/dev/null", "--containerd-socket",
            directory + "/containerd.sock",
            "--log-level", "warning",
        ]
        FileManager.default.createFile(atPath: directory + "/daemon.log", contents: nil)
        let log = FileHandle(forWritingAtPath: directory + "/daemon.log")
        log?.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        let start = now()
        try process.run()
        self.process = process
        let client = SnapshotterClient(socketPath: socket)
        while now() - start < 600_000 {
            if (try? client.status()) != nil { return now() - start }
            guard process.isRunning else { break }
            usleep(2_000)
        }
        throw RegistryTestSupport.TestFailure("snapshotterd did not become ready; see \(directory)/daemon.log")
    }

    func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
    }

    var pid: Int32 { process?.processIdentifier ?? 0 }

    /// Resident set size in KiB (VmRSS).
    var residentKilobytes: Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }

    var openDescriptors: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }
}

/// A raw client socket to the API, connected and then left alone (or fed by the slowloris).
func connectRaw(_ path: String) -> Int32 { (try? UnixSocket.dial(path)) ?? -1 }

let options = Options(CommandLine.arguments)
var limit = rlimit()
getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
limit.rlim_cur = limit.rlim_max
setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("scalebench-\(getpid())").path
try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
try FileManager.default.createDirectory(atPath: directory + "/registry", withIntermediateDirectories: true)
let registry = try TestRegistry(directory: directory + "/registry")
let daemon = Daemon(binary: options.daemon, directory: directory)
defer {
    daemon.stop()
    registry.stop()
    if options.keep { say("kept \(directory) (daemon stopped, mounts left)") }
    for target in (try? FileManager.default.contentsOfDirectory(atPath: directory + "/targets")) ?? [] where !options.keep {
        umount2(directory + "/targets/" + target, Int32(MNT_DETACH))
    }
    for image in (try? FileManager.default.contentsOfDirectory(atPath: directory + "/root/mnt")) ?? [] where !options.keep {
        umount2(directory + "/root/mnt/" + image, Int32(MNT_DETACH))
    }
    if !options.keep {
        // The fd holder outlives a daemon that had images mounted, by design.
        TestCleanup.killProcesses(withArgument: directory + "/root/fdholder.sock")
        umount2(directory + "/root/ondemand", Int32(MNT_DETACH))
        try? FileManager.default.removeItem(atPath: directory)
    }
}

say("ScaleBench: \(options.images) images x \(options.blobsPerImage) blobs, \(options.images) active snapshots, \(options.mounted) mounted")
var started = now()
try await seedRegistry(registry.host, count: options.images, blobs: options.blobsPerImage)
say(String(format: "seeded the registry in %.1f s", (now() - started) / 1000))

// Reference: the same calls on an empty catalog.
let emptyReady = try daemon.start()
let client = SnapshotterClient(socketPath: daemon.socket)
let emptyRSS = daemon.residentKilobytes
let emptyStatus = percentile(try measure(200) { _ in _ = try client.status() }, 0.99)
let emptyList = percentile(try measure(200) { _ in _ = try client.list() }, 0.99)
let emptyPrepare = percentile(try measure(200) { index in _ = try client.prepare(key: "ref-\(index)") }, 0.99)
let emptyRemove = percentile(try measure(200) { index in try client.remove(key: "ref-\(index)") }, 0.99)

// Scale: pull every image (4 at a time), one active snapshot on each, mount some.
started = now()
let failures = Mutex<[String]>([])
let apiSocket = daemon.socket
let registryHost = registry.host
let imageCount = options.images
DispatchQueue.concurrentPerform(iterations: 4) { worker in
    let pullClient = SnapshotterClient(socketPath: apiSocket)
    for image in stride(from: worker, to: imageCount, by: 4) {
        do {
            _ = try pullClient.pull(reference: "\(registryHost)/scale/img-\(image):v1")
        } catch {
            failures.withLock { $0.append("img-\(image): \(error)") }
        }
    }
}
let pullSeconds = (now() - started) / 1000
if let failure = failures.withLock({ $0.first }) { throw RegistryTestSupport.TestFailure("pull failed: \(failure)") }
say(
    String(
        format: "pulled %d images in %.1f s (%.0f ms each, 4 at a time)", options.images, pullSeconds,
        pullSeconds * 1000 / Double(options.images)))
try FileManager.default.createDirectory(atPath: directory + "/targets", withIntermediateDirectories: true)
for image in 0..<options.images {
    _ = try client.prepare(key: "active-\(image)", image: "\(registry.host)/scale/img-\(image):v1")
    if image < options.mounted { _ = try client.mount(key: "active-\(image)", target: directory + "/targets/\(image)") }
}
let status = try client.status()
say("catalog: \(status.images?.count ?? 0) images, \(status.snapshots.values.reduce(0, +)) snapshots, \(status.mounts.count) mounts")

let scaleStatus = percentile(try measure(200) { _ in _ = try client.status() }, 0.99)
let scaleList = percentile(try measure(200) { _ in _ = try client.list() }, 0.99)
let scalePrepare = percentile(try measure(200) { index in _ = try client.prepare(key: "scale-\(index)") }, 0.99)
let scaleRemove = percentile(try measure(200) { index in try client.remove(key: "scale-\(index)") }, 0.99)
let rssLoaded = daemon.residentKilobytes

// Restart on the full catalog (mounts stay, as after a daemon upgrade).
daemon.stop()
let ready = try daemon.start()
let rssRestarted = daemon.residentKilobytes

// 1,500 idle clients and a slowloris while a normal client calls status 100 times.
let fdsBefore = daemon.openDescriptors
var idle: [Int32] = []
for _ in 0..<options.idleClients { idle.append(connectRaw(daemon.socket)) }
let slowloris = connectRaw(daemon.socket)
let stopDrip = Atomic<Bool>(false)
let dripper = Thread {
    _ = send(slowloris, "GET /v1/status HTTP/1.1\r\nHost: x\r\n", 35, Int32(MSG_NOSIGNAL))
    while !stopDrip.load(ordering: .relaxed) {
        if send(slowloris, "X: y\r\n", 6, Int32(MSG_NOSIGNAL)) < 0 { break }
        usleep(100_000)
    }
}
dripper.start()
var stormErrors = 0
let storm = measure(100) { _ in
    do { _ = try SnapshotterClient(socketPath: daemon.socket).status() } catch { stormErrors += 1 }
}
let fdsDuring = daemon.openDescriptors
stopDrip.store(true, ordering: .relaxed)
for fd in idle { close(fd) }
close(slowloris)

say("")
say("figure".padding(toLength: 34, withPad: " ", startingAt: 0) + "at scale".padding(toLength: 16, withPad: " ", startingAt: 0) + "goal")
line("daemon RSS (loaded)", "\(rssLoaded / 1024) MiB", goal: "<= 64 MiB", reference: "empty catalog \(emptyRSS / 1024) MiB")
line("daemon RSS (after restart)", "\(rssRestarted / 1024) MiB", goal: "<= 64 MiB")
line("start-up to ready", milliseconds(ready), goal: "<= 2000 ms", reference: "empty catalog \(milliseconds(emptyReady))")
line("status p99", milliseconds(scaleStatus), goal: "<= 50 ms", reference: "empty \(milliseconds(emptyStatus))")
line("list p99", milliseconds(scaleList), goal: "<= 50 ms", reference: "empty \(milliseconds(emptyList))")
line("prepare p99", milliseconds(scalePrepare), goal: "<= 2 ms", reference: "empty \(milliseconds(emptyPrepare))")
line("remove p99", milliseconds(scaleRemove), goal: "<= 2 ms", reference: "empty \(milliseconds(emptyRemove))")
line(
    "status p99, \(options.idleClients) idle + slowloris", milliseconds(percentile(storm, 0.99)), goal: "<= 500 ms",
    reference: "quiet \(milliseconds(scaleStatus))")
line("errors to the normal client", "\(stormErrors) of 100", goal: "0")
line("daemon fds under the storm", "\(fdsDuring)", goal: "bounded", reference: "before \(fdsBefore), api.max_connections 512")
