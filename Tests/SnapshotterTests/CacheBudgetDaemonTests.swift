import Foundation
import LinuxKernel
import SnapshotterAPI
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The cache budget end to end: the real daemon, registry, kernel mounts (fanotify front end) and files.
@Suite("Cache budget and full disks through the real daemon", .serialized, .ownThread)
struct CacheBudgetDaemonTests {
    typealias Setup = LazyImageTests.Setup

    /// A whole file, read on a thread of its own (`onOwnThread`).
    static func read(_ path: String) async -> Result<[UInt8], SyscallError> {
        (try? await onOwnThread { LazyImageTests.read(path) }) ?? .failure(SyscallError(call: "thread", errno: EAGAIN))
    }

    /// snapctl (or any tool) on a thread of its own.
    static func run(_ path: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await onOwnThread { try runCommand(path, arguments) }
    }

    /// `Setup.pullAndMount` on a thread of its own.
    static func pullAndMount(_ setup: Setup, key: String) async throws -> String {
        nonisolated(unsafe) let setup = setup  // used by that thread alone until it returns
        return try await onOwnThread { try setup.pullAndMount(key: key) }
    }

    /// Waits (deadline one minute) until `condition` holds, polling the daemon.
    static func wait(_ what: String, _ condition: () throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while try !condition() {
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out waiting until \(what)")
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Reads every file of the image through `target` (page cache dropped first) and compares it.
    static func checkAllFiles(_ setup: Setup, at target: String, _ note: String) async {
        let paths = setup.image.files.keys.map { target + "/" + $0 }
        LazyImageTests.evict(paths)
        for (path, bytes) in setup.image.files {
            let result = await Self.read(target + "/" + path)
            switch result {
            case .success(let read):
                // Compared first: a failed expectation would print both arrays whole.
                let same = read == bytes
                let zeros = zip(read, bytes).filter { $0 == 0 && $1 != 0 }.count
                #expect(same, "\(note): \(path) read back different bytes (\(zeros) zeros where data belongs)")
            case .failure(let error): Issue.record("\(note): \(path): \(error)")
            }
        }
    }

    @Test(
        "chunks evicted from a blob a predecessor told the kernel to ignore (complete) are fetched again on read, never read as holes",
        .timeLimit(.minutes(5)))
    func evictionRearmsCompleteBlobs() async throws {
        let setup = try await Setup("budget-rearm", frontEnd: "fanotify", bigMiB: 8)
        defer { setup.tearDown() }
        let target = try await Self.pullAndMount(setup, key: "c1")
        let client = setup.harness.client()
        // No budget: reading everything completes the blob and the front end marks it ignored in the group.
        await Self.checkAllFiles(setup, at: target, "first read")
        try await Self.wait("the image is complete") { try client.status().images?.first?.percentLocal == 100 }
        #expect(setup.harness.stop() == 0)

        // The next daemon (same fanotify group, kept by the holder) runs with a budget far below the image.
        let budget = 2 << 20
        setup.harness.extraArguments += ["--cache-max-bytes", "\(budget)", "--eviction-grace-ms", "1000"]
        try setup.harness.start()
        try await Self.wait("start-up brought the cache inside its budget") {
            (try client.status().cache?.presentBytes ?? Int64.max) <= Int64(budget)
        }
        let usage = try client.usage()
        #expect(usage.cache.budgetBytes == Int64(budget))
        #expect(usage.cache.evictedBytes > 0)
        #expect(usage.images.first?.diskBytes ?? Int64.max <= Int64(budget) + (1 << 20), "the holes are real: \(usage)")

        // Every file reads back whole: evicted ranges come to the daemon, which fetches and verifies them.
        let gets = setup.blobGets
        await Self.checkAllFiles(setup, at: target, "after eviction")
        #expect(setup.blobGets > gets, "evicted chunks were fetched again")
    }

    @Test("a budget keeps the cache small while an image bigger than it is read; pinned images keep everything", .timeLimit(.minutes(5)))
    func budgetAndPins() async throws {
        let budget = 3 << 20
        let setup = try await Setup(
            "budget-pin", frontEnd: "fanotify", bigMiB: 10,
            daemonArguments: ["--cache-max-bytes", "\(budget)", "--eviction-grace-ms", "1000"])
        defer { setup.tearDown() }
        let target = try await Self.pullAndMount(setup, key: "c1")
        let client = setup.harness.client()
        let status = try client.status()
        #expect(status.cache?.budgetBytes == Int64(budget))
        let shown = try await Self.run(DaemonHarness.snapctlPath, ["--socket", setup.harness.socket, "status"])
        #expect(
            shown.output.contains("budget 3.0 MiB") || shown.output.contains("budget 3 MiB"), "status shows the budget: \(shown.output)")

        await Self.checkAllFiles(setup, at: target, "read under a budget")
        // Reads faster than the grace may take the cache over; a pass after the grace brings it back.
        try await Self.wait("the cache is back inside its budget") {
            (try client.status().cache?.presentBytes ?? Int64.max) <= Int64(budget)
        }
        await Self.checkAllFiles(setup, at: target, "second read under a budget")
        let metrics = try client.metrics()
        #expect(metrics.contains("snapshotter_cache_budget_bytes \(budget)"))
        #expect(!metrics.contains("snapshotter_evicted_chunks_total 0\n"))

        // Pinned: everything read stays, also through a GC round (which enforces the budget at once).
        let pinned = try await Self.run(DaemonHarness.snapctlPath, ["--socket", setup.harness.socket, "pin", setup.reference])
        #expect(pinned.status == 0, "snapctl pin: \(pinned.output)")
        await Self.checkAllFiles(setup, at: target, "read while pinned")
        _ = try client.cleanup()
        let usage = try client.usage()
        let image = try #require(usage.images.first)
        #expect(image.pinned && image.presentBytes == image.size, "a pinned image loses nothing: \(image)")
        let table = try await Self.run(DaemonHarness.snapctlPath, ["--socket", setup.harness.socket, "usage"])
        #expect(table.output.contains("PINNED") && table.output.contains("yes"), "snapctl usage: \(table.output)")

        // Unpinned, the next round evicts it back under the budget.
        _ = try client.pin(reference: setup.reference, pinned: false)
        try await Self.wait("unpinned chunks are evicted") {
            _ = try client.cleanup()
            return (try client.status().cache?.presentBytes ?? Int64.max) <= Int64(budget)
        }
    }

    @Test(
        "a full disk: readers get EIO, prefetch gets resource_exhausted, stored chunks stay readable, the daemon serves on and recovers",
        .timeLimit(.minutes(5)))
    func diskFull() async throws {
        try #require(isRoot, "loop-mounting a small ext4 needs root")
        var image = ""
        let setup = try await Setup("budget-full", frontEnd: "fanotify", bigMiB: 12) { harness in
            // The daemon's root on a 40 MiB ext4 of its own (fanotify refuses tmpfs).
            image = harness.directory + "/small.ext4"
            let made = try runCommand("/usr/bin/truncate", ["-s", "40M", image])
            try #require(made.status == 0, "truncate: \(made.output)")
            let formatted = try runCommand("/sbin/mkfs.ext4", ["-q", "-F", "-m", "0", image])  // no root reserve: full means full
            try #require(formatted.status == 0, "mkfs.ext4: \(formatted.output)")
            try FileManager.default.createDirectory(atPath: harness.root, withIntermediateDirectories: true)
            let mounted = try runCommand("/usr/bin/mount", ["-o", "loop", image, harness.root])
            try #require(mounted.status == 0, "mount -o loop: \(mounted.output)")
        }
        defer { setup.tearDown() }
        let target = try await Self.pullAndMount(setup, key: "c1")
        let client = setup.harness.client()
        // Read the small files now: they are stored before the disk fills.
        let smallFiles = setup.image.files.filter { $0.key.hasPrefix("etc/") }
        for (path, bytes) in smallFiles { #expect(try await Self.read(target + "/" + path).get() == bytes) }

        // Pinned: a full disk may not evict them to make room (unpinned chunks would go, to be fetched again).
        _ = try client.pin(reference: setup.reference)
        // Fill the disk on purpose, leaving less than the big file needs.
        let filler = setup.harness.root + "/filler"
        let free = try FileSystem.capacity(of: setup.harness.root).available
        let filled = try await Self.run("/usr/bin/fallocate", ["-l", "\(free - (2 << 20))", filler])
        try #require(filled.status == 0, "fallocate: \(filled.output)")

        let big = setup.image.files["usr/lib/big.bin"]!
        switch await Self.read(target + "/usr/lib/big.bin") {
        case .success(let bytes):
            Issue.record("read \(bytes.count) bytes of a file that cannot fit: \(bytes == big ? "right" : "WRONG") bytes")
        case .failure(let error): #expect(error.errno == EIO, "a reader gets EIO: \(error)")
        }
        #expect {
            _ = try client.prefetch(reference: setup.reference)
        } throws: { error in
            (error as? APIError)?.kind == .resourceExhausted
        }
        // The daemon serves on: status answers, stored files read (also with the registry gone).
        #expect(try client.status().images?.count == 1)
        try setup.setProxyMode("fail")
        LazyImageTests.evict(smallFiles.keys.map { target + "/" + $0 })
        for (path, bytes) in smallFiles { #expect(try await Self.read(target + "/" + path).get() == bytes, "\(path) lost") }
        try setup.setProxyMode("pass")

        // Space again: the same file reads whole.
        try FileSystem.removeTree(filler)
        LazyImageTests.evict([target + "/usr/lib/big.bin"])
        #expect(try await Self.read(target + "/usr/lib/big.bin").get() == big)

        // A pull onto a disk with no room at all: resource_exhausted, nothing of it left, and it works once
        // there is room.
        let other = try NydusTestImage(
            directory: setup.harness.directory + "/other", files: ["etc/other": RegistryTestSupport.randomBytes(300_000, seed: 77)])
        try await other.push(with: RegistryTestSupport.client(), registry: setup.registry.host, repository: "other", tag: "v1")
        let otherReference = "127.0.0.1:\(setup.proxy.port)/other:v1"
        let full = try await Self.run("/usr/bin/fallocate", ["-l", "\(try FileSystem.capacity(of: setup.harness.root).available)", filler])
        try #require(full.status == 0, "fallocate: \(full.output)")
        #expect {
            _ = try client.pull(reference: otherReference)
        } throws: { error in
            (error as? APIError)?.kind == .resourceExhausted
        }
        #expect(try client.images().map(\.reference) == [setup.reference], "the failed pull left a record")
        try FileSystem.removeTree(filler)
        _ = try client.cleanup()
        _ = try client.pull(reference: otherReference)
        #expect(try client.images().count == 2)
    }

    @Test("kill -9 between an eviction's punch and its saved bitmap: after a restart every file reads back whole", .timeLimit(.minutes(5)))
    func crashWhileEvicting() async throws {
        let setup = try await Setup("budget-crash", frontEnd: "fanotify", bigMiB: 6)
        defer { setup.tearDown() }
        let target = try await Self.pullAndMount(setup, key: "c1")
        await Self.checkAllFiles(setup, at: target, "first read")
        // Armed, with a budget below the image: the first chunk punched kills the daemon (start-up's own pass
        // or a gc round, once the grace has passed).
        setup.harness.extraArguments += ["--cache-max-bytes", "\(1 << 20)", "--eviction-grace-ms", "1000"]
        setup.harness.stop()
        setup.harness.environment["SNAPSHOTTERD_CRASH_AT"] = "evict.punched"
        // Not waiting for readiness: start-up's own pass may kill it first.
        try setup.harness.start(waitReady: false)
        let process = try #require(setup.harness.process)
        let deadline = ContinuousClock.now + .seconds(60)
        while process.isRunning, ContinuousClock.now < deadline {
            _ = try? setup.harness.client().cleanup()
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(process.waitForExit() == ProcessExit(status: SIGKILL, signaled: true), "the daemon did not die at the punch")
        // Restarted without the budget: no eviction of its own may hide a chunk the catalog wrongly calls present.
        setup.harness.environment["SNAPSHOTTERD_CRASH_AT"] = nil
        setup.harness.extraArguments.removeLast(4)
        try setup.harness.start()
        await Self.checkAllFiles(setup, at: target, "after a crash mid-eviction")
    }
}
