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
        /// The most `stored` has been since start: what the budget is judged by.
        var peakStored: UInt64 = 0
    }

    /// What one eviction pass did, and why it could not do more.
    struct PassOutcome {
        var freed: UInt64 = 0
        /// An earlier pass had made room already: nothing was needed.
        var roomAlready = false
        /// Evictable chunks kept only because they were used within the grace.
        var recent = 0
        /// When the first of those leaves the grace (monotonic nanoseconds).
        var nextAgeOut: UInt64 = .max
        /// When the first blob kept only because its reads were re-armed within the grace may go (.max: none).
        var rearmSettles: UInt64 = .max

        /// `count` chunks stay until `until` (monotonic nanoseconds).
        mutating func kept(_ count: Int, until: UInt64, rearm: Bool) {
            recent += count
            nextAgeOut = min(nextAgeOut, until)
            if rearm { rearmSettles = min(rearmSettles, until) }
        }
    }

    /// Asked before a blob loses chunks; false keeps them all (see `BlobEngine.onEvict`).
    struct EvictionHandler: Sendable {
        let call: @Sendable (Int64) -> Bool
    }

    let accounting = Mutex(Accounting())
    let pinned = Mutex<Set<Int64>>([])
    let handler = Mutex<EvictionHandler?>(nil)
    /// One eviction pass at a time: a second fetch over budget waits for the first pass, then finds room.
    let passLock = Mutex(())
    /// Whether a pass is scheduled for when the chunks kept by the grace have aged out of it.
    let deferredPass = Mutex(false)

    func add(stored bytes: UInt64) {
        accounting.withLock { state in
            state.stored += bytes
            state.peakStored = max(state.peakStored, state.stored)
        }
    }
    /// A chunk of a fetched run was written: its bytes move from the run's reservation to what is stored (when
    /// it was not present already), so concurrent fetches never count them twice.
    func land(_ bytes: UInt64, newlyStored: Bool) {
        accounting.withLock { state in
            state.reserved -= min(state.reserved, bytes)
            guard newlyStored else { return }
            state.stored += bytes
            state.peakStored = max(state.peakStored, state.stored)
        }
    }
    func remove(stored bytes: UInt64) { accounting.withLock { $0.stored -= min($0.stored, bytes) } }
    func release(reserved bytes: UInt64) { accounting.withLock { $0.reserved -= min($0.reserved, bytes) } }
}

/// What the cache holds against its budget (`BlobEngine.cacheUsage`).
public struct CacheUsage: Equatable, Sendable {
    /// Uncompressed bytes of the chunks present in registered blobs.
    public var storedBytes: UInt64
    /// Bytes the fetches under way will write.
    public var reservedBytes: UInt64
    /// The most chunk bytes the cache has held since the daemon started.
    public var peakStoredBytes: UInt64
    /// The budget (nil: none).
    public var budgetBytes: UInt64?
}

