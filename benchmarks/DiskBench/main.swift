import Foundation
import LinuxKernel
import SnapshotterAPI
import Synchronization
import TestSupport

// make bench-disk: the cache budget under a workload bigger than it, measured in one run against the same
// workload without a budget.
//  Four images of `budget` MiB each (4x the budget in total), each with a hot set (16 files, 1/8 of the budget)
//  and one big cold file, served lazily by the real daemon (fanotify front end) from a loopback
//  docker-registry. Each round reads every image in turn: its whole hot set, then a 4 MiB slice of its cold
//  file never read before. Page caches are dropped before each read, so every read reaches the daemon.
//  Printed: the peak of the cache's chunk bytes and of its blocks on disk against budget + one chunk per
//  fetch in flight; the hot set's hit rate after two warm-up rounds; eviction cost per GiB evicted; hot-set
//  read throughput with the budget against the same reads without one.
// Usage: DiskBench [budget-MiB] [rounds]

let arguments = CommandLine.arguments.dropFirst()
let budgetMiB = arguments.first.flatMap(Int.init) ?? 128
let rounds = arguments.dropFirst().first.flatMap(Int.init) ?? 8
let warmUpRounds = 2
let imageCount = 4
let hotFiles = 16
let hotFileBytes = (budgetMiB << 20) / 8 / hotFiles
let coldSlice = 4 << 20
let coldBytes = (budgetMiB << 20) - hotFiles * hotFileBytes
let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
/// The daemon's defaults the budget is judged by: 1 MiB chunks, 8 fetches at once.
let chunkBytes = 1 << 20
let concurrentFetches = 8

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Drops the page cache of one file (its EROFS pages): the next read goes to the kernel, and the daemon.
func dropCache(_ path: String) {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return }
    _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
    close(fd)
}

/// Reads `count` bytes at `offset` (all of the file when nil); returns the bytes read.
func read(_ path: String, offset: Int = 0, count: Int? = nil) -> Int {
    let fd = open(path, O_RDONLY)
    precondition(fd >= 0, "open \(path): errno \(errno)")
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var total = 0
    while count == nil || total < count! {
        let want = min(buffer.count, (count ?? Int.max) - total)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(offset + total)) }
        precondition(n >= 0, "read \(path): errno \(errno)")
        if n == 0 { break }
        total += n
    }
    return total
}

/// One counter or gauge of the daemon's /metrics.
func metric(_ client: SnapshotterClient, _ name: String) -> Double {
    let text = (try? client.metrics()) ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
    return line.flatMap { Double($0.split(separator: " ")[1]) } ?? -1
}

/// Half-compressible bytes (zstd about 2:1, like binaries).
func content(_ size: Int, seed: UInt64) -> [UInt8] {
    var bytes = RegistryTestSupport.randomBytes(size, seed: seed)
    bytes.withUnsafeMutableBytes { raw in
        var offset = 32 * 1024
        while offset < raw.count {
            let end = min(offset + 32 * 1024, raw.count)
            raw.baseAddress!.advanced(by: offset).initializeMemory(as: UInt8.self, repeating: 0, count: end - offset)
            offset += 64 * 1024
        }
    }
    return bytes
}

struct Figures {
    var hotBytes = 0
    var hotSeconds = 0.0
    var hits = 0.0
    var misses = 0.0
    var peakStored = 0.0
    var peakDisk: Int64 = 0
    var evictedBytes = 0.0
    var evictionSeconds = 0.0
    var coldSeconds = 0.0
}

let directory = "/var/tmp/diskbench-\(getpid())"
try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
defer { try? FileSystem.removeTree(directory) }
let registry = try TestRegistry()
defer { registry.stop() }
print("building \(imageCount) images of \(budgetMiB) MiB (hot set \(hotFiles) x \(hotFileBytes >> 10) KiB each) ...")
var pushed: [String] = []
for index in 0..<imageCount {
    var files: [String: [UInt8]] = ["cold.bin": content(coldBytes, seed: UInt64(1000 + index))]
    for file in 0..<hotFiles { files["hot/f\(file)"] = content(hotFileBytes, seed: UInt64(index * 100 + file + 1)) }
    let image = try NydusTestImage(directory: directory + "/image-\(index)", files: files)
    try await image.push(with: RegistryTestSupport.client(), registry: registry.host, repository: "disk\(index)", tag: "v1")
    try? FileSystem.removeTree(directory + "/image-\(index)")
    pushed.append("\(registry.host)/disk\(index):v1")
}
let references = pushed

