import LinuxKernel
import Logging
import RAFS
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The cache's disk budget and its bookkeeping: the chunk bytes present in registered blobs, the bytes
/// fetches under way will write, the blobs that must never lose a chunk, and the front end's consent before a
/// blob loses chunks.
final class CacheSpace: Sendable {
    struct Accounting {
        /// Uncompressed bytes of the chunks present in registered blobs.
        var stored: UInt64 = 0
        /// Uncompressed bytes of the runs being fetched (reserved before they are written).
        var reserved: UInt64 = 0
    }

    /// Asked before a blob loses chunks; false keeps them all (see `BlobEngine.onEvict`).
    struct EvictionHandler: Sendable {
        let call: @Sendable (Int64) -> Bool
    }

    let accounting = Mutex(Accounting())
    let pinned = Mutex<Set<Int64>>([])
    let handler = Mutex<EvictionHandler?>(nil)
    /// One eviction pass at a time: a second fetch over budget waits for the first pass, then finds room.
    let passes = Mutex(0)
    /// Whether a pass is scheduled for when the chunks kept by the grace have aged out of it.
    let deferredPass = Mutex(false)

    func add(stored bytes: UInt64) { accounting.withLock { $0.stored += bytes } }
    func remove(stored bytes: UInt64) { accounting.withLock { $0.stored -= min($0.stored, bytes) } }
    func release(reserved bytes: UInt64) { accounting.withLock { $0.reserved -= min($0.reserved, bytes) } }
}

/// What the cache holds against its budget (`BlobEngine.cacheUsage`).
public struct CacheUsage: Equatable, Sendable {
    /// Uncompressed bytes of the chunks present in registered blobs.
    public var storedBytes: UInt64
    /// Bytes the fetches under way will write.
    public var reservedBytes: UInt64
    /// The budget (nil: none).
    public var budgetBytes: UInt64?
}

extension BlobEngine {
    public var cacheUsage: CacheUsage {
        let accounting = space.accounting.withLock { $0 }
        return CacheUsage(storedBytes: accounting.stored, reservedBytes: accounting.reserved, budgetBytes: settings.cacheBudgetBytes)
    }

    /// The blobs whose chunks are never evicted (the blobs of pinned images), replacing the previous set.
    public func setPinned(_ blobIDs: Set<Int64>) {
        space.pinned.withLock { $0 = blobIDs }
    }

    /// Called (off the cooperative pool) before chunks of a blob are evicted: the front end makes the kernel
    /// ask about that blob's ranges again (fanotify: the ignore mark a complete blob got is removed), so a read
    /// after the eviction comes to the engine instead of reading the hole. Returning false keeps the blob's
    /// chunks.
    public func onEvict(_ handler: @escaping @Sendable (Int64) -> Bool) {
        space.handler.withLock { $0 = CacheSpace.EvictionHandler(call: handler) }
    }

    /// Before a fetch writes `bytes`: when they would take the cache over its budget, least recently used
    /// chunks are evicted down to the low-water mark (90% of the budget, so passes are rare), then the bytes are
    /// reserved. Nothing evictable (all pinned, being read or fetched, or used within the grace) lets the cache
    /// go over its budget rather than fail a reader; the metrics count it.
    func reserve(_ bytes: UInt64) async {
        guard let budget = settings.cacheBudgetBytes else {
            space.accounting.withLock { $0.reserved += bytes }
            return
        }
        let overBy = space.accounting.withLock { state -> UInt64 in
            let wanted = state.stored + state.reserved + bytes
            guard wanted > budget else {
                state.reserved += bytes
                return 0
            }
            return wanted - budget / 10 * 9
        }
        guard overBy > 0 else { return }
        _ = try? await runBlocking { self.evictNow(bytes: overBy, budget: budget, reserving: bytes) }
    }

    /// Blocking: when the cache is over its budget (a budget lowered, a restart, chunks the grace kept), evicts
    /// down to the low-water mark. Returns the bytes freed.
    @discardableResult
    public func enforceBudget() -> UInt64 {
        guard let budget = settings.cacheBudgetBytes else { return 0 }
        return evictNow(bytes: 0, budget: budget, reserving: 0)
    }

    /// Evicts least recently used chunks until `bytes` are freed or nothing more may go; returns the bytes
    /// freed. Chunks of pinned blobs, chunks being fetched and chunks used within `evictionGrace` stay.
    @discardableResult
    public func evict(bytes: UInt64) async -> UInt64 {
        (try? await runBlocking { self.evictNow(bytes: bytes, budget: nil, reserving: 0) }) ?? 0
    }

    /// `evict(bytes:)` for callers already off the cooperative pool.
    @discardableResult
    public func evictBlocking(bytes: UInt64) -> UInt64 {
        evictNow(bytes: bytes, budget: nil, reserving: 0)
    }

