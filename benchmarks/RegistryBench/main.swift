// RegistryBench: downloads one 256 MiB blob from a local docker-registry with the project's RegistryClient
// (streamed to a file, SHA-256 verified, fsynced) and with the curl CLI (same blob, same registry, to a file),
// and prints both throughputs, the CPU each side and the registry used, and their ratio. Everything runs on
// 127.0.0.1 in a temp dir.
//
// Usage: swift run -c release RegistryBench [MiB] [rounds]

import Digests
import Foundation
import LinuxKernel
import Logging
import OCI
import OCIRegistry

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments
let mebibytes = arguments.count > 1 ? Int(arguments[1]) ?? 256 : 256
let rounds = arguments.count > 2 ? Int(arguments[2]) ?? 3 : 3
let size = mebibytes << 20

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("RegistryBench: \(message)\n".utf8))
    exit(1)
}

func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func now() -> Double { Double(monotonicNanoseconds()) / 1e9 }

/// CPU seconds (user + system) used so far by this process (`RUSAGE_SELF`) or its waited-for children.
func cpuSeconds(_ who: __rusage_who) -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(who.rawValue), &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// CPU seconds used so far by another process, from /proc/<pid>/stat (fields 14 and 15, in clock ticks).
func cpuSeconds(pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return 0 }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

var template = Array("/tmp/registry-bench-XXXXXX".utf8CString)
guard let dirPointer = mkdtemp(&template) else { fail("mkdtemp failed") }
let dir = String(cString: dirPointer)
let port = freePort()
let host = "127.0.0.1:\(port)"
let config = """
    version: 0.1
    log:
      level: error
      accesslog:
        disabled: true
    storage:
      filesystem:
        rootdirectory: \(dir)/storage
    http:
      addr: \(host)
      secret: bench

    """
try Data(config.utf8).write(to: URL(fileURLWithPath: dir + "/config.yml"))
let registry = Process()
registry.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
registry.arguments = ["serve", dir + "/config.yml"]
registry.standardOutput = FileHandle.nullDevice
registry.standardError = FileHandle.nullDevice
do { try registry.run() } catch { fail("cannot start /usr/bin/docker-registry (apt install docker-registry): \(error)") }
defer {
    registry.terminate()
    registry.waitUntilExit()
    try? FileSystem.removeTree(dir)
}
usleep(300_000)

var logger = Logger(label: "registry-bench")
logger.logLevel = .warning
var configuration = RegistryConfiguration()
configuration.proxy = ""
let client = RegistryClient(configuration: configuration, logger: logger)

// Wait for /v2/, then push the blob with our client (chunked upload from a file).
var ready = false
for _ in 0..<100 {
    if (try? await client.ping(registry: host)) != nil {
        ready = true
        break
    }
    usleep(100_000)
}
guard ready else { fail("docker-registry did not answer on \(host)") }

var state: UInt64 = 0x9E37_79B9_7F4A_7C15
var blob = [UInt8](repeating: 0, count: size)
blob.withUnsafeMutableBytes { raw in
    let words = raw.bindMemory(to: UInt64.self)
    for i in 0..<words.count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        words[i] = state
    }
}
let hashStart = now()
let digest = Digest.sha256(of: blob)
print(String(format: "sha256 in memory: %.1f MiB/s", Double(mebibytes) / (now() - hashStart)))
let blake3Start = now()
for offset in stride(from: 0, to: min(size, 16 << 20), by: 1 << 20) { _ = BLAKE3.hash(Array(blob[offset..<offset + (1 << 20)])) }
print(String(format: "blake3 in memory (1 MiB chunks): %.1f MiB/s", Double(min(mebibytes, 16)) / (now() - blake3Start)))
try Data(blob).write(to: URL(fileURLWithPath: dir + "/source"))
blob = []
let descriptor = Descriptor(mediaType: MediaType.ociLayer, digest: digest, size: Int64(size))
try await client.pushBlob(registry: host, repository: "bench/blob", descriptor: descriptor, from: .file(path: dir + "/source"))
unlink(dir + "/source")

print("libcurl: \(RegistryClient.transportDescription)")
print("blob: \(mebibytes) MiB \(digest) on \(host), best of \(rounds) rounds")

var oursBest = Double.infinity
var curlBest = Double.infinity
for round in 1...rounds {
    let target = dir + "/ours"
    let t0 = now()
    let selfCPU0 = cpuSeconds(RUSAGE_SELF)
    let registryCPU0 = cpuSeconds(pid: registry.processIdentifier)
    try await client.fetchBlob(registry: host, repository: "bench/blob", descriptor: descriptor, to: target)
    let ours = now() - t0
    let oursCPU = cpuSeconds(RUSAGE_SELF) - selfCPU0
    let registryCPUOurs = cpuSeconds(pid: registry.processIdentifier) - registryCPU0
    unlink(target)

    let curl = Process()
    curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    curl.arguments = ["-sf", "--noproxy", "*", "-o", dir + "/curl", "http://\(host)/v2/bench/blob/blobs/\(digest)"]
    let t1 = now()
    let childCPU0 = cpuSeconds(RUSAGE_CHILDREN)
    let registryCPU1 = cpuSeconds(pid: registry.processIdentifier)
    try curl.run()
    curl.waitUntilExit()
    let viaCurl = now() - t1
    let curlCPU = cpuSeconds(RUSAGE_CHILDREN) - childCPU0
    let registryCPUCurl = cpuSeconds(pid: registry.processIdentifier) - registryCPU1
    guard curl.terminationStatus == 0 else { fail("curl exited \(curl.terminationStatus)") }
    unlink(dir + "/curl")
    print(
        String(
            format: "round %d: ours %.3f s (CPU %.2f s, registry %.2f s), curl %.3f s (CPU %.2f s, registry %.2f s)",
            round, ours, oursCPU, registryCPUOurs, viaCurl, curlCPU, registryCPUCurl))
    oursBest = min(oursBest, ours)
    curlBest = min(curlBest, viaCurl)
}
let mib = Double(mebibytes)
print(String(format: "RegistryClient: %.1f MiB/s (sha256 verified, O_DIRECT, fsynced)", mib / oursBest))
print(String(format: "curl:           %.1f MiB/s (to a file, no digest)", mib / curlBest))
print(String(format: "ratio ours/curl: %.2f", curlBest / oursBest))