/// One run of the workload on a fresh daemon, with or without a budget.
@MainActor func run(budget: Int?) throws -> Figures {
    let root = directory + "/root-\(budget == nil ? "unlimited" : "budget")"
    let socket = root + ".sock"
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binDirectory + "/snapshotterd")
    process.arguments =
        [
            "--root", root, "--socket", socket, "--config", "/dev/null", "--front-end", "fanotify", "--log-level", "warning",
            "--containerd-socket", "", "--readahead-bytes", "0", "--gc-interval", "0",
        ] + (budget.map { ["--cache-max-bytes", "\($0)"] } ?? [])
    try process.run()
    defer {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        TestCleanup.unmountAll(under: root)
        TestCleanup.killProcesses(withArgument: root + "/fdholder.sock")
    }
    let client = SnapshotterClient(socketPath: socket)
    var ready = false
    for _ in 0..<1500 where !ready {
        ready = (try? client.status()) != nil
        if !ready { usleep(20_000) }
    }
    precondition(ready, "snapshotterd did not start")
    var mounts: [String] = []
    for reference in references { mounts.append(try client.pull(reference: reference).image.mountpoint) }

    // Disk use sampled every 20 ms (blocks of the backing files, as du).
    let sampling = Atomic<Bool>(true)
    let peakDisk = Atomic<Int64>(0)
    let sampler = Thread {
        while sampling.load(ordering: .relaxed) {
            if let usage = try? FileSystem.usage(of: root + "/cache") {
                var seen = peakDisk.load(ordering: .relaxed)
                while usage.bytes > seen {
                    let (exchanged, original) = peakDisk.compareExchange(expected: seen, desired: usage.bytes, ordering: .relaxed)
                    if exchanged { break }
                    seen = original
                }
            }
            usleep(20_000)
        }
    }
    sampler.start()

    var figures = Figures()
    let started = (metric(client, "snapshotter_evicted_bytes_total"), metric(client, "snapshotter_eviction_seconds_total"))
    for round in 0..<rounds {
        for (index, mount) in mounts.enumerated() {
            let hot = (0..<hotFiles).map { mount + "/hot/f\($0)" }
            hot.forEach(dropCache)
            let before = (metric(client, "snapshotter_chunk_hits_total"), metric(client, "snapshotter_chunk_misses_total"))
            let begin = now()
            var bytes = 0
            for path in hot { bytes += read(path) }
            let seconds = now() - begin
            precondition(bytes == hotFiles * hotFileBytes, "image \(index): short hot read")
            if round >= warmUpRounds {
                figures.hotBytes += bytes
                figures.hotSeconds += seconds
                figures.hits += metric(client, "snapshotter_chunk_hits_total") - before.0
                figures.misses += metric(client, "snapshotter_chunk_misses_total") - before.1
            }
            dropCache(mount + "/cold.bin")
            let coldBegin = now()
            let offset = (round * coldSlice) % max(coldSlice, coldBytes - coldSlice)
            precondition(read(mount + "/cold.bin", offset: offset, count: coldSlice) == coldSlice, "image \(index): short cold read")
            figures.coldSeconds += now() - coldBegin
        }
    }
    sampling.store(false, ordering: .relaxed)
    while !sampler.isFinished { usleep(5000) }
    figures.peakDisk = peakDisk.load(ordering: .relaxed)
    figures.peakStored = metric(client, "snapshotter_cache_peak_bytes")
    figures.evictedBytes = metric(client, "snapshotter_evicted_bytes_total") - started.0
    figures.evictionSeconds = metric(client, "snapshotter_eviction_seconds_total") - started.1
    return figures
}

let budget = budgetMiB << 20
print("reading \(rounds) rounds without a budget (the reference) ...")
let reference = try run(budget: nil)
print("reading \(rounds) rounds with a budget of \(budgetMiB) MiB ...")
let budgeted = try run(budget: budget)

let mib = 1048576.0
let limit = budget + concurrentFetches * chunkBytes
let hitRate = budgeted.hits / max(1, budgeted.hits + budgeted.misses) * 100
let referenceHitRate = reference.hits / max(1, reference.hits + reference.misses) * 100
let evictedGiB = budgeted.evictedBytes / (mib * 1024)
let throughput = Double(budgeted.hotBytes) / mib / budgeted.hotSeconds
let referenceThroughput = Double(reference.hotBytes) / mib / reference.hotSeconds
let hotSetMiB = imageCount * hotFiles * hotFileBytes >> 20
print("workload: \(imageCount) images x \(budgetMiB) MiB = \(imageCount * budgetMiB) MiB (4x the budget)")
print("hot set \(hotSetMiB) MiB; \(rounds) rounds, \(warmUpRounds) of warm-up; grace 2000 ms (the default)")
print(
    String(
        format:
            "disk use: peak chunk bytes %.1f MiB, peak blocks on disk %.1f MiB; limit budget + %d fetches x 1 MiB chunk = %.0f MiB (%@)",
        budgeted.peakStored / mib, Double(budgeted.peakDisk) / mib, concurrentFetches, Double(limit) / mib,
        budgeted.peakStored <= Double(limit) && budgeted.peakDisk <= Int64(limit) ? "held" : "EXCEEDED"))
print(
    String(
        format: "without a budget: peak chunk bytes %.1f MiB, peak blocks on disk %.1f MiB", reference.peakStored / mib,
        Double(reference.peakDisk) / mib))
print(
    String(
        format: "hot-set hit rate after warm-up: %.1f%% (goal >= 95%%); without a budget %.1f%%", hitRate, referenceHitRate))
print(
    String(
        format: "eviction: %.0f MiB evicted in %.3f s of passes: %.3f s per GiB evicted", budgeted.evictedBytes / mib,
        budgeted.evictionSeconds, evictedGiB > 0 ? budgeted.evictionSeconds / evictedGiB : 0))
print(
    String(
        format: "hot-set read throughput: %.0f MiB/s with the budget, %.0f MiB/s without; ratio %.2f (goal >= 0.9)", throughput,
        referenceThroughput, throughput / referenceThroughput))
print(
    String(
        format: "cold slices (always fetched): %.2f s with the budget, %.2f s without", budgeted.coldSeconds, reference.coldSeconds))
