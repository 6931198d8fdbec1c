import BlobStore
import Foundation
import LinuxKernel
import OCI
import RAFSBuilder
import SnapshotterAPI
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The whole product on the host kernel: a converted image in a real registry (docker-registry behind a
/// counting fault proxy), pulled by the real daemon, mounted through EROFS + overlay, read lazily through the
/// fanotify front end.
@Suite("Lazy images through the real daemon, kernel and registry", .serialized, .ownThread)
struct LazyImageTests {
    /// Registry, counting proxy, a pushed image and a daemon on a temp root; all stopped by `tearDown`.
    final class Setup {
        let harness: DaemonHarness
        let registry: TestRegistry
        let proxy: PythonHelper
        let image: NydusTestImage
        let reference: String

        /// Read-ahead is off unless asked for: most tests count exactly which chunks each read fetches.
        init(
            _ name: String, frontEnd: String, bigMiB: Int = 24, readahead: Int = 0, prefetch: [String] = [],
            chunkSize: UInt32 = 1 << 20, readerTimeout: Int = 5, daemonArguments: [String] = [],
            beforeStart: (DaemonHarness) throws -> Void = { _ in }
        ) async throws {
            harness = try DaemonHarness(
                name,
                arguments: ["--front-end", frontEnd, "--reader-timeout", String(readerTimeout), "--readahead-bytes", String(readahead)]
                    + daemonArguments)
            let registry = try TestRegistry()
            self.registry = registry
            do {
                proxy = try PythonHelper.faultProxy(upstreamPort: registry.port, mode: "pass")
            } catch {
                registry.stop()
                harness.tearDown()
                throw error
            }
            do {
                image = try NydusTestImage(
                    directory: harness.directory + "/image", files: NydusTestImage.files(smallCount: 40, bigMiB: bigMiB),
                    chunkSize: chunkSize, prefetch: prefetch)
                try await image.push(with: RegistryTestSupport.client(), registry: registry.host, repository: "lazy", tag: "v1")
                reference = "127.0.0.1:\(proxy.port)/lazy:v1"
                try beforeStart(harness)
                try harness.start()
            } catch {
                // A scenario that cannot start stops what it started: no registry or proxy outlives the test.
                proxy.stop()
                registry.stop()
                harness.tearDown()
                throw error
            }
        }

        func tearDown() {
            harness.tearDown()
            proxy.stop()
            registry.stop()
        }

        /// Stored bytes the registry served through the proxy for blob GETs so far.
        var blobBytesServed: Int64 {
            proxy.requests.filter { $0.hasPrefix("SENT ") && $0.contains(" GET ") && $0.contains("/blobs/") }
                .compactMap { Int64($0.split(separator: " ")[1]) }.reduce(0, +)
        }

        /// Chunks readers had to fetch on demand so far (the engine's `snapshotter_chunk_misses_total`).
        func chunkMisses() throws -> Int {
            let line = try harness.client().metrics().split(separator: "\n").first { $0.hasPrefix("snapshotter_chunk_misses_total ") }
            return line.flatMap { Int($0.split(separator: " ")[1]) } ?? -1
        }

        /// Waits until the registry has served nothing for a second: background fetches (read-ahead, a prefetch
        /// table's ranges, which stream one after the other) are over. Gives up after a minute.
        func waitForRegistryQuiet() async throws {
            var quiet = 0
            for _ in 0..<300 where quiet < 5 {
                let before = blobBytesServed
                try await Task.sleep(for: .milliseconds(200))
                quiet = blobBytesServed == before ? quiet + 1 : 0
            }
        }

        var blobGets: Int { proxy.blobGetsStarted }

        func setProxyMode(_ mode: String) throws {
            try Data(mode.utf8).write(to: URL(fileURLWithPath: proxy.logPath + ".mode"))
        }

        /// Pulls with snapctl, prepares `key` on the image and mounts it at `<dir>/<key>`.
        func pullAndMount(key: String) throws -> String {
            let pulled = try runCommand(DaemonHarness.snapctlPath, ["--socket", harness.socket, "pull", reference])
            #expect(pulled.status == 0, "snapctl pull failed: \(pulled.output)\n\(harness.log())")
            _ = try harness.client().prepare(key: key, image: reference)
            let target = harness.directory + "/" + key
            _ = try harness.client().mount(key: key, target: target)
            return target
        }
    }

    /// Evicts the page cache of the given files only (POSIX_FADV_DONTNEED; overlayfs forwards it to the EROFS
    /// file), so that reads go to the kernel again without disturbing tests running alongside.
    static func evict(_ paths: [String]) {
        for path in paths {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
            close(fd)
        }
    }

    /// Reads `count` bytes at `offset` with POSIX calls: the bytes, or the errno a reader got.
    static func read(_ path: String, offset: Int = 0, count: Int? = nil) -> Result<[UInt8], SyscallError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(SyscallError(call: "open", errno: errno, subject: path)) }
        defer { close(fd) }
        // The size by lseek: `struct stat` members are attributed to CoreFoundation when the test target
        // also links the gRPC packages (MemberImportVisibility).
        let size = Int(lseek(fd, 0, SEEK_END))
        let wanted = count ?? max(0, size - offset)
        var buffer = [UInt8](repeating: 0, count: wanted)
        var done = 0
        while done < wanted {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, wanted - done, off_t(offset + done)) }
            if n < 0 { return .failure(SyscallError(call: "pread", errno: errno, subject: path)) }
            if n == 0 { break }
            done += n
        }
        return .success(Array(buffer[0..<done]))
    }

    @Test(
        "pull, prepare, mount, read: content matches, few bytes move, a second read fetches nothing, faults give EIO",
        .timeLimit(.minutes(5)))
    func lazyReads() async throws {
        let setup = try await Setup("lazy", frontEnd: "fanotify")
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let afterPull = setup.blobBytesServed
        // The pull moved the bootstrap layer and the blobs' meta tails, no chunk data.
        #expect(afterPull < setup.image.dataBlobBytes / 10, "pull fetched \(afterPull) of \(setup.image.dataBlobBytes) bytes")
        // The image's EROFS mount reads ahead one chunk at a time (one front-end round trip per chunk).
        let imageMount = try MountInfo.read().first { $0.fsType == "erofs" && $0.mountPoint.hasPrefix(setup.harness.root + "/mnt/") }
        #expect(try imageMount.map { try KernelReadahead.get(mountPoint: $0.mountPoint) } == 1024)

        // Small files and the head of the big file, compared with the source.
        let small = setup.image.files.keys.filter { !$0.hasSuffix("big.bin") }.sorted()
        for path in small {
            #expect(try Self.read(target + "/" + path).get() == setup.image.files[path], "\(path) differs")
        }
        let big = setup.image.files["usr/lib/big.bin"]!
        #expect(try Self.read(target + "/usr/lib/big.bin", count: 65536).get() == Array(big[0..<65536]))
        let fetched = setup.blobBytesServed - afterPull
        #expect(fetched > 0)
        #expect(fetched < setup.image.dataBlobBytes * 3 / 10, "read fetched \(fetched) of \(setup.image.dataBlobBytes) stored bytes")

        // Everything read is local now: dropping the page cache and reading again fetches nothing.
        let backing = try setup.harness.client().images().flatMap { $0.blobs.map(\.backingFile) }
        Self.evict(small.map { target + "/" + $0 } + backing)
        let before = setup.blobBytesServed
        for path in small { #expect(try Self.read(target + "/" + path).get() == setup.image.files[path]) }
        #expect(setup.blobBytesServed == before, "a second read fetched \(setup.blobBytesServed - before) bytes")

        // Eight concurrent readers of one missing chunk: one GET.
        let getsBefore = setup.blobGets
        let region = (10 << 20)..<((10 << 20) + 256 * 1024)
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    try Self.read(target + "/usr/lib/big.bin", offset: region.lowerBound, count: region.count).get() == Array(big[region])
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0 })
        #expect(setup.blobGets - getsBefore == 1, "\(setup.blobGets - getsBefore) GETs for one chunk")

        // A registry that corrupts what it serves: EIO, never the bad bytes; fine again once it is healthy.
        try setup.setProxyMode("flip")
        let corrupt = Self.read(target + "/usr/lib/big.bin", offset: 15 << 20, count: 4096)
        #expect(throws: SyscallError.self) { try corrupt.get() }
        if case .failure(let error) = corrupt { #expect(error.errno == EIO) }
        try setup.setProxyMode("pass")
        #expect(
            try Self.read(target + "/usr/lib/big.bin", offset: 15 << 20, count: 4096).get() == Array(big[(15 << 20)..<((15 << 20) + 4096)]))

        // Registry stopped: EIO within the reader timeout (5 s here plus retries), no hang; local data still reads.
        setup.registry.stopProcess()
        let started = Date()
        let unreachable = Self.read(target + "/usr/lib/big.bin", offset: 18 << 20, count: 4096)
        if case .failure(let error) = unreachable {
            #expect(error.errno == EIO)
        } else {
            Issue.record("read succeeded with the registry down")
        }
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(try Self.read(target + "/etc/hostname").get() == Array("ondemand\n".utf8))
        try setup.registry.start()
        #expect(
            try Self.read(target + "/usr/lib/big.bin", offset: 18 << 20, count: 4096).get() == Array(big[(18 << 20)..<((18 << 20) + 4096)]))

        // What status and metrics report.
        let status = try setup.harness.client().status()
        #expect(status.frontEnd == "fanotify")
        let imageStatus = try #require(status.images?.first)
        #expect(imageStatus.bytesFetched > 0 && imageStatus.percentLocal > 0 && imageStatus.percentLocal < 100)
        let metrics = try setup.harness.client().metrics()
        #expect(metrics.contains("snapshotter_fetch_bytes_total"))
        #expect(metrics.contains("snapshotter_front_end_info{front_end=\"fanotify\"} 1"))
        // What the store holds: the image's local bytes as status reports them, and the blocks on disk.
        let name = try #require(status.images?.first?.reference)
        let localLine = metrics.split(separator: "\n").first { $0.hasPrefix("snapshotter_image_local_bytes{image=\"\(name)\"} ") }
        let reportedLocal = localLine.flatMap { Int64($0.split(separator: " ").last ?? "") }
        #expect(reportedLocal.map { $0 > 0 } == true, "no local bytes for \(name) in /metrics")
        let diskLine = metrics.split(separator: "\n").first { $0.hasPrefix("snapshotter_cache_disk_bytes ") }
        let onDisk = diskLine.flatMap { Int64($0.split(separator: " ").last ?? "") } ?? 0
        #expect(onDisk >= reportedLocal ?? 0, "the backing files occupy \(onDisk) bytes, fewer than the \(reportedLocal ?? 0) present")
    }

    @Test("kill -9 and SIGTERM while readers wait: no reader sees zeros; a restarted daemon completes them", .timeLimit(.minutes(5)))
    func restartWhileReading() async throws {
        // The reader timeout is far beyond the test's steps, so the held read waits for the kill on a loaded machine.
        let setup = try await Setup("lazy-restart", frontEnd: "fanotify", bigMiB: 16, readerTimeout: 60)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let big = setup.image.files["usr/lib/big.bin"]!

        for (round, how) in ["kill", "term"].enumerated() {
            // Held until the daemon is gone, so the reader is certainly waiting on a fetch when it dies.
            try setup.setProxyMode("hold")
            let gets = setup.proxy.blobGetsStarted
            let offset = (3 + 4 * round) << 20
            let reader = Task { try await onOwnThread { Self.read(target + "/usr/lib/big.bin", offset: offset, count: 8192) } }
            #expect(try await setup.proxy.waitForBlobGets(moreThan: gets), "the reader's fetch never reached the registry")
            if how == "kill" { setup.harness.crash() } else { #expect(setup.harness.stop() == 0) }
            try setup.setProxyMode("pass")
            try setup.harness.start()
            let result = try await reader.value
            #expect(try result.get() == Array(big[offset..<(offset + 8192)]), "reader after \(how) got wrong bytes")
            // Mounts were reconciled and new reads work.
            let fresh = offset + (2 << 20)
            #expect(try Self.read(target + "/usr/lib/big.bin", offset: fresh, count: 4096).get() == Array(big[fresh..<(fresh + 4096)]))
        }
        #expect(try setup.harness.client().images().count == 1)
    }

    /// On e51c93a the stalled GET was given up only after the registry client's general stall limit (30 s), so
    /// a reader with a 15 s timeout got EIO.
    @Test(
        "a registry that stalls in the middle of a body: the read resumes on a new connection within the reader timeout",
        .timeLimit(.minutes(3)))
    func stalledBody() async throws {
        let setup = try await Setup("stall", frontEnd: "fanotify", readerTimeout: 15)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "s1")
        try setup.setProxyMode("stall")
        let big = setup.image.files["usr/lib/big.bin"]!
        let started = monotonicNanoseconds()
        let got = Self.read(target + "/usr/lib/big.bin", offset: 0, count: 4 << 20)
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        #expect(try got.get() == Array(big[0..<(4 << 20)]), "the read after a stall")
        #expect(seconds < 15, "the read took \(seconds) s")
        #expect(setup.harness.log().contains("transfer failed, retrying"), "the stalled transfer was not retried")
    }

    @Test(
        "a registry answering 503 (Retry-After) for good: EIO within the reader timeout, the log names the registry and the blob; once it answers, the read completes",
        .timeLimit(.minutes(3)))
    func refusingRegistry() async throws {
        let setup = try await Setup("refuse", frontEnd: "fanotify", readerTimeout: 10)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "r1")
        let big = setup.image.files["usr/lib/big.bin"]!
        try setup.setProxyMode("503")
        let started = monotonicNanoseconds()
        let refused = Self.read(target + "/usr/lib/big.bin", offset: 8 << 20, count: 65536)
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        switch refused {
        case .success: Issue.record("a read succeeded while the registry refused every blob GET")
        case .failure(let error): #expect(error.errno == EIO, "\(error)")
        }
        // Within the reader timeout (10 s), give or take the kernel's own retry of the read.
        #expect(seconds < 25, "the refused read took \(seconds) s")
        let blobDigest = try #require(setup.image.result.manifest.layers.first { $0.mediaType.contains("nydus.blob") }?.digest)
        let log = setup.harness.log()
        #expect(
            log.contains("127.0.0.1:\(setup.proxy.port)") && log.contains(blobDigest.encoded),
            "the failure does not name the registry and the blob")
        try setup.setProxyMode("pass")
        #expect(
            try Self.read(target + "/usr/lib/big.bin", offset: 8 << 20, count: 65536).get() == Array(big[(8 << 20)..<((8 << 20) + 65536)]))
    }

    @Test(
        "a registry answering 429 with Retry-After: the reader waits as told, the retry on the same range completes the read with the right bytes",
        .timeLimit(.minutes(3)))
    func rateLimitedRegistry() async throws {
        let setup = try await Setup("busy", frontEnd: "fanotify", readerTimeout: 20)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "b1")
        let big = setup.image.files["usr/lib/big.bin"]!
        try setup.setProxyMode("busy")
        let gets = setup.blobGets
        let started = monotonicNanoseconds()
        let offset = 12 << 20
        let got = Self.read(target + "/usr/lib/big.bin", offset: offset, count: 65536)
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        #expect(try got.get() == Array(big[offset..<(offset + 65536)]), "the read after two 429s")
        // Two refusals, each with Retry-After 1: the client waited at least as long as the registry asked.
        #expect(seconds >= 2, "the read took \(seconds) s: Retry-After was not honoured")
        let log = setup.harness.log()
        #expect(log.contains("registry busy or failing, retrying") && log.contains("http.status=429"), "the 429s were not logged")
        #expect(log.contains("retry.delay_ms=1000"), "the retry did not wait the registry's Retry-After")
        #expect(setup.blobGets >= gets + 3, "\(setup.blobGets - gets) blob GETs for the read")
    }

    @Test("the eager front end fetches whole blobs before mounting and passes the same content checks", .timeLimit(.minutes(5)))
    func eager() async throws {
        let setup = try await Setup("eager", frontEnd: "eager", bigMiB: 8)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        for (path, bytes) in setup.image.files { #expect(try Self.read(target + "/" + path).get() == bytes, "\(path) differs") }
        let status = try setup.harness.client().status()
        #expect(status.frontEnd == "eager")
        #expect(status.images?.first?.percentLocal == 100)
        // rmi is refused while a snapshot uses the image, then works.
        #expect(throws: (any Error).self) { try setup.harness.client().removeImage(reference: setup.reference) }
        try setup.harness.client().unmount(target: target)
        try setup.harness.client().remove(key: "c1")
        try setup.harness.client().removeImage(reference: setup.reference)
        #expect(try setup.harness.client().images().isEmpty)
    }

    @Test("a plain OCI image pushed by skopeo is pulled, converted locally and mounted", .timeLimit(.minutes(5)))
    func plainImage() async throws {
        let setup = try await Setup("plain", frontEnd: "fanotify", bigMiB: 4)
        defer { setup.tearDown() }
        try RegistryTestSupport.run(
            RegistryTestSupport.skopeoBinary,
            [
                "--insecure-policy", "copy", "--dest-tls-verify=false", "oci:\(setup.image.sourceLayout):v1",
                "docker://\(setup.registry.host)/plain:v1",
            ])
        let reference = "\(setup.registry.host)/plain:v1"
        let pulled = try setup.harness.client().pull(reference: reference)
        #expect(pulled.pulled && pulled.image.format == "converted")
        #expect(pulled.image.localBytes == pulled.image.size)
        _ = try setup.harness.client().prepare(key: "p1", image: reference)
        let target = setup.harness.directory + "/p1"
        _ = try setup.harness.client().mount(key: "p1", target: target)
        for (path, bytes) in setup.image.files { #expect(try Self.read(target + "/" + path).get() == bytes, "\(path) differs") }
        // Pulling again is a no-op.
        #expect(try setup.harness.client().pull(reference: reference).pulled == false)
    }

    @Test("prefetch of listed files, then of the whole image: afterwards every file reads with the registry gone", .timeLimit(.minutes(3)))
    func prefetch() async throws {
        let setup = try await Setup("prefetch", frontEnd: "fanotify", bigMiB: 4)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let client = setup.harness.client()
        let listed = try client.prefetch(reference: setup.reference, paths: ["/usr/lib/big.bin"])
        #expect(listed.ranges == 1 && listed.bytes == 4 << 20, "the file's four chunks stream as one range")
        #expect(throws: APIError.self) { try client.prefetch(reference: setup.reference, paths: ["/no/such/file"]) }
        _ = try client.prefetch(reference: setup.reference)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, try client.status().images?.first?.percentLocal != 100 { try await Task.sleep(for: .milliseconds(100)) }
        #expect(try client.status().images?.first?.percentLocal == 100)
        setup.registry.stopProcess()
        for (path, bytes) in setup.image.files { #expect(try Self.read(target + "/" + path).get() == bytes, "\(path) differs") }
    }

    @Test("an image's prefetch table is fetched right after the pull: those files then read with the registry gone")
    func prefetchTable() async throws {
        let setup = try await Setup("hinted", frontEnd: "fanotify", bigMiB: 4, prefetch: ["/usr/lib/big.bin", "/etc/small"])
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let hinted = setup.image.files.filter { $0.key == "usr/lib/big.bin" || $0.key.hasPrefix("etc/small/") }
        let hintedBytes = hinted.values.reduce(0) { $0 + $1.count }
        // Nobody reads: the daemon fetches the listed files by itself.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, (try setup.harness.client().status().images?.first?.bytesFetched ?? 0) < Int64(hintedBytes) / 2 {
            try await Task.sleep(for: .milliseconds(50))
        }
        // Then until the table's ranges are all fetched.
        try await setup.waitForRegistryQuiet()
        setup.registry.stopProcess()
        for (path, bytes) in hinted { #expect(try Self.read(target + "/" + path).get() == bytes, "\(path) differs") }
        // What the table does not list stays remote: with the registry gone it cannot be read.
        let unlisted = Self.read(target + "/usr/share/doc/README")
        #expect(throws: SyscallError.self) { try unlisted.get() }
    }

    @Test("a sequential reader gets read-ahead: chunks ahead of it are fetched in the background", .timeLimit(.minutes(3)))
    func readAhead() async throws {
        let setup = try await Setup("readahead", frontEnd: "fanotify", bigMiB: 16, readahead: 4 << 20)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let big = setup.image.files["usr/lib/big.bin"]!
        for offset in stride(from: 0, to: 2 << 20, by: 128 * 1024) {
            #expect(
                try Self.read(target + "/usr/lib/big.bin", offset: offset, count: 128 * 1024).get()
                    == Array(big[offset..<(offset + 128 * 1024)]))
        }
        // The next 4 MiB arrive without being read.
        let deadline = Date().addingTimeInterval(30)
        func local() throws -> Int64 { try setup.harness.client().images().first?.localBytes ?? 0 }
        while Date() < deadline, try local() < 5 << 20 { try await Task.sleep(for: .milliseconds(100)) }
        let fetchedAhead = try local()
        #expect(fetchedAhead >= 5 << 20, "read-ahead made only \(fetchedAhead) bytes local")
        // Reading what arrived ahead is all hits: no reader waits on a fetch for it.
        let before = try setup.chunkMisses()
        #expect(try Self.read(target + "/usr/lib/big.bin", offset: 3 << 20, count: 1 << 20).get() == Array(big[(3 << 20)..<(4 << 20)]))
        #expect(try setup.chunkMisses() == before, "a chunk fetched ahead was missed again")
    }

    /// A binary's pages read first (as `exec` does) get read-ahead that covers the far half of a later file
    /// reader's window; that reader must still get the gap before it fetched in the background, not chunk by
    /// chunk on demand as it reaches each missing chunk.
    @Test("read-ahead fills the gap up to chunks another reader's read-ahead fetched", .timeLimit(.minutes(3)))
    func readAheadGap() async throws {
        let setup = try await Setup("readahead-gap", frontEnd: "fanotify", bigMiB: 16, readahead: 8 << 20)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let big = setup.image.files["usr/lib/big.bin"]!
        let step = 128 * 1024
        func local() throws -> Int64 { try setup.harness.client().images().first?.localBytes ?? 0 }
        // The first reader: MiB 8 of the file, whose read-ahead brings the rest of it.
        for offset in stride(from: 8 << 20, to: 9 << 20, by: step) {
            #expect(try Self.read(target + "/usr/lib/big.bin", offset: offset, count: step).get() == Array(big[offset..<(offset + step)]))
        }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, try local() < 8 << 20 { try await Task.sleep(for: .milliseconds(100)) }
        // The second reader: the file from its start. Its first chunk is a miss; read-ahead then keeps every
        // chunk up to MiB 8 coming before the reader asks, although MiB 8-16 (most of its 8 MiB window) are
        // already local.
        let before = try setup.chunkMisses()
        for offset in stride(from: 0, to: 8 << 20, by: step) {
            #expect(try Self.read(target + "/usr/lib/big.bin", offset: offset, count: step).get() == Array(big[offset..<(offset + step)]))
        }
        let missed = try setup.chunkMisses() - before
        #expect(missed <= 2, "\(missed) chunks were fetched on demand: read-ahead left a gap")
    }

    /// A reader that stays in one file (a binary paged in, one big file read through) reads ahead to that
    /// file's end, not into the files after it in the blob.
    @Test("read-ahead stops at the end of the file its reader is in", .timeLimit(.minutes(3)))
    func readAheadStopsAtFileEnd() async throws {
        let setup = try await Setup("readahead-file", frontEnd: "fanotify", bigMiB: 4, readahead: 8 << 20)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let big = setup.image.files["usr/lib/big.bin"]!
        let step = 128 * 1024
        for offset in stride(from: 0, to: 2 << 20, by: step) {
            #expect(try Self.read(target + "/usr/lib/big.bin", offset: offset, count: step).get() == Array(big[offset..<(offset + step)]))
        }
        // Read-ahead brings the rest of the file; then the registry goes away.
        try await setup.waitForRegistryQuiet()
        setup.registry.stopProcess()
        #expect(try Self.read(target + "/usr/lib/big.bin").get() == big, "the whole file arrived ahead of its reader")
        // The file after it in the blob (name order) was not fetched: with the registry gone it cannot be read.
        let next = Self.read(target + "/usr/share/doc/README")
        #expect(throws: SyscallError.self) { try next.get() }
    }

    /// The pull fetches each blob's last 64 KiB alongside the bootstrap; a blob whose meta is longer (here
    /// 2,000+ chunks of 4 KiB) gets the part before that tail with one more GET, joined in order.
    @Test("a blob meta longer than the tail fetched alongside the bootstrap is joined whole", .timeLimit(.minutes(3)))
    func longBlobMeta() async throws {
        let setup = try await Setup("long-meta", frontEnd: "fanotify", bigMiB: 8, chunkSize: 4096)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let metaBytes = setup.harness.log().split(separator: "\n").first { $0.contains("image pulled") }
            .flatMap { line in line.split(separator: " ").first { $0.hasPrefix("image.meta_bytes=") } }
            .flatMap { Int($0.split(separator: "=")[1]) }
        #expect((metaBytes ?? 0) > 64 << 10, "the meta (\(metaBytes ?? -1) bytes) fits in the speculative tail")
        for (path, content) in setup.image.files where path.hasPrefix("usr/lib/") || path.hasPrefix("etc/small/") {
            #expect(try Self.read(target + "/" + path).get() == content, "\(path) differs")
        }
    }

    /// A reader opening a file (its first read, at the file's start) gets the rest of the file's first window
    /// (half the initial 4-chunk window) in the same go: a small binary paged in or a small file read whole
    /// waits on one round trip, not one per chunk. Nothing past that window comes along.
    @Test("a file's first read brings the next chunks of that file, within half the initial window", .timeLimit(.minutes(3)))
    func readAheadOnOpen() async throws {
        let setup = try await Setup("readahead-open", frontEnd: "fanotify", bigMiB: 4, readahead: 8 << 20)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let big = setup.image.files["usr/lib/big.bin"]!
        #expect(try Self.read(target + "/usr/lib/big.bin", offset: 0, count: 4096).get() == Array(big[0..<4096]))
        try await setup.waitForRegistryQuiet()
        setup.registry.stopProcess()
        // Chunk 1 (the next MiB) arrived with the first read; the file's last chunk lies beyond the window.
        #expect(try Self.read(target + "/usr/lib/big.bin", offset: 1 << 20, count: 1 << 20).get() == Array(big[(1 << 20)..<(2 << 20)]))
        let last = Self.read(target + "/usr/lib/big.bin", offset: 3 << 20, count: 4096)
        #expect(throws: SyscallError.self) { try last.get() }
    }

    /// A reader going through a directory's files in a row reads ahead across them, but not into the next
    /// directory's files.
    /// A pull's files are on disk before its records are: a collection in between would take them.
    @Test("snapctl gc is refused while a pull runs, and the pull completes", .timeLimit(.minutes(3)))
    func garbageCollectionWaitsForPulls() async throws {
        let setup = try await Setup("lazy-gcpull", frontEnd: "fanotify", bigMiB: 4)
        defer { setup.tearDown() }
        try setup.setProxyMode("slow")
        let client = try setup.harness.client()
        let reference = setup.reference
        // snapctl in its own process: a blocking call in a detached task can wait long for a thread of the
        // cooperative pool when other suites hold them.
        let pull = Process()
        pull.executableURL = URL(fileURLWithPath: DaemonHarness.snapctlPath)
        pull.arguments = ["--socket", setup.harness.socket, "pull", reference]
        pull.standardOutput = FileHandle.nullDevice
        pull.standardError = FileHandle.nullDevice
        try pull.run()
        defer { if pull.isRunning { pull.terminate() } }
        // Wait (on the daemon's own report, with a generous deadline) until the pull is under way.
        let deadline = ContinuousClock.now + .seconds(60)
        while try client.pulls().isEmpty, pull.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        try #require(try !client.pulls().isEmpty, "the pull never showed up in /v1/pulls")
        #expect {
            _ = try client.cleanup()
        } throws: { error in
            (error as? APIError)?.kind == .failedPrecondition
        }
        try setup.setProxyMode("pass")
        while pull.isRunning, ContinuousClock.now < deadline + .seconds(60) { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!pull.isRunning && pull.terminationStatus == 0, "snapctl pull did not succeed")
        // With nothing running, the same call goes through and leaves the image whole.
        _ = try client.cleanup()
        let target = try setup.pullAndMount(key: "afterGC")
        let big = setup.image.files["usr/lib/big.bin"]!
        #expect(try Self.read(target + "/usr/lib/big.bin").get() == big)
    }

    @Test("read-ahead across files stops at the end of the reader's directory", .timeLimit(.minutes(3)))
    func readAheadStopsAtDirectoryEnd() async throws {
        let setup = try await Setup("readahead-dir", frontEnd: "fanotify", bigMiB: 4, readahead: 8 << 20)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        // The small files in the order they lie in the blob (name order), as `cat etc/small/*` reads them.
        let small = setup.image.files.keys.filter { $0.hasPrefix("etc/small/") }.sorted()
        let before = try setup.chunkMisses()
        for path in small { #expect(try Self.read(target + "/" + path).get() == setup.image.files[path], "\(path) differs") }
        let missed = try setup.chunkMisses() - before
        #expect(missed < small.count / 4, "\(missed) of \(small.count) files were fetched on demand: no read-ahead across files")
        try await setup.waitForRegistryQuiet()
        setup.registry.stopProcess()
        // The next directory's file (usr/lib/big.bin follows etc/small/ in the blob) was not fetched ahead.
        let next = Self.read(target + "/usr/lib/big.bin", offset: 0, count: 4096)
        #expect(throws: SyscallError.self) { try next.get() }
    }

    static var inGuest: Bool {
        ProcessInfo.processInfo.environment["VM_GUEST"] == "1" && FileManager.default.fileExists(atPath: "/dev/cachefiles")
    }

    /// The same scenario through /dev/cachefiles on the 6.12 test kernel. Runs only inside the VM
    /// (scripts/vm-test); the host test `CachefilesVMTests` boots it and requires this test to pass.
    @Test(
        "cachefiles in the test VM: pull, mount, lazy reads, EIO with the registry down, kill -9 and restore, kernel file names",
        .enabled(if: inGuest, "runs inside the test VM (CachefilesVMTests boots it): the host kernel has no cachefiles"),
        .timeLimit(.minutes(5)))
    func cachefilesInGuest() async throws {
        let setup = try await Setup("guest", frontEnd: "cachefiles", bigMiB: 8)
        defer { setup.tearDown() }
        let target = try setup.pullAndMount(key: "c1")
        let afterPull = setup.blobBytesServed
        let small = setup.image.files.keys.filter { !$0.hasSuffix("big.bin") }.sorted()
        for path in small { #expect(try Self.read(target + "/" + path).get() == setup.image.files[path], "\(path) differs") }
        let big = setup.image.files["usr/lib/big.bin"]!
        #expect(try Self.read(target + "/usr/lib/big.bin", count: 65536).get() == Array(big[0..<65536]))
        let fetched = setup.blobBytesServed - afterPull
        #expect(fetched > 0 && fetched < setup.image.dataBlobBytes / 2, "read fetched \(fetched) of \(setup.image.dataBlobBytes)")
        #expect(try setup.harness.client().status().frontEnd == "cachefiles")

        // Registry stopped: EIO, not a hang.
        setup.registry.stopProcess()
        let unreachable = Self.read(target + "/usr/lib/big.bin", offset: 5 << 20, count: 4096)
        if case .failure(let error) = unreachable {
            #expect(error.errno == EIO)
        } else {
            Issue.record("read succeeded with the registry down")
        }
        try setup.registry.start()

        // kill -9 while a reader waits: the successor adopts /dev/cachefiles and restores the request.
        try setup.setProxyMode("hold")
        let gets = setup.proxy.blobGetsStarted
        let offset = 3 << 20
        let reader = Task { try await onOwnThread { Self.read(target + "/usr/lib/big.bin", offset: offset, count: 8192) } }
        #expect(try await setup.proxy.waitForBlobGets(moreThan: gets), "the reader's fetch never reached the registry")
        setup.harness.crash()
        try setup.setProxyMode("pass")
        try setup.harness.start()
        #expect(try await reader.value.get() == Array(big[offset..<(offset + 8192)]), "the waiting reader got wrong bytes")

        // Removed, the image's kernel cache files are culled: the blob's and the bootstrap's. The cull names the
        // blob's file where CachefilesNaming says (the kernel links it once the mounts are gone; a wrong name
        // would be ENOENT), and nothing is left in fscache/ for it, nor in the graveyard.
        let blobID = setup.image.result.build.blobs[0].blobID
        try setup.harness.client().unmount(target: target)
        try setup.harness.client().remove(key: "c1")
        try setup.harness.client().removeImage(reference: setup.reference)
        let expected =
            setup.harness.root + "/fscache/cache/" + CachefilesNaming.relativePath(domain: "ondemand-snapshotter", blobID: blobID)
        let deadline = ContinuousClock.now + .seconds(60)
        func culled() -> [String] {
            setup.harness.log().split(separator: "\n").filter { $0.contains("kernel cache file culled") }.map(String.init)
        }
        while culled().count < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(
            culled().contains { $0.contains(expected) },
            "the blob's kernel file \(expected) was not culled:\n\(setup.harness.log().suffix(3000))")
        #expect(culled().contains { $0.contains("bootstrap of image") }, "the bootstrap's kernel file was not culled")
        #expect(!FileManager.default.fileExists(atPath: expected), "the kernel cache file \(expected) is still there")
        let graveyard = (try? FileSystem.listDirectory(setup.harness.root + "/fscache/graveyard")) ?? []
        #expect(graveyard.isEmpty, "left in the graveyard: \(graveyard)")

        // A kernel file whose cull a crash prevented (planted here: no image names it) goes at the next cleanup.
        let leftover = FileSystem.parentPath(expected) + "/Dleft-by-a-crash"
        try Data("stale".utf8).write(to: URL(fileURLWithPath: leftover))
        let removed = try setup.harness.client().cleanup()
        #expect(removed.contains(leftover), "cleanup did not cull \(leftover): \(removed)")
        #expect(!FileManager.default.fileExists(atPath: leftover))
        #expect(((try? FileSystem.listDirectory(setup.harness.root + "/fscache/graveyard")) ?? []).isEmpty)
    }
}
