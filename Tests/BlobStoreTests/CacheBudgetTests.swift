import Foundation
import Glibc
import LinuxKernel
import Logging
import Synchronization
import TestFixtures
import TestThreads
import Testing

@testable import BlobStore
@testable import RAFS

/// A store whose saves fail: the catalog was unreachable (or the daemon died) between a punch and its save.
final class FailingStateStore: ChunkStateStore {
    struct Down: Error {}
    func save(blobID: Int64, bitmap: [UInt8]) throws { throw Down() }
}

@Suite("Cache budget: eviction of least recently used chunks, pins, grace, full disks", .ownThread)
struct CacheBudgetTests {
    struct Setup {
        let directory: String
        let rafs: RafsBlob
        let expected: [UInt8]
        /// Uncompressed bytes of the blob's chunks: what one complete blob holds against the budget.
        var chunkBytes: UInt64 { rafs.chunks.reduce(0) { $0 + UInt64($1.uncompressedSize) } }

        /// A fresh sparse backing file for blob `id` (the fixture's blob, registered under several ids).
        func backing(_ id: Int64, in directory: String? = nil) throws -> String {
            let path = (directory ?? self.directory) + "/backing-\(id)"
            FileManager.default.createFile(atPath: path, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.truncate(atOffset: rafs.deviceSize)
            try handle.close()
            return path
        }
    }

    /// The engine tests' fixture: the blob meta and the expected device bytes (backing files come per blob).
    static func setUp(_ label: String) throws -> Setup {
        let base = try BlobEngineTests.setUp(label)
        return Setup(directory: base.directory, rafs: base.rafs, expected: base.expected)
    }

    static func engine(budget: UInt64?, grace: Duration = .zero, store: (any ChunkStateStore)? = nil) -> BlobEngine {
        var settings = FetchSettings()
        settings.cacheBudgetBytes = budget
        settings.evictionGrace = grace
        settings.readaheadBytes = 0
        return BlobEngine(settings: settings, store: store, logger: Logger(label: "test"))
    }

    /// Whether the file has blocks allocated (a file whose chunks were all punched out has none).
    static func holdsData(_ path: String) throws -> Bool {
        try FileSystem.lstat(path).st_blocks > 0
    }

    @Test(
        "over budget, the least recently used blob's chunks are punched out before a fetch writes; reading them again fetches and verifies them"
    )
    func leastRecentlyUsedGoes() async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        let setup = try Self.setUp("budget-lru")
        defer { ImageFixtures.cleanup(setup.directory) }
        let source = FileRangeSource(path: ImageFixtures.blob)
        let store = MemoryStateStore()
        let engine = Self.engine(budget: 2 * setup.chunkBytes, store: store)
        var paths: [Int64: String] = [:]
        for id in Int64(1)...3 {
            paths[id] = try setup.backing(id)
            try engine.register(id: id, rafs: setup.rafs, backingPath: paths[id]!, source: source)
        }
        let size = setup.rafs.deviceSize
        try await engine.ensure(blobID: 1, offset: 0, length: size)
        try await engine.ensure(blobID: 2, offset: 0, length: size)
        // Blob 1 is read again: blob 2 is now the least recently used.
        #expect(engine.isPresent(blobID: 1, offset: 0, length: size))
        try await engine.ensure(blobID: 3, offset: 0, length: size)

        // The pass frees down to 90% of the budget: all of blob 2, then the oldest of blob 1, never blob 3.
        #expect(engine.progress(blobID: 2)?.present == 0, "the least recently used blob goes first")
        #expect(engine.progress(blobID: 3)?.present == setup.chunkBytes)
        #expect(engine.cacheUsage.storedBytes <= 2 * setup.chunkBytes)
        #expect(try !Self.holdsData(paths[2]!), "evicted chunks are holes on disk")
        #expect(store.saved.withLock { $0[2] } == [0], "the catalog learns the chunks are gone")
        #expect(engine.metrics.snapshot.chunksEvicted >= UInt64(setup.rafs.chunks.count))

