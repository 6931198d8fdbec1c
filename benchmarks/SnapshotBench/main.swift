import Foundation
import SnapshotterAPI

// Latency of snapshot calls through the real daemon's socket: 1,000 prepares and 1,000 removes, next to
// a reference run of the cheapest call (status) in the same process, over the same kept-alive connection.
// Run by `make bench-snapshots`; prints figures, asserts nothing.
#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var daemon = ".build/release/snapshotterd"
    var count = 1000

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--daemon": daemon = iterator.next() ?? daemon
            case "--count": count = iterator.next().flatMap(Int.init) ?? count
            default:
                FileHandle.standardError.write(Data("usage: SnapshotBench [--daemon PATH] [--count N]\n".utf8))
                exit(2)
            }
        }
    }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
}

func measure(_ count: Int, _ body: (Int) throws -> Void) rethrows -> [Double] {
    var samples: [Double] = []
    samples.reserveCapacity(count)
    for i in 0..<count {
        let start = DispatchTime.now().uptimeNanoseconds
        try body(i)
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
    }
    return samples.sorted()
}

func report(_ name: String, _ samples: [Double], reference: Double) {
    let p50 = percentile(samples, 0.50)
    let p99 = percentile(samples, 0.99)
    let label = name.padding(toLength: 9, withPad: " ", startingAt: 0)
    let figures = String(
        format: "n=%d  p50 %7.3f ms  p99 %7.3f ms  max %7.3f ms  p50/status-p50 %5.1fx",
        samples.count, p50, p99, samples.last ?? 0, p50 / reference)
    print(label + figures)
}

let options = Options(CommandLine.arguments)
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("snapbench-\(getpid())").path
try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: directory) }
let socket = directory + "/api.sock"
let daemon = Process()
daemon.executableURL = URL(fileURLWithPath: options.daemon)
daemon.arguments = [
    "--root", directory + "/root", "--socket", socket, "--config", "/dev/null", "--log-level", "warning", "--containerd-socket", "",
]
try daemon.run()
defer {
    kill(daemon.processIdentifier, SIGTERM)
    daemon.waitUntilExit()
}

let client = SnapshotterClient(socketPath: socket)
var ready = false
for _ in 0..<1000 where !ready {
    ready = (try? client.status()) != nil
    if !ready { usleep(10_000) }
}
guard ready else {
    print("snapshotterd did not start")
    exit(1)
}

// Warm-up, then the reference and the measured calls.
for i in 0..<50 {
    _ = try client.prepare(key: "warm\(i)")
    try client.remove(key: "warm\(i)")
}
_ = try client.prepare(key: "parent")
try client.commit(name: "parent-c", key: "parent")

let status = try measure(options.count) { _ in _ = try client.status() }
let prepare = try measure(options.count) { i in _ = try client.prepare(key: "bench\(i)", parent: "parent-c") }
let remove = try measure(options.count) { i in try client.remove(key: "bench\(i)") }

print("snapshot API latency over the Unix socket (\(ProcessInfo.processInfo.activeProcessorCount) cores, catalog synchronous=FULL)")
let reference = percentile(status, 0.5)
report("status", status, reference: reference)
report("prepare", prepare, reference: reference)
report("remove", remove, reference: reference)
let worst = max(percentile(prepare, 0.99), percentile(remove, 0.99))
print(String(format: "aim: p99 <= 20 ms for prepare and remove: %@ (worst p99 %.3f ms)", worst <= 20 ? "met" : "NOT met", worst))