    /// Uncompressed bytes of the chunks under a range that are neither present nor being fetched: what making
    /// it present would still write (whole blocks).
    public func missingBytes(blobID: Int64, offset: UInt64, length: UInt64) -> UInt64 {
        guard let blob = blobs.withLock({ $0[blobID] }), offset < blob.rafs.deviceSize else { return 0 }
        let chunks = blob.rafs.chunks(coveringUncompressed: offset, length: min(length, blob.rafs.deviceSize - offset))
        return blob.state.withLock { state in
            chunks.reduce(UInt64(0)) { sum, chunk in
                state.isIdle(Int(chunk.index)) ? sum + (UInt64(chunk.uncompressedSize) + 4095) / 4096 * 4096 : sum
            }
        }
    }

    /// One eviction pass (blocking). With a `budget`, the pass first checks whether an earlier pass already made
    /// room, and reserves `reserving` bytes at its end whatever it freed.
    private func evictNow(bytes: UInt64, budget: UInt64?, reserving: UInt64) -> UInt64 {
        space.passes.withLock { passes in
            passes += 1
            defer {
                if reserving > 0 { space.accounting.withLock { $0.reserved += reserving } }
            }
            var wanted = bytes
            if let budget {
                let current = space.accounting.withLock { $0.stored + $0.reserved } + reserving
                guard current > budget else { return 0 }
                wanted = current - budget / 10 * 9
            }
            let started = monotonicNanoseconds()
            let now = started
            let grace =
                UInt64(settings.evictionGrace.components.seconds) * 1_000_000_000
                + UInt64(settings.evictionGrace.components.attoseconds / 1_000_000_000)
            let cutoff = now > grace ? now - grace : 0
            let pinned = space.pinned.withLock { $0 }
            let registered = blobs.withLock { Array($0.values) }
            // Every evictable chunk with when it was last used; the oldest go first.
            var candidates: [(used: UInt64, blob: Int, index: Int32)] = []
            var recent = 0
            for (position, blob) in registered.enumerated() where !pinned.contains(blob.id) {
                blob.state.withLock { state in
                    for index in state.present.indices where state.present[index] && state.inFlight[UInt32(index)] == nil {
                        if state.lastUsed[index] <= cutoff {
                            candidates.append((state.lastUsed[index], position, Int32(index)))
                        } else {
                            recent += 1
                        }
                    }
                }
            }
            candidates.sort { $0.used < $1.used }
            var chosen: [Int: [Int]] = [:]
            var order: [Int] = []
            var planned: UInt64 = 0
            for candidate in candidates where planned < wanted {
                if chosen[candidate.blob] == nil { order.append(candidate.blob) }
                chosen[candidate.blob, default: []].append(Int(candidate.index))
                planned += UInt64(registered[candidate.blob].rafs.chunks[Int(candidate.index)].uncompressedSize)
            }
            let handler = space.handler.withLock { $0 }
            var freedBytes: UInt64 = 0
            var freedChunks = 0
            for position in order {
                let blob = registered[position]
                if let handler, !handler.call(blob.id) {
                    logger.warning("chunks kept: the front end could not re-arm the blob's reads", metadata: ["blob.id": "\(blob.id)"])
                    continue
                }
                let freed = blob.evict(chosen[position] ?? [], usedBefore: cutoff)
                if let error = freed.error {
                    logger.warning("eviction stopped in a blob", metadata: ["blob.id": "\(blob.id)", "error": "\(error)"])
                }
                guard freed.chunks > 0 else { continue }
                space.remove(stored: freed.bytes)
                freedBytes += freed.bytes
                freedChunks += freed.chunks
                if let store {
                    do {
                        try store.save(blobID: blob.id, bitmap: blob.bitmap)
                    } catch {
                        // The holes are on disk: a restart finds them (SEEK_HOLE) whatever the bitmap says.
                        logger.warning("chunk state not saved after eviction", metadata: ["blob.id": "\(blob.id)", "error": "\(error)"])
                    }
                }
            }
            metrics.recordEviction(
                chunks: freedChunks, bytes: freedBytes, nanoseconds: monotonicNanoseconds() - started, short: freedBytes < wanted)
            // Over budget with chunks the grace kept: look again once they have aged out of it.
            if budget != nil, freedBytes < wanted, recent > 0 { scheduleDeferredPass() }
            logger.debug(
                "evicted",
                metadata: [
                    "cache.evicted_bytes": "\(freedBytes)", "cache.evicted_chunks": "\(freedChunks)", "cache.wanted_bytes": "\(wanted)",
                    "cache.candidates": "\(candidates.count)",
                ])
            return freedBytes
        }
    }

    /// One pass `evictionGrace` from now (at most one scheduled at a time): the cache returns inside its budget
    /// once what the grace protected may go, without waiting for the next fetch.
    private func scheduleDeferredPass() {
        let scheduled = space.deferredPass.withLock { pending in
            defer { pending = true }
            return !pending
        }
        guard scheduled else { return }
        let delay = settings.evictionGrace + .milliseconds(100)
        Task.detached(priority: .background) {
            try? await Task.sleep(for: delay)
            self.space.deferredPass.withLock { $0 = false }
            _ = try? await runBlocking { self.enforceBudget() }
        }
    }
}
