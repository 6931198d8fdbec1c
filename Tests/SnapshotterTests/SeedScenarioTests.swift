import BlobStore
import Foundation
import LinuxKernel
import MountManager
import OCI
import RAFS
import SnapshotterAPI
import Synchronization
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The seed front end end to end on the host: a converted image in a real registry (docker-registry behind a
/// counting fault proxy), pulled by the real daemon started with `--front-end seed`, whose devnode is the
/// emulation (`SeedDevnodeEmulator` listening on a socket). No kernel mounts `-o uuid=` over the seed devnode,
/// so the tests read as that kernel would: the project's EROFS reader over the daemon's bootstrap, each device
/// read going to the emulated devnode, where a hole in the backing file becomes a request to the daemon.
@Suite("The seed front end through the real daemon and registry, against the emulated devnode", .serialized, .ownThread)
struct SeedScenarioTests {
    /// Registry, counting proxy, a pushed image, the emulated devnode and a daemon on a temp root; all stopped
    /// by `tearDown` (also when `init` fails half way).
    final class Setup {
        let harness: DaemonHarness
        let emulator: SeedDevnodeEmulator
        let registry: TestRegistry
        let proxy: PythonHelper
        let image: NydusTestImage
        let reference: String
        private(set) var reader: SeedImageReader?

        init(_ name: String, bigMiB: Int = 8, readerTimeout: Int = 5) async throws {
            let harness = try DaemonHarness(name)
            var started: [() -> Void] = [{ harness.tearDown() }]
            do {
                let devnode = harness.directory + "/devnode.sock"
                let emulator = try SeedDevnodeEmulator(listeningAt: devnode, timeoutSeconds: 120)
                started.insert({ emulator.shutdown() }, at: 0)
                harness.extraArguments = [
                    "--front-end", "seed", "--seed-device", devnode, "--reader-timeout", String(readerTimeout),
                    "--readahead-bytes", "0",
                ]
                let registry = try TestRegistry()
                started.append { registry.stop() }
                let proxy = try PythonHelper.faultProxy(upstreamPort: registry.port, mode: "pass")
                started.append { proxy.stop() }
                let image = try NydusTestImage(
                    directory: harness.directory + "/image", files: NydusTestImage.files(smallCount: 12, bigMiB: bigMiB))
                try await image.push(with: RegistryTestSupport.client(), registry: registry.host, repository: "seed", tag: "v1")
                self.harness = harness
                self.emulator = emulator
                self.registry = registry
                self.proxy = proxy
                self.image = image
                reference = "127.0.0.1:\(proxy.port)/seed:v1"
                try harness.start()
            } catch {
                // Daemon and holder first (they hold the devnode), then the devnode, then the registry.
                for stop in started.reversed() { stop() }
                throw error
            }
        }

        func tearDown() {
            harness.tearDown()  // the daemon, its descriptor holders, the temp root
            emulator.shutdown()
            proxy.stop()
            registry.stop()
        }

        var blobBytesServed: Int64 {
            proxy.requests.filter { $0.hasPrefix("SENT ") && $0.contains(" GET ") && $0.contains("/blobs/") }
                .compactMap { Int64($0.split(separator: " ")[1]) }.reduce(0, +)
        }

        /// Waits until every blob GET the proxy started has logged what it sent: the proxy writes its `SENT` line
        /// after the last byte, which can be after the reader already has its chunk (a loaded machine showed it).
        func waitForProxyLog() async throws {
            for _ in 0..<600 {
                let started = proxy.blobGetsStarted
                let finished = proxy.requests.filter { $0.hasPrefix("SENT ") && $0.contains(" GET ") && $0.contains("/blobs/") }.count
                if finished >= started { return }
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        func setProxyMode(_ mode: String) throws {
            try Data(mode.utf8).write(to: URL(fileURLWithPath: proxy.logPath + ".mode"))
        }

        /// Pulls with snapctl through the counting proxy and opens the pulled image as the seed kernel would.
        func pull() throws -> SeedImageReader {
            let pulled = try runCommand(DaemonHarness.snapctlPath, ["--socket", harness.socket, "pull", reference])
            try #require(pulled.status == 0, "snapctl pull failed: \(pulled.output)\n\(harness.log())")
            let info = try #require(try harness.client().images().first)
            let reader = try SeedImageReader(root: harness.root, info: info, emulator: emulator)
            self.reader = reader
            return reader
        }

        /// The fd holder processes of this daemon's root (the seed devnode's holder among them).
        func killSeedHolder() {
            TestCleanup.killProcesses(withArgument: harness.root + "/seed-holder.sock")
        }
    }

    /// What EROFS over the seed kernel reads: the daemon's bootstrap, each data blob through the emulated devnode.
    struct SeedImageReader: Sendable {
        let bootstrap: ErofsImage
        let devices: [UInt16: any ErofsDeviceReader]
        /// Blob id -> backing file, as the daemon reports it.
        let backingFiles: [String: String]

        init(root: String, info: ImageInfo, emulator: SeedDevnodeEmulator) throws {
            let digest = try Digest(parsing: info.digest)
            bootstrap = try ErofsImage(path: ImageStoreLayout(root: root).bootstrapPath(manifestDigest: digest))
            backingFiles = Dictionary(uniqueKeysWithValues: info.blobs.map { ($0.id, $0.backingFile) })
            var devices: [UInt16: any ErofsDeviceReader] = [:]
            for (index, entry) in bootstrap.blobs.enumerated() {
                guard let path = backingFiles[entry.blobID] else {
                    throw ImageFormatError.badBlobTable(reason: "no backing file for \(entry.blobID)")
                }
                devices[UInt16(index + 1)] = EmulatedSeedDevice(emulator: emulator, path: path)
            }
            self.devices = devices
        }

        /// A whole file, on a thread of its own (the emulated devnode blocks its caller).
        func read(_ path: String) async throws -> [UInt8] {
            let bootstrap = self.bootstrap
            let devices = self.devices
            return try await onOwnThread { try bootstrap.readFile(path, devices: devices) }
        }

        /// `count` bytes at `offset` of a file, inside one chunk: one device read.
        func read(_ path: String, offset: UInt64, count: Int) async throws -> [UInt8] {
            try await timedRead(path, offset: offset, count: count).result.get()
        }

        /// `read(_:offset:count:)` with the times it started and finished, taken on the reading thread: a test
        /// task resumed late on a busy cooperative pool does not count against the daemon.
        func timedRead(_ path: String, offset: UInt64, count: Int) async throws -> TimedRead {
            let bootstrap = self.bootstrap
            let devices = self.devices
            return try await onOwnThread {
                let started = Date()
                let result = Result<[UInt8], any Error> {
                    let mappings = try bootstrap.chunkMappings(of: bootstrap.lookup(path))
                    guard
                        let mapping = mappings.first(where: {
                            $0.fileOffset <= offset && offset + UInt64(count) <= $0.fileOffset + $0.length
                        }),
                        let deviceOffset = mapping.deviceOffset, let device = devices[mapping.device]
                    else { throw ImageFormatError.notARegularFile(path: "\(path) has no single chunk for \(offset)+\(count)") }
                    return try device.readDevice(at: deviceOffset + (offset - mapping.fileOffset), count: count)
                }
                return TimedRead(result: result, started: started, finished: Date())
            }
        }
    }

    struct TimedRead: Sendable {
        let result: Result<[UInt8], any Error>
        let started: Date
        let finished: Date
    }

    /// The errno behind a failed emulated read.
    static func errno(of error: any Error) -> Int32? {
        if case ImageFormatError.io(_, let underlying) = error { return underlying.errno }
        return (error as? SyscallError)?.errno
    }

    @Test(
        "pull, read on demand: content matches, few bytes move, a second read fetches nothing, files sit where CachefilesNaming says, faults give EIO",
        .enabled(if: isRoot), .timeLimit(.minutes(5)))
    func onDemandReads() async throws {
        let setup = try await Setup("seed")
        defer { setup.tearDown() }
        let status = try setup.harness.client().status()
        #expect(status.frontEnd == "seed")
        #expect(setup.emulator.waitUntilBound(seconds: 10), "the daemon did not bind the devnode")
        let bound = setup.emulator.state.withLock { ($0.directory, $0.tag, $0.opens) }
        #expect(bound.0 == setup.harness.root && bound.1 == ImageStoreLayout.domain && bound.2 == 1)

        let reader = try setup.pull()
        let afterPull = setup.blobBytesServed
        #expect(afterPull < setup.image.dataBlobBytes / 10, "pull fetched \(afterPull) of \(setup.image.dataBlobBytes) bytes")

        // The backing file is exactly where the cachefiles naming puts it, prepared sparse at full size.
        for (blobID, path) in reader.backingFiles {
            let expected = setup.harness.root + "/cache/" + CachefilesNaming.relativePath(domain: ImageStoreLayout.domain, blobID: blobID)
            #expect(path == expected)
            #expect(FileSystem.exists(expected), "no backing file at \(expected)")
            #expect(expected.hasPrefix(setup.harness.root + "/cache/Ierofs,\(ImageStoreLayout.domain)/@"))
        }
        #expect(setup.emulator.state.withLock { $0.requests.isEmpty }, "nothing read yet, nothing requested")

        // Small files whole and the head of the big file, compared with the source.
        let small = setup.image.files.keys.filter { !$0.hasSuffix("big.bin") }.sorted()
        for path in small {
            #expect(try await reader.read(path) == setup.image.files[path], "\(path) differs")
        }
        let big = try #require(setup.image.files["usr/lib/big.bin"])
        #expect(try await reader.read("usr/lib/big.bin", offset: 0, count: 65536) == Array(big[0..<65536]))
        let requests = setup.emulator.state.withLock { $0.requests }
        #expect(!requests.isEmpty)
        // Every request named a file the daemon prepared, by its name inside the fan-out directory.
        let names = Set(reader.backingFiles.values.map { FileSystem.lastComponent($0) })
        #expect(requests.allSatisfy { names.contains($0.path) })
        try await setup.waitForProxyLog()
        let fetched = setup.blobBytesServed - afterPull
        #expect(fetched > 0)
        #expect(fetched < setup.image.dataBlobBytes * 3 / 10, "reads fetched \(fetched) of \(setup.image.dataBlobBytes) stored bytes")

        // Everything read is local now: reading again asks the devnode nothing and fetches nothing.
        try await setup.waitForProxyLog()
        let before = setup.blobBytesServed
        for path in small { #expect(try await reader.read(path) == setup.image.files[path]) }
        #expect(setup.blobBytesServed == before, "a second read fetched \(setup.blobBytesServed - before) bytes")
        #expect(setup.emulator.state.withLock { $0.requests.count } == requests.count)

        // Snapshots on the image are refused with the reason: no kernel mounts it.
        do {
            _ = try setup.harness.client().prepare(key: "c1", image: setup.reference)
            Issue.record("prepare --image succeeded under the seed front end")
        } catch let error as APIError {
            #expect(error.kind == .invalidArgument && error.message.contains("uuid="), "\(error)")
        }

        // A registry that corrupts what it serves: EIO, never the bad bytes; fine again once it is healthy.
        try setup.setProxyMode("flip")
        do {
            _ = try await reader.read("usr/lib/big.bin", offset: 3 << 20, count: 4096)
            Issue.record("a read of corrupted data succeeded")
        } catch {
            #expect(Self.errno(of: error) == EIO, "\(error)")
        }
        try setup.setProxyMode("pass")
        #expect(try await reader.read("usr/lib/big.bin", offset: 3 << 20, count: 4096) == Array(big[(3 << 20)..<((3 << 20) + 4096)]))

        // Registry stopped: EIO within the reader timeout (5 s here plus retries), no hang; local data still reads.
        setup.registry.stopProcess()
        let unreachable = try await reader.timedRead("usr/lib/big.bin", offset: 5 << 20, count: 4096)
        do {
            _ = try unreachable.result.get()
            Issue.record("read succeeded with the registry down")
        } catch {
            #expect(Self.errno(of: error) == EIO, "\(error)")
        }
        let took = unreachable.finished.timeIntervalSince(unreachable.started)
        #expect(took < 30, "EIO took \(took) s")
        #expect(try await reader.read("etc/hostname") == Array("ondemand\n".utf8))
        try setup.registry.start()
        #expect(try await reader.read("usr/lib/big.bin", offset: 5 << 20, count: 4096) == Array(big[(5 << 20)..<((5 << 20) + 4096)]))
        #expect(setup.emulator.state.withLock { $0.badCommands }.isEmpty)
    }

    @Test(
        "kill -9 or SIGTERM while a reader waits: the restarted daemon completes it with the right bytes; a released devnode gives EIO",
        .enabled(if: isRoot), .timeLimit(.minutes(5)))
    func restartWhileReading() async throws {
        // A reader timeout far beyond the test's steps: with 5 s, a loaded machine once took longer between the
        // read and the kill, and the daemon answered the held read with EIO first.
        let setup = try await Setup("seed-restart", readerTimeout: 60)
        defer { setup.tearDown() }
        let reader = try setup.pull()
        let big = try #require(setup.image.files["usr/lib/big.bin"])
        let journal = setup.harness.root + "/seed.journal"
        let emulator = setup.emulator

        // 1. The daemon took the request, journalled it and is fetching (slow registry) when it is killed
        //    (then, a second round, stopped with SIGTERM: with images pulled it leaves the devnode to its holder).
        for (round, how) in ["kill", "term"].enumerated() {
            // Held, not merely slow: on a loaded machine a 3 s delay once ran out before the kill, and the
            // daemon answered the reader first.
            try setup.setProxyMode("hold")
            let gets = setup.proxy.blobGetsStarted
            let offset = (1 + round) << 20
            let waiting = Task { try await reader.read("usr/lib/big.bin", offset: UInt64(offset), count: 8192) }
            try await waitFor("the reader to block on its request") { emulator.waitingReaders == 1 }
            try await waitFor("the daemon to journal the request") { ((try? FileSystem.readFile(journal)) ?? []).contains { $0 != 0 } }
            #expect(try await setup.proxy.waitForBlobGets(moreThan: gets), "the daemon's fetch never reached the registry")
            if how == "kill" { setup.harness.crash() } else { #expect(setup.harness.stop() == 0) }
            try await Task.sleep(for: .milliseconds(300))
            #expect(emulator.waitingReaders == 1, "after \(how) the reader must still wait: the holder keeps the devnode open")
            try setup.setProxyMode("pass")
            try setup.harness.start()
            #expect(try await waiting.value == Array(big[offset..<(offset + 8192)]), "the reader got wrong bytes after \(how)")
        }
        #expect(setup.harness.log().contains("completing seed requests a previous daemon left"))

        // 2. A read made while no daemon runs waits in the devnode and is served by the next one.
        setup.harness.crash()
        let later = (4 << 20) + 4096
        let queued = Task { try await reader.read("usr/lib/big.bin", offset: UInt64(later), count: 4096) }
        try await waitFor("the second reader to block") { emulator.waitingReaders == 1 }
        try setup.harness.start()
        #expect(try await queued.value == Array(big[later..<(later + 4096)]))
        #expect(setup.emulator.state.withLock { $0.opens } == 1, "the devnode was reopened instead of adopted from the holder")

        // 3. Daemon and holder gone: the devnode is released and the waiting reader gets EIO, not a hang.
        setup.harness.crash()
        let last = 6 << 20
        let orphan = Task { try await reader.timedRead("usr/lib/big.bin", offset: UInt64(last), count: 4096) }
        try await waitFor("the third reader to block") { emulator.waitingReaders == 1 }
        let released = Date()
        setup.killSeedHolder()
        let outcome = try await orphan.value
        do {
            _ = try outcome.result.get()
            Issue.record("a read succeeded with no daemon and no holder")
        } catch {
            #expect(Self.errno(of: error) == EIO, "\(error)")
        }
        #expect(
            outcome.finished.timeIntervalSince(released) < 10,
            "EIO came \(outcome.finished.timeIntervalSince(released)) s after the release")
        // A daemon stopped between `done` and clearing its journal slot makes its successor answer once more:
        // harmless duplicates; anything else is a protocol error.
        let answered = Set(setup.emulator.state.withLock { $0.requests }.map { "done \($0.id)" })
        #expect(setup.emulator.state.withLock { $0.badCommands }.allSatisfy { answered.contains($0) })
    }

    /// Polls `condition` every 50 ms for up to 30 s.
    func waitFor(_ what: String, _ condition: @escaping @Sendable () -> Bool) async throws {
        for _ in 0..<600 {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("timed out waiting for \(what)")
        throw CancellationError()
    }
}