extension BlobEngine {
    public var cacheUsage: CacheUsage {
        let accounting = space.accounting.withLock { $0 }
        return CacheUsage(
            storedBytes: accounting.stored, reservedBytes: accounting.reserved, peakStoredBytes: accounting.peakStored,
            budgetBytes: settings.cacheBudgetBytes)
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
    /// reserved. When what could go is still within its grace, the fetch waits for it to age out (the cache
    /// churns faster than the grace: readers slow down rather than the disk fill up), and for a blob reported
    /// complete, whose reads the front end re-arms first, for the grace after that: at most three graces.
    /// Only what can never go (pinned blobs, chunks being fetched or leased by waiting readers) lets the cache
    /// exceed its budget; the metrics count such passes.
    func reserve(_ bytes: UInt64) async {
        guard let budget = settings.cacheBudgetBytes else {
            space.accounting.withLock { $0.reserved += bytes }
            return
        }
        let waitLimit = monotonicNanoseconds() + 3 * nanoseconds(settings.evictionGrace) + 1_000_000_000
        while true {
            let overBy = space.accounting.withLock { state -> UInt64 in
                let wanted = state.stored + state.reserved + bytes
                guard wanted > budget else {
                    state.reserved += bytes
                    return 0
                }
                return wanted - budget / 10 * 9
            }
            guard overBy > 0 else { return }
            let outcome = (try? await runBlocking { self.evictNow(bytes: overBy, budget: budget, incoming: bytes) }) ?? .init()
            if outcome.freed > 0 || outcome.roomAlready { continue }
            let now = monotonicNanoseconds()
            if outcome.recent > 0, now < waitLimit {
                let until = min(max(outcome.nextAgeOut, now + 1_000_000), waitLimit)
                try? await Task.sleep(for: .nanoseconds(Int64(until - now)))
                continue
            }
            space.accounting.withLock { $0.reserved += bytes }
            return
        }
    }

    /// Blocking: when the cache is over its budget (a budget lowered, a restart, chunks the grace kept), evicts
    /// down to the low-water mark. Returns the bytes freed.
    @discardableResult
    public func enforceBudget() -> UInt64 {
        guard let budget = settings.cacheBudgetBytes else { return 0 }
        let outcome = evictNow(bytes: 0, budget: budget, incoming: 0)
        // Over budget with chunks the grace kept: look again once they have aged out of it.
        if outcome.recent > 0, cacheUsage.storedBytes > budget { scheduleDeferredPass() }
        return outcome.freed
    }

    /// Evicts least recently used chunks until `bytes` are freed or nothing more may go; returns the bytes
    /// freed. Chunks of pinned blobs, chunks being fetched and chunks used within `evictionGrace` stay.
    /// Blobs whose reads the front end must re-arm first (reported complete) go once the grace has passed since
    /// the re-arm: the call waits for that, at most a grace or so.
    @discardableResult
    public func evict(bytes: UInt64) async -> UInt64 {
        (try? await runBlocking { self.evictBlocking(bytes: bytes) }) ?? 0
    }

    /// `evict(bytes:)` for callers already off the cooperative pool.
    @discardableResult
    public func evictBlocking(bytes: UInt64) -> UInt64 {
        var freed: UInt64 = 0
        // A pass re-arms the complete blobs it picked and takes them in the next one; a third catches blobs the
        // second picked in their place while they settled.
        for _ in 0..<3 {
            let outcome = evictNow(bytes: bytes - freed, budget: nil, incoming: 0)
            freed += outcome.freed
            guard freed < bytes, outcome.rearmSettles != .max else { break }
            let now = monotonicNanoseconds()
            if outcome.rearmSettles > now { usleep(useconds_t(min((outcome.rearmSettles - now) / 1000 + 1, 60_000_000))) }
        }
        return freed
    }

    /// Uncompressed bytes of the chunks under a range that are neither present nor being fetched: what making
    /// it present would still write (whole blocks).
    public func missingBytes(blobID: Int64, offset: UInt64, length: UInt64) -> UInt64 {
        guard let blob = blobs.withLock({ $0[blobID] }), offset < blob.rafs.deviceSize else { return 0 }
        let chunks = blob.rafs.chunks(coveringUncompressed: offset, length: min(length, blob.rafs.deviceSize - offset))
        return blob.state.withLock { state in
            chunks.reduce(UInt64(0)) { sum, chunk in
                state.isIdle(Int(chunk.index)) ? sum + chunk.blockAlignedSize : sum
            }
        }
    }

    /// One eviction pass (blocking). With a `budget`, the pass first checks whether an earlier pass already made
    /// room for `incoming` more bytes (then it frees nothing and says so).
    private func evictNow(bytes: UInt64, budget: UInt64?, incoming: UInt64) -> CacheSpace.PassOutcome {
        space.passLock.withLock { _ in
            var wanted = bytes
            if let budget {
                let current = space.accounting.withLock { $0.stored + $0.reserved } + incoming
                guard current > budget else { return CacheSpace.PassOutcome(roomAlready: true) }
                wanted = current - budget / 10 * 9
            }
            let started = monotonicNanoseconds()
            let now = started
            let grace = nanoseconds(settings.evictionGrace)
            let cutoff = now > grace ? now - grace : 0
            let pinned = space.pinned.withLock { $0 }
            let registered = blobs.withLock { Array($0.values) }
            // Every evictable chunk with when it was last used; the oldest go first.
            var candidates: [(used: UInt64, blob: Int, index: Int32)] = []
            var outcome = CacheSpace.PassOutcome()
            for (position, blob) in registered.enumerated() where !pinned.contains(blob.id) {
                let readiness = blob.evictionReadiness(cutoff: cutoff, grace: grace)
                if case .settling(let until) = readiness {
                    outcome.kept(
                        blob.state.withLock { state in state.present.indices.count(where: state.isEvictable) }, until: until, rearm: true)
                    continue
                }
                blob.state.withLock { state in
                    for index in state.present.indices where state.isEvictable(index) {
                        if state.lastUsed[index] <= cutoff {
                            candidates.append((state.lastUsed[index], position, Int32(index)))
                        } else {
                            outcome.kept(1, until: state.lastUsed[index] + grace, rearm: false)
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
                let indexes = chosen[position] ?? []
                let readiness = blob.evictionReadiness(cutoff: cutoff, grace: grace)
                if case .settling(let until) = readiness {
                    outcome.kept(indexes.count, until: until, rearm: true)
                    continue
                }
                if let handler, !handler.call(blob.id) {
                    logger.warning("chunks kept: the front end could not re-arm the blob's reads", metadata: ["blob.id": "\(blob.id)"])
                    continue
                }
                let reports: Int
                switch readiness {
                case .ready(let count):
                    reports = count
                case .settling:
                    continue  // kept above
                case .needsRearm(let count):
                    // Reported complete, the kernel may read it with no event (no `lastUsed`): a read let through
                    // just before the re-arm may still be reading. Its chunks go once the grace has passed.
                    let rearmedAt = monotonicNanoseconds()
                    blob.noteRearmed(reports: count, at: rearmedAt)
                    outcome.kept(indexes.count, until: rearmedAt + grace, rearm: true)
                    continue
                }
                let freed = blob.evict(indexes, usedBefore: cutoff, reports: reports)
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
            logger.debug(
                "evicted",
                metadata: [
                    "cache.evicted_bytes": "\(freedBytes)", "cache.evicted_chunks": "\(freedChunks)", "cache.wanted_bytes": "\(wanted)",
                    "cache.candidates": "\(candidates.count)",
                ])
            outcome.freed = freedBytes
            return outcome
        }
    }

    func nanoseconds(_ duration: Duration) -> UInt64 {
        UInt64(duration.components.seconds) * 1_000_000_000 + UInt64(duration.components.attoseconds / 1_000_000_000)
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