        // Read again: fetched (one more GET), verified, the same bytes; now blob 1 is the oldest and goes.
        let before = source.requestCount
        try await engine.ensure(blobID: 2, offset: 0, length: size)
        #expect(source.requestCount == before + 1)
        #expect(try ImageFixtures.bytes(paths[2]!) == setup.expected)
        #expect(engine.progress(blobID: 1)?.present == 0, "blob 1 was read before blob 3 was written: it goes next")
        #expect(engine.cacheUsage.storedBytes <= 2 * setup.chunkBytes)
        for id in Int64(1)...3 {
            try await engine.ensure(blobID: id, offset: 0, length: size)
            #expect(try ImageFixtures.bytes(paths[id]!) == setup.expected, "blob \(id) reads back whole after evictions")
        }
    }

    @Test("pinned blobs, chunks used within the grace and refused blobs keep every chunk, whatever the budget")
    func keptChunks() async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        let setup = try Self.setUp("budget-kept")
        defer { ImageFixtures.cleanup(setup.directory) }
        let source = FileRangeSource(path: ImageFixtures.blob)
        let size = setup.rafs.deviceSize

        let pinned = Self.engine(budget: setup.chunkBytes)
        for id in Int64(1)...2 { try pinned.register(id: id, rafs: setup.rafs, backingPath: try setup.backing(id), source: source) }
        pinned.setPinned([1])
        try await pinned.ensure(blobID: 1, offset: 0, length: size)
        try await pinned.ensure(blobID: 2, offset: 0, length: size)
        #expect(pinned.progress(blobID: 1)?.present == setup.chunkBytes, "a pinned blob is never evicted")
        #expect(pinned.progress(blobID: 2)?.present == setup.chunkBytes, "readers are served over budget rather than failed")
        #expect(pinned.metrics.snapshot.evictionsShort >= 1)

        // A chunk just read may still be read by the kernel: the next fetch waits until it leaves the grace,
        // then evicts it, rather than punch it early or take the cache over its budget.
        let grace = Duration.milliseconds(500)
        let recent = Self.engine(budget: setup.chunkBytes, grace: grace)
        for id in Int64(3)...4 { try recent.register(id: id, rafs: setup.rafs, backingPath: try setup.backing(id), source: source) }
        try await recent.ensure(blobID: 3, offset: 0, length: size)
        let started = ContinuousClock.now
        try await recent.ensure(blobID: 4, offset: 0, length: size)
        #expect(ContinuousClock.now - started >= grace / 2, "the fetch waited for blob 3's chunks to leave the grace")
        #expect(recent.progress(blobID: 3)?.present == 0)
        #expect(recent.cacheUsage.peakStoredBytes <= setup.chunkBytes, "the budget held throughout")

