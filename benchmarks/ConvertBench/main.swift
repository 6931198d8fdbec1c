// ConvertBench: copies about 300 MB of the host's /usr (bin and sbin) into a temp dir, then builds a chunked
// EROFS image of it two ways: mkfs.erofs --chunksize=1048576 from the directory, and our ImageBuilder from a
// tar of the same tree (RAFS v6 bootstrap + zstd-compressed, sha256-digested, deduplicated blob). Prints
// both throughputs (tree bytes / wall time, best of N rounds) and the ratio ours / mkfs.
//
// Usage: swift run -c release ConvertBench [rounds] [compression: zstd|lz4|none]

import Foundation
import LinuxKernel
import RAFS
import RAFSBuilder

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
let rounds = arguments.count > 1 ? max(1, Int(arguments[1]) ?? 3) : 3
let compression = arguments.count > 2 ? ChunkCompression(rawValue: arguments[2]) ?? .zstd : .zstd
let sources = ["/usr/bin", "/usr/sbin"]

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ConvertBench: \(message)\n".utf8))
    exit(1)
}

func now() -> Double { Double(monotonicNanoseconds()) / 1e9 }

@discardableResult
func run(_ tool: String, _ args: [String]) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = args
    process.standardOutput = FileHandle.nullDevice
    do { try process.run() } catch { fail("cannot run \(tool): \(error)") }
    process.waitUntilExit()
    return process.terminationStatus
}

func tool(_ name: String) -> String? {
    ["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"].map { $0 + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

guard let mkfs = tool("mkfs.erofs") else { fail("mkfs.erofs is missing (apt-get install erofs-utils)") }
let scratch = "/tmp/convertbench-\(getpid())"
defer { try? FileSystem.removeTree(scratch) }
let tree = scratch + "/tree"
do { try FileSystem.makeDirectories(tree + "/usr") } catch { fail("\(error)") }
guard run("/bin/cp", ["-a"] + sources + [tree + "/usr/"]) == 0 else { fail("cp -a failed") }
guard run("/bin/tar", ["--numeric-owner", "-C", tree, "-cf", scratch + "/tree.tar", "."]) == 0 else { fail("tar failed") }
let treeBytes = (try? FileSystem.usage(of: tree).bytes) ?? 0
let megabytes = Double(treeBytes) / 1e6
print("tree: \(sources.joined(separator: " ")), \(String(format: "%.1f", megabytes)) MB; best of \(rounds) rounds")

// Warm the page cache for both inputs.
_ = run("/bin/tar", ["-cf", "/dev/null", "-C", tree, "."])
_ = run("/bin/cat", [scratch + "/tree.tar"])

var mkfsBest = Double.infinity
var oursBest = Double.infinity
var summary = ""
for round in 0..<rounds {
    let image = scratch + "/mkfs-\(round).erofs"
    let started = now()
    guard run(mkfs, ["--quiet", "--chunksize=1048576", image, tree]) == 0 else { fail("mkfs.erofs failed") }
    mkfsBest = min(mkfsBest, now() - started)
    unlink(image)

    var options = BuildOptions(compression: compression)
    // mkfs.erofs does not fsync either: both sides measure building, not the disk.
    options.syncOutput = false
    let output = scratch + "/ours-\(round)"
    let begun = now()
    do {
        let result = try ImageBuilder(options: options).build(layers: [LayerInput(path: scratch + "/tree.tar")], outputDirectory: output)
        oursBest = min(oursBest, now() - begun)
        let blob = result.blobs.first
        summary =
            "ours: \(result.inodeCount) entries, blob \(String(format: "%.1f", Double(blob?.compressedSize ?? 0) / 1e6)) MB compressed "
            + "(\(compression.rawValue)), \(blob?.chunkCount ?? 0) chunks, \(result.dedupedChunks) deduplicated"
        if round == rounds - 1 {
            // What the daemon does per blob when it serves an image: the file layout for read-ahead bounds.
            let indexed = now()
            let ends = try ErofsImage(path: result.bootstrapPath).fileDataEnds()
            let files = ends.values.reduce(0) { $0 + $1.count }
            summary += String(format: "\nfile layout for read-ahead: %d files indexed in %.0f ms", files, (now() - indexed) * 1000)
        }
    } catch {
        fail("build failed: \(error)")
    }
    try? FileSystem.removeTree(output)
}
print(summary)
print(String(format: "mkfs.erofs --chunksize=1048576: %.2f s, %.1f MB/s", mkfsBest, megabytes / mkfsBest))
print(String(format: "ImageBuilder (tar -> RAFS v6):   %.2f s, %.1f MB/s", oursBest, megabytes / oursBest))
print(String(format: "ratio ours/mkfs: %.2f", mkfsBest / oursBest))

// Gzip index (zran) build of the same tree as a gzip layer vs `gzip -d` of it: the index build inflates the
// layer once (stopping at every deflate block boundary), reads its tar and hashes every chunk; the reference
// only inflates.
guard run("/bin/gzip", ["-6", "-k", "-n", scratch + "/tree.tar"]) == 0 else { fail("gzip failed") }
let gzipped = scratch + "/tree.tar.gz"
_ = run("/bin/cat", [gzipped])
var gunzipBest = Double.infinity
var indexBest = Double.infinity
var indexSummary = ""
for round in 0..<rounds {
    let started = now()
    guard run("/bin/gzip", ["-d", "-c", gzipped]) == 0 else { fail("gzip -d failed") }
    gunzipBest = min(gunzipBest, now() - started)
    var builder = ZranIndexBuilder()
    builder.options.syncOutput = false
    let output = scratch + "/zran-\(round)"
    let begun = now()
    do {
        let layer = LayerInput(path: gzipped, digest: "sha256:" + String(repeating: "0", count: 64))
        let result = try builder.build(layers: [layer], workDirectory: output)
        indexBest = min(indexBest, now() - begun)
        let packageBytes = result.packages.reduce(0) { $0 + $1.bytes.count }
        indexSummary = String(
            format: "gzip index: layer %.1f MB, index %.2f MB (bootstrap %.2f MB + package %.2f MB), span %d MiB",
            Double((try? FileSystem.lstat(gzipped).st_size) ?? 0) / 1e6, Double(packageBytes + result.bootstrapLayer.count) / 1e6,
            Double(result.bootstrapLayer.count) / 1e6, Double(packageBytes) / 1e6, Int(ZranIndexBuilder.defaultSpan >> 20))
    } catch {
        fail("index build failed: \(error)")
    }
    try? FileSystem.removeTree(output)
}
print(indexSummary)
print(String(format: "gzip -d (reference):            %.2f s, %.1f MB/s of tar", gunzipBest, megabytes / gunzipBest))
print(String(format: "gzip index build:               %.2f s, %.1f MB/s of tar", indexBest, megabytes / indexBest))
print(String(format: "ratio index build / gzip -d: %.2f (goal <= 1.5)", indexBest / gunzipBest))