        let refused = Self.engine(budget: setup.chunkBytes)
        refused.onEvict { $0 != 5 }
        for id in Int64(5)...6 { try refused.register(id: id, rafs: setup.rafs, backingPath: try setup.backing(id), source: source) }
        try await refused.ensure(blobID: 5, offset: 0, length: size)
        try await refused.ensure(blobID: 6, offset: 0, length: size)
        #expect(refused.progress(blobID: 5)?.present == setup.chunkBytes, "the front end could not re-arm blob 5")
        #expect(try ImageFixtures.bytes(try #require(Optional(setup.directory + "/backing-5"))) == setup.expected)
    }

    @Test("chunks being fetched by a prefetch are never evicted; they land whole and verified")
    func inFlightStays() async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        let setup = try Self.setUp("budget-inflight")
        defer { ImageFixtures.cleanup(setup.directory) }
        let ordered = setup.rafs.chunks.sorted { $0.compressedOffset < $1.compressedOffset }
        let gated = GatedStreamSource(path: ImageFixtures.blob, splitAt: ordered[0].compressedEnd)
        let engine = Self.engine(budget: nil)
        let path = try setup.backing(1)
        try engine.register(id: 1, rafs: setup.rafs, backingPath: path, source: gated)
        // A prefetch, which answers no reader (a reader's landed chunks stay too: `answeredRangeStays`).
        let reader = Task { try await engine.prefetch(blobID: 1, offset: 0, length: setup.rafs.deviceSize) }
        // The first chunk lands; the second waits at the gate, in flight.
        let deadline = ContinuousClock.now + .seconds(60)
        while engine.progress(blobID: 1)?.present == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let usage = engine.cacheUsage
        #expect(usage.storedBytes + usage.reservedBytes == setup.chunkBytes, "a landed chunk leaves its run's reservation")
        let freed = await engine.evict(bytes: UInt64.max)
        #expect(freed == UInt64(ordered[0].uncompressedSize), "only the chunk that landed may go")
        gated.release()
        await #expect(throws: Never.self) { try await reader.value }
        #expect(engine.progress(blobID: 1)?.present == UInt64(ordered[1].uncompressedSize))
        try await engine.ensure(blobID: 1, offset: 0, length: setup.rafs.deviceSize)
        #expect(try ImageFixtures.bytes(path) == setup.expected)
    }

    @Test(
        "a chunk a waiting reader counts on stays until the reader is answered, however long the rest of its range takes",
        arguments: [0, 200])
    func answeredRangeStays(graceMilliseconds: Int) async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        let setup = try Self.setUp("budget-answered-\(graceMilliseconds)")
        defer { ImageFixtures.cleanup(setup.directory) }
        let ordered = setup.rafs.chunks.sorted { $0.compressedOffset < $1.compressedOffset }
        // The second chunk's GET stops one byte in until the gate opens; the first chunk's GET never reaches it.
        let gated = GatedStreamSource(path: ImageFixtures.blob, splitAt: ordered[1].compressedOffset + 1)
        let grace = Duration.milliseconds(graceMilliseconds)
        let engine = Self.engine(budget: nil, grace: grace)
        let path = try setup.backing(1)
        try engine.register(id: 1, rafs: setup.rafs, backingPath: path, source: gated)
        try await engine.ensure(blobID: 1, offset: ordered[0].uncompressedOffset, length: UInt64(ordered[0].uncompressedSize))

        // A reader of the whole blob: the first chunk is present, the second is fetched (and held at the gate).
        let reader = Task { try await engine.ensure(blobID: 1, offset: 0, length: setup.rafs.deviceSize) }
        let deadline = ContinuousClock.now + .seconds(60)
        while gated.requests.withLock({ $0.count }) < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try #require(gated.requests.withLock { $0.count } == 2, "the second chunk's fetch never started")
        // The first chunk was last used when the reader came, longer ago than the grace: only the reader keeps it.
        try await Task.sleep(for: grace + .milliseconds(50))
        #expect(await engine.evict(bytes: UInt64.max) == 0, "the reader will be told the first chunk is present")
        gated.release()
        try await reader.value
        #expect(try ImageFixtures.bytes(path) == setup.expected, "the reader's range is whole when it is answered")

        // Answered, the chunks are the cache's again: they go once their grace has passed.
        try await Task.sleep(for: grace + .milliseconds(50))
        #expect(await engine.evict(bytes: UInt64.max) == setup.chunkBytes)

        // A front end that copies the bytes out itself holds them until its copy is done, however long that takes.
        gated.release()  // for the second chunk's GET, which comes again
        let lease = try await engine.hold(blobID: 1, offset: 0, length: setup.rafs.deviceSize)
        try await Task.sleep(for: grace + .milliseconds(50))
        #expect(await engine.evict(bytes: UInt64.max) == 0, "a held range stays")
        #expect(try ImageFixtures.bytes(path) == setup.expected)
        lease.end()
        lease.end()
        try await Task.sleep(for: grace + .milliseconds(50))
        #expect(await engine.evict(bytes: UInt64.max) == setup.chunkBytes, "an ended lease holds nothing, however often it is ended")
    }

    @Test("a blob reported complete is re-armed before it loses chunks, and loses them only once the grace has passed since")
    func rearmedBeforePunch() async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        let setup = try Self.setUp("budget-rearm")
        defer { ImageFixtures.cleanup(setup.directory) }
        let source = FileRangeSource(path: ImageFixtures.blob)
        let grace = Duration.milliseconds(300)
        let engine = Self.engine(budget: nil, grace: grace)
        let completions = Mutex<[Int64]>([])
        // When the front end re-armed each blob's reads (a complete blob's reads reach the kernel with no event,
        // so none is in `lastUsed`: one let through just before the re-arm may still be reading).
        let rearms = Mutex<[Int64: [ContinuousClock.Instant]]>([:])
        engine.onComplete { id in completions.withLock { $0.append(id) } }
        engine.onEvict { id in
            rearms.withLock { $0[id, default: []].append(ContinuousClock.now) }
            return true
        }
        let path = try setup.backing(1)
        try engine.register(id: 1, rafs: setup.rafs, backingPath: path, source: source)
        try await engine.ensure(blobID: 1, offset: 0, length: setup.rafs.deviceSize)
        // The report comes just after the readers are answered.
        let deadline = ContinuousClock.now + .seconds(60)
        while completions.withLock({ $0.isEmpty }), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(completions.withLock { $0 } == [1])
        try await Task.sleep(for: grace + .milliseconds(50))

        #expect(await engine.evict(bytes: UInt64.max) == setup.chunkBytes)
        let rearmed = try #require(rearms.withLock { $0[1]?.first }, "the front end was asked to re-arm the blob")
        #expect(ContinuousClock.now - rearmed >= grace, "the punch waited out the grace after the re-arm")
        #expect(try !Self.holdsData(path))

        // Incomplete since, it needs no second wait: its chunks go as soon as they are past the grace.
        try await engine.ensure(blobID: 1, offset: 0, length: UInt64(setup.rafs.chunks[0].uncompressedSize))
        try await Task.sleep(for: grace + .milliseconds(50))
        let before = ContinuousClock.now
        #expect(await engine.evict(bytes: UInt64.max) == UInt64(setup.rafs.chunks[0].uncompressedSize))
        #expect(try #require(rearms.withLock { $0[1]?.last }) > before, "the front end is still asked before every eviction")

        // A completion handler that never stops events (under a budget, complete blobs keep raising them, and
        // their reads keep `lastUsed` true): no re-arm is awaited, the first pass takes the blob.
        let seen = Self.engine(budget: nil, grace: grace)
        seen.onComplete(stopsEvents: false) { _ in }
        let seenPath = try setup.backing(2)
        try seen.register(id: 2, rafs: setup.rafs, backingPath: seenPath, source: source)
        try await seen.ensure(blobID: 2, offset: 0, length: setup.rafs.deviceSize)
        try await Task.sleep(for: grace + .milliseconds(50))
        #expect(await seen.evict(bytes: setup.chunkBytes) == setup.chunkBytes)
        #expect(seen.metrics.snapshot.evictionsShort == 0, "the first pass took the blob")
    }

    /// On main: the punch came right after the re-arm that removed the mark ("0.0 s after"): a pass while the
    /// front end was still placing its mark re-armed nothing and was taken as the re-arm, and the mark came after.
    @Test("a mark placed after a pass has begun is waited out like any other: the punch comes a grace after the re-arm that removed it")
    func markPlacedDuringPass() async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        let setup = try Self.setUp("budget-placing")
        defer { ImageFixtures.cleanup(setup.directory) }
        let grace = Duration.milliseconds(300)
        let engine = Self.engine(budget: nil, grace: grace)
        // The front end's ignore mark: set when the completion handler finishes, removed by a re-arm.
        let mark = Mutex<(entered: Bool, set: Bool, removedAt: ContinuousClock.Instant?)>((false, false, nil))
        let gate = DispatchSemaphore(value: 0)
        engine.onComplete { _ in
            mark.withLock { $0.entered = true }
            _ = gate.wait(timeout: .now() + 60)
            mark.withLock { $0.set = true }
        }
        engine.onEvict { _ in
            mark.withLock { mark in
                if mark.set { (mark.set, mark.removedAt) = (false, ContinuousClock.now) }
            }
            return true
        }
        let path = try setup.backing(1)
        try engine.register(id: 1, rafs: setup.rafs, backingPath: path, source: FileRangeSource(path: ImageFixtures.blob))
        try await engine.ensure(blobID: 1, offset: 0, length: setup.rafs.deviceSize)
        let deadline = ContinuousClock.now + .seconds(60)
        while !mark.withLock({ $0.entered }), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: grace + .milliseconds(50))
        // A pass while the mark is being placed: it has nothing to remove yet.
        _ = await engine.evict(bytes: UInt64.max)
        gate.signal()
        while !mark.withLock({ $0.set }), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: grace + .milliseconds(50))
        #expect(await engine.evict(bytes: UInt64.max) == setup.chunkBytes)
        let punchedAt = ContinuousClock.now
        let removedAt = try #require(mark.withLock { $0.removedAt }, "the mark was never removed before the punch")
        #expect(punchedAt - removedAt >= grace, "the punch came \(punchedAt - removedAt) after the re-arm that removed the mark")
    }

    @Test("a crash between the punch and the saved bitmap: the next start finds the holes and fetches the chunks again")
    func crashAfterPunch() async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        let setup = try Self.setUp("budget-crash")
        defer { ImageFixtures.cleanup(setup.directory) }
        let source = FileRangeSource(path: ImageFixtures.blob)
        let path = try setup.backing(1)
        let engine = Self.engine(budget: nil, store: FailingStateStore())
        try engine.register(id: 1, rafs: setup.rafs, backingPath: path, source: source)
        try await engine.ensure(blobID: 1, offset: 0, length: setup.rafs.deviceSize)
        #expect(await engine.evict(bytes: UInt64.max) == setup.chunkBytes)

        // The catalog still says both chunks are present.
        let restarted = Self.engine(budget: nil)
        try restarted.register(id: 1, rafs: setup.rafs, backingPath: path, source: source, bitmap: [0b11])
        #expect(restarted.progress(blobID: 1)?.present == 0, "a punched chunk is never taken for present")
        try await restarted.ensure(blobID: 1, offset: 0, length: setup.rafs.deviceSize)
        #expect(try ImageFixtures.bytes(path) == setup.expected)
    }

    @Test("a full disk: the engine evicts and retries; with nothing to evict the reader gets diskFull, and nothing stored is lost")
    func diskFull() async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        try #require(getuid() == 0, "mounting a small tmpfs needs root")
        let setup = try Self.setUp("budget-full")
        defer { ImageFixtures.cleanup(setup.directory) }
        // Room for one blob's chunks and a little more, not for two.
        let small = setup.directory + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        let room = (setup.chunkBytes + 4095) / 4096 * 4096 + 4096
        try Mounter.mount(KernelMount(type: "tmpfs", source: "tmpfs", options: ["size=\(room)"]), at: small)
        defer { try? Mounter.unmount(small, detach: true) }
        let source = FileRangeSource(path: ImageFixtures.blob)
        // A short grace: the chunks a fetch has just written must not be evicted to make room for its others.
        let grace = Duration.milliseconds(300)
        let engine = Self.engine(budget: nil, grace: grace)
        for id in Int64(1)...2 {
            try engine.register(id: id, rafs: setup.rafs, backingPath: try setup.backing(id, in: small), source: source)
        }
        let size = setup.rafs.deviceSize

        try await engine.ensure(blobID: 1, offset: 0, length: size)
        // Blob 1's chunks age past the grace (the property under test is time-based).
        try await Task.sleep(for: grace * 2)
        try await engine.ensure(blobID: 2, offset: 0, length: size)
        #expect(engine.progress(blobID: 1)?.present == 0, "blob 1 was evicted to make room")
        #expect(try ImageFixtures.bytes(small + "/backing-2") == setup.expected)

        engine.setPinned([2])
        try await Task.sleep(for: grace * 2)
        _ = await engine.evict(bytes: UInt64.max)
        #expect(engine.progress(blobID: 1)?.present == 0)
        await #expect {
            try await engine.ensure(blobID: 1, offset: 0, length: size)
        } throws: { error in
            guard case .diskFull(let blob, _) = error as? BlobStoreError else { return false }
            return blob == 1
        }
        #expect(engine.progress(blobID: 2)?.present == setup.chunkBytes, "what was stored stays")
        #expect(try ImageFixtures.bytes(small + "/backing-2") == setup.expected)
        engine.setPinned([])
        try await engine.ensure(blobID: 1, offset: 0, length: size)
        #expect(try ImageFixtures.bytes(small + "/backing-1") == setup.expected)
    }
}
