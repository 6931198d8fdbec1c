import Dispatch
import LinuxKernel
import Logging
import RAFS
import Synchronization

/// The on-demand fetch engine: `ensure(blob, offset, length)` returns once that uncompressed range of the
/// blob's backing file holds verified data.
///
/// Missing chunks are fetched with one ranged GET per run of adjacent chunks (grown to the minimum fetch
/// size, capped at the maximum), at most N at once with on-demand work ahead of prefetch; every chunk is
/// decompressed and checked against its digest before it is written at its uncompressed offset; each chunk
/// is fetched once however many readers wait on it. A failure reaches every waiter as an error, and the
/// chunk stays missing so the next reader retries.
public final class BlobEngine: Sendable {
    public let settings: FetchSettings
    public let metrics = EngineMetrics()
    let blobs = Mutex<[Int64: LazyBlob]>([:])
    private let scheduler: FetchScheduler
    let store: (any ChunkStateStore)?
    let logger: Logger
    let space = CacheSpace()
    /// Round trip and rate measured per registry host: read-ahead windows grow with their product.
    public let links = LinkEstimates()
    /// A closure kept in a struct: a bare function type read through `Mutex.withLock`'s inout argument is
    /// wrapped in two more reabstraction thunks on every read, so its calls grew slower with each one
    /// (start-up with 10,000 complete blobs spent most of its time in the chain).
    private struct CompletionHandler: Sendable {
        let call: @Sendable (Int64) -> Void
        let stopsEvents: Bool
    }
    private let completion = Mutex<CompletionHandler?>(nil)

    /// Called (once per registration) when every chunk of a blob is present, also at `register`.
    /// `stopsEvents`: the handler may have the front end stop asking about the blob (fanotify's ignore mark).
    /// Its reads then reach the kernel unseen, so an eviction re-arms the blob and waits a grace before it
    /// punches (`LazyBlob.evictionReadiness`); a handler that never stops events spares evictions that wait.
    public func onComplete(stopsEvents: Bool = true, _ handler: @escaping @Sendable (Int64) -> Void) {
        completion.withLock { $0 = CompletionHandler(call: handler, stopsEvents: stopsEvents) }
    }

    public init(settings: FetchSettings = FetchSettings(), store: (any ChunkStateStore)? = nil, logger: Logger) {
        self.settings = settings
        self.store = store
        self.logger = logger
        scheduler = FetchScheduler(limit: settings.maximumConcurrentFetches)
    }

    /// Serves `rafs` lazily from `backingPath` (a sparse file of the blob's uncompressed size), fetching
    /// missing chunks from `source`. `bitmap` is the catalog's record of present chunks; it is checked
    /// against the file's holes. A blob registered already (two pulls sharing it, racing) keeps its state
    /// and in-flight fetches and gains `source` as another place to fetch from.
    public func register(id: Int64, rafs: RafsBlob, backingPath: String, source: any BlobRangeSource, bitmap: [UInt8] = []) throws {
        guard rafs.hasAllDigests else { throw BlobStoreError.unverifiable(blob: id) }
        if let existing = blobs.withLock({ $0[id] }) {
            existing.add(source)
            return
        }
        let present = try LazyBlob.confirmedPresent(bitmap: bitmap, rafs: rafs, backingPath: backingPath)
        let blob = try LazyBlob(id: id, rafs: rafs, backingPath: backingPath, sources: [source], present: present)
        let winner = blobs.withLock { blobs in
            if let existing = blobs[id] { return existing }
            blobs[id] = blob
            return blob
        }
        guard winner === blob else {
            winner.add(source)
            return
        }
        space.add(stored: blob.state.withLock { $0.presentBytes })
        if present.allSatisfy({ $0 }) {
            completion.withLock { $0 }?.call(id)
            blob.completionPlaced()
        }
    }

    /// Where the blob's files end (`ErofsImage.fileDataEnds`): from then on read-ahead stays inside the file,
    /// or the directory, its reader is in. Until then (or without it) windows are bounded by size only.
    public func setFileLayout(blobID: Int64, fileEnds: [ErofsImage.FileDataEnd]) {
        guard let blob = blobs.withLock({ $0[blobID] }) else { return }
        blob.fileEnds.withLock { $0 = fileEnds }
    }

    /// Another place the blob's stored bytes can be fetched from (another image that commits to the same chunk
    /// map names the blob in its own registry): tried when the sources before it fail. Sources already known
    /// (by `BlobRangeSource.identity`) are not added again.
    public func addSource(blobID: Int64, _ source: any BlobRangeSource) {
        blobs.withLock { $0[blobID] }?.add(source)
    }

    public func unregister(id: Int64) {
        guard let blob = blobs.withLock({ $0.removeValue(forKey: id) }) else { return }
        space.remove(stored: blob.state.withLock { $0.presentBytes })
    }

    /// Bytes of the blob's chunk data that are local, and the total of its chunks (alignment gaps between
    /// chunks hold no data and count in neither).
    public func progress(blobID: Int64) -> (present: UInt64, total: UInt64)? {
        guard let blob = blobs.withLock({ $0[blobID] }) else { return nil }
        return (blob.state.withLock { $0.presentBytes }, blob.chunkBytes)
    }

    /// Stored bytes fetched for the blob since it was registered.
    public func bytesFetched(blobID: Int64) -> UInt64 {
        blobs.withLock { $0[blobID] }?.state.withLock { $0.bytesFetched } ?? 0
    }

    /// Whether every chunk under `[offset, offset + length)` is present: front ends answer such requests at
    /// once, without a task hop.
    public func isPresent(blobID: Int64, offset: UInt64, length: UInt64) -> Bool {
        guard let blob = blobs.withLock({ $0[blobID] }), let wanted = blob.rafs.describedChunks(offset: offset, length: length) else {
            return false
        }
        let present = blob.state.withLock { state in
            guard wanted.allSatisfy({ state.present[Int($0.index)] }) else { return false }
            // The front end answers at once and the kernel reads these bytes next: eviction's grace starts now.
            let now = monotonicNanoseconds()
            for chunk in wanted { state.lastUsed[Int(chunk.index)] = now }
            return true
        }
        if present {
            metrics.recordHits(wanted.count)
            readAhead(blobID: blobID, offset: offset, length: length)
        }
        return present
    }

    /// Makes `[offset, offset + length)` of the blob present, or throws (after `readerTimeout` at most).
    /// A timed-out reader is released; the fetch itself goes on for whoever else waits on it.
    /// A range the image does not describe (no chunk under some 4 KiB block of it) is refused at once.
    public func ensure(blobID: Int64, offset: UInt64, length: UInt64) async throws {
        try await hold(blobID: blobID, offset: offset, length: length).end()
    }

    /// `ensure`, returning with the range's chunks leased: none of them is evicted until the lease ends. A front
    /// end that copies the bytes out of the backing file ends it after the copy.
    public func hold(blobID: Int64, offset: UInt64, length: UInt64) async throws -> RangeLease {
        guard let blob = blobs.withLock({ $0[blobID] }) else { throw BlobStoreError.unknownBlob(blobID) }
        guard blob.rafs.describes(offset: offset, length: length) else {
            metrics.recordFailure()
            throw BlobStoreError.undescribedRange(blob: blobID, offset: offset, length: length, deviceSize: blob.rafs.deviceSize)
        }
        let timeout = settings.readerTimeout
        // A sequential reader's next window starts streaming now, alongside this range's own fetch.
        readAhead(blobID: blobID, offset: offset, length: length)
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RangeLease, any Error>) in
            let once = ResumeOnce(continuation)
            let timer = Task {
                try await Task.sleep(for: timeout)
                once.resume(.failure(BlobStoreError.timedOut(blob: blobID, offset: offset, length: length, after: timeout)))
            }
            Task {
                do {
                    let lease = try await self.ensureUnbounded(blobID: blobID, offset: offset, length: length, priority: .onDemand)
                    // The reader gave up (timed out): nobody will read under this lease.
                    if !once.resume(.success(lease)) { lease.end() }
                } catch {
                    once.resume(.failure(error))
                }
                timer.cancel()
            }
        }
    }

    /// Sequential readers come back for what follows: when an on-demand range starts near where the previous
    /// one ended, the window after it is fetched in the background (prefetch priority, one fetch per chunk as
    /// always). Like the kernel's readahead, the window starts small (4 chunks) and doubles with each top-up up
    /// to `readaheadBytes` (or `readaheadBandwidthDelayProducts` times the link's measured bandwidth-delay
    /// product where that is more, up to `maximumReadaheadBytes`), so a short sequential run (a few small files read in a row) fetches little it does
    /// not read, while a long one soon streams 16 MiB ahead; a window is topped up once at least half of it
    /// is neither local nor on its way, so it streams as a few long GETs rather than one per chunk, or when the
    /// very next chunk is neither, so the reader never runs into a gap. When the blob's file layout is known, a
    /// reader still in the file it started in reads ahead only to that file's end (paging in a binary does not
    /// fetch the files after it), and one reading files in a row only to the end of its directory. A reader's
    /// first read at a file's start brings the rest of that file up to half the initial window with it. Random
    /// readers fetch only what they read.
    private func readAhead(blobID: Int64, offset: UInt64, length: UInt64) {
        let end = offset + length
        guard settings.readaheadBytes > 0, let blob = blobs.withLock({ $0[blobID] }), end < blob.rafs.deviceSize else { return }
        // The window's upper bound: the configured one, or a few bandwidth-delay products of the blob's link
        // where that is more (a long fat link needs more in flight than a near one to stay busy).
        let bytes = links.readaheadWindow(
            place: blob.linkPlace, configured: settings.readaheadBytes,
            multiple: settings.readaheadBandwidthDelayProducts, ceiling: max(settings.readaheadBytes, settings.maximumReadaheadBytes))
        // Near the previous end counts as sequential: readahead windows overlap or leave small gaps.
        let slack = 2 * UInt64(max(blob.rafs.entry.chunkSize, 1 << 20))
        let initialWindow = min(bytes, 4 * UInt64(max(blob.rafs.entry.chunkSize, 1 << 18)))
        let length: UInt64? = blob.state.withLock { state in
            let last = state.lastOnDemandEnd
            let near = last != UInt64.max && offset + slack >= last && offset <= last + slack
            state.lastOnDemandEnd = near ? max(end, last) : end
            guard near else {
                state.readaheadWindow = 0
                state.streamStart = offset
                // A reader opening a file reads from its start, and the kernel's first readahead stays small:
                // the rest of the file's first window (half the initial one) comes along now, so paging in a
                // small binary or reading a small file whole costs one round trip instead of one per chunk.
                guard let file = blob.file(containing: offset), offset >= file.start,
                    offset < file.start + UInt64(max(blob.rafs.entry.chunkSize, 1)), file.end > end
                else { return nil }
                let length = min(initialWindow / 2, file.end - end)
                let idle = blob.rafs.chunks(coveringUncompressed: end, length: length).contains { chunk in
                    state.isIdle(Int(chunk.index))
                }
                return idle ? length : nil
            }
            var window = state.readaheadWindow == 0 ? initialWindow : state.readaheadWindow
            var length = min(window, blob.rafs.deviceSize - end)
            // A reader still in the file it started in (a binary being paged in, one big file) reads ahead
            // to that file's end; one that went on to other files reads ahead to the end of its directory,
            // with the whole window at once: the directory already bounds what it may fetch unread.
            if let file = blob.file(containing: offset) {
                let inFirstFile = file == blob.file(containing: state.streamStart)
                let limit = inFirstFile ? file.end : file.directoryEnd
                guard limit > end else { return nil }
                if !inFirstFile { window = bytes }
                length = min(window, blob.rafs.deviceSize - end, limit - end)
            }
            let idleBytes = blob.rafs.chunks(coveringUncompressed: end, length: length).reduce(UInt64(0)) { sum, chunk in
                state.isIdle(Int(chunk.index)) ? sum + UInt64(chunk.uncompressedSize) : sum
            }
            let reachesEnd = end + length >= blob.rafs.deviceSize
            // The chunk the reader needs next is neither local nor coming: it would stall on it, so fetch what
            // the window lacks now, even if that is less than half of it (another reader's read-ahead may have
            // fetched the rest, e.g. a binary's pages that lie a few MiB ahead of the files read).
            let ahead = min(UInt64(max(blob.rafs.entry.chunkSize, 1)), blob.rafs.deviceSize - end)
            let nextIdle = blob.rafs.chunks(coveringUncompressed: end, length: ahead).contains { chunk in
                state.isIdle(Int(chunk.index))
            }
            guard idleBytes > 0, reachesEnd || nextIdle || 2 * idleBytes >= length else { return nil }
            state.readaheadWindow = min(bytes, 2 * window)
            return length
        }
        guard let length else { return }
        Task { try? await self.ensureUnbounded(blobID: blobID, offset: end, length: length, priority: .prefetch) }
    }

    /// Fetches the missing chunks under a range at prefetch priority (behind every on-demand request). A
    /// `background` prefetch (nobody waits on it yet) also goes behind read-ahead, and its transfers run at
    /// background CPU priority where the source can.
    public func prefetch(blobID: Int64, offset: UInt64, length: UInt64, background: Bool = false) async throws {
        try await ensureUnbounded(blobID: blobID, offset: offset, length: length, priority: background ? .background : .prefetch)
    }

    /// Fetches every missing chunk of the blob in the background, yielding to on-demand work.
    public func prefetch(blobID: Int64) async throws {
        guard let blob = blobs.withLock({ $0[blobID] }) else { throw BlobStoreError.unknownBlob(blobID) }
        try await ensureUnbounded(blobID: blobID, offset: 0, length: blob.rafs.entry.uncompressedSize, priority: .prefetch)
    }

    /// Fetches what the range lacks and waits for it. An on-demand reader's range is leased from before it is
    /// looked at (a chunk found present, or landing for it, stays until the reader is answered and has read);
    /// prefetch and read-ahead answer nobody and hold nothing.
    @discardableResult
    func ensureUnbounded(blobID: Int64, offset: UInt64, length: UInt64, priority: FetchScheduler.Priority) async throws -> RangeLease {
        guard let blob = blobs.withLock({ $0[blobID] }) else { throw BlobStoreError.unknownBlob(blobID) }
        let size = blob.rafs.entry.uncompressedSize
        guard offset <= blob.rafs.deviceSize else {
            throw BlobStoreError.rangeOutsideBlob(blob: blobID, offset: offset, length: length, size: size)
        }
        let wanted = blob.rafs.chunks(coveringUncompressed: offset, length: min(length, blob.rafs.deviceSize - offset))
        var waits: [ChunkFetch] = []
        let leasing = priority == .onDemand
        let lease = leasing ? RangeLease { blob.endLeases(wanted) } : RangeLease()
        let started = blob.state.withLock { state -> [[Int]] in
            if leasing { state.lease(wanted) }
            var missing: [Int] = []
            var hits = 0
            let now = monotonicNanoseconds()
            for chunk in wanted {
                let index = Int(chunk.index)
                if state.present[index] {
                    hits += 1
                    state.lastUsed[index] = now
                } else if let running = state.inFlight[chunk.index] {
                    waits.append(running)
                } else {
                    missing.append(index)
                }
            }
            if priority == .onDemand {
                metrics.recordHits(hits)
                metrics.recordMisses(missing.count)
            }
            let started = runs(of: missing, in: blob, state: state, cap: settings.maximumFetchBytes)
            for index in started.joined() {
                let fetch = ChunkFetch()
                state.inFlight[UInt32(index)] = fetch
                waits.append(fetch)
            }
            return started
        }
        for run in started {
            Task { await self.fetch(run, of: blob, priority: priority) }
        }
        do {
            for fetch in waits { try await fetch.wait() }
        } catch {
            lease.end()
            throw error
        }
        return lease
    }

    /// Groups missing chunks into runs that are contiguous in the stored blob, up to small gaps
    /// (`maximumFetchGapBytes`: bytes fetched and dropped), grown with following missing chunks up to the minimum
    /// fetch size and capped at the maximum.
    private func runs(of missing: [Int], in blob: LazyBlob, state: LazyBlob.State, cap: UInt64) -> [[Int]] {
        let chunks = blob.rafs.chunks
        let ordered = missing.sorted { blob.storedPosition[$0] < blob.storedPosition[$1] }
        let wanted = Set(ordered)
        var runs: [[Int]] = []
        var taken = Set<Int>()
        for index in ordered where !taken.contains(index) {
            var run = [index]
            taken.insert(index)
            var bytes = UInt64(chunks[index].compressedSize)
            var position = blob.storedPosition[index] + 1
            while position < blob.byStoredOffset.count {
                let next = blob.byStoredOffset[position]
                let last = chunks[run[run.count - 1]]
                let candidate = chunks[next]
                let wantedNext = wanted.contains(next) && !taken.contains(next)
                let growing = bytes < settings.minimumFetchBytes && state.isIdle(next)
                guard candidate.compressedOffset >= last.compressedEnd else { break }
                let gap = candidate.compressedOffset - last.compressedEnd
                guard wantedNext || growing else {
                    // Not wanted here (local, on its way, or past the growth): stepped over while the gap it makes
                    // stays small, so that the wanted chunks after it come in the same GET.
                    guard candidate.compressedEnd - last.compressedEnd <= settings.maximumFetchGapBytes else { break }
                    position += 1
                    continue
                }
                guard gap <= settings.maximumFetchGapBytes,
                    bytes + gap + UInt64(candidate.compressedSize) <= max(cap, UInt64(chunks[index].compressedSize))
                else { break }
                run.append(next)
                taken.insert(next)
                bytes += gap + UInt64(candidate.compressedSize)
                position += 1
            }
            runs.append(run)
        }
        return runs
    }

    /// Streams one run with one ranged GET. Each chunk is settled as soon as it is written; when the fetch
    /// fails, the chunks it did not deliver are settled with the error and stay missing.
    private func fetch(_ run: [Int], of blob: LazyBlob, priority: FetchScheduler.Priority) async {
        let queued = monotonicNanoseconds()
        await scheduler.acquire(priority)
        let chunks = run.map { blob.rafs.chunks[$0] }
        // Room on disk for what this run writes, made by evicting when the cache is at its budget.
        let reservation = chunks.reduce(UInt64(0)) { $0 + UInt64($1.uncompressedSize) }
        await reserve(reservation)
        let started = monotonicNanoseconds()
        let start = chunks[0].compressedOffset
        let length = chunks[chunks.count - 1].compressedEnd - start
        let chunkReady: @Sendable (BlobChunkInfo) -> Void = { chunk in
            let fetch = blob.state.withLock { state -> ChunkFetch? in
                state.lastUsed[Int(chunk.index)] = monotonicNanoseconds()
                let newlyStored = !state.present[Int(chunk.index)]
                if newlyStored {
                    state.present[Int(chunk.index)] = true
                    state.presentCount += 1
                    state.presentBytes += UInt64(chunk.uncompressedSize)
                }
                self.space.land(UInt64(chunk.uncompressedSize), newlyStored: newlyStored)
                return state.inFlight.removeValue(forKey: chunk.index)
            }
            fetch?.settle(.success(()))
        }
        let sources = blob.sources
        var outcome = await stream(chunks[...], of: blob, from: sources[...], priority: priority, chunkReady: chunkReady)
        if let error = outcome.failure, SyscallError.isNoSpace(error) {
            // No other source can help a full disk: free room for what the run still has to write (whole blocks)
            // from the least recently used chunks, once (the chunks this run just wrote are within the grace and
            // stay), then try again from the source that met it.
            let needed = chunks[outcome.decoded...].reduce(UInt64(0)) { $0 + $1.blockAlignedSize }
            let freed = await evict(bytes: needed)
            logger.warning(
                "disk full while writing chunks; evicted and retrying",
                metadata: ["blob.id": "\(blob.id)", "cache.evicted_bytes": "\(freed)", "error": "\(error)"])
            if freed > 0 {
                let retry = await stream(
                    chunks[outcome.decoded...], of: blob, from: sources[outcome.failedSource...], priority: priority, chunkReady: chunkReady
                )
                outcome = RunOutcome(
                    decoded: outcome.decoded + retry.decoded, received: outcome.received + retry.received, failure: retry.failure,
                    failedSource: retry.failedSource, decoder: retry.decoder)
            }
            if let error = outcome.failure, SyscallError.isNoSpace(error) {
                outcome.failure = BlobStoreError.diskFull(blob: blob.id, reason: "\(error)")
            }
        }
        let (failure, decoded, received, decoder) = (outcome.failure, outcome.decoded, outcome.received, outcome.decoder)
        await scheduler.release()
        // What the run did not write (the chunks it wrote moved to `stored` as they landed).
        space.release(reserved: reservation - chunks[..<decoded].reduce(UInt64(0)) { $0 + UInt64($1.uncompressedSize) })
        let fetchedBytes = received
        let stopsEvents = completion.withLock { $0?.stopsEvents ?? false }
        let (completed, undelivered) = blob.state.withLock { state -> (Bool, [ChunkFetch]) in
            state.bytesFetched += fetchedBytes
            let undelivered = chunks[decoded...].compactMap { state.inFlight.removeValue(forKey: $0.index) }
            let completed = state.presentCount == state.present.count && !state.completionReported
            if completed {
                state.completionReported = true
                if stopsEvents {
                    state.completionReports += 1
                    state.completionsPlacing += 1
                }
            }
            return (completed, undelivered)
        }
        if let failure {
            for fetch in undelivered { fetch.settle(.failure(failure)) }
            metrics.recordFailure()
            logger.warning(
                "fetch failed",
                metadata: ["blob.id": "\(blob.id)", "fetch.chunks": "\(run.count)", "fetch.decoded": "\(decoded)", "error": "\(failure)"])
        } else {
            let seconds = Double(monotonicNanoseconds() - started) / 1e9
            let busy = decoder.busyTime
            metrics.recordFetch(bytes: Int(length), chunks: chunks.count, seconds: seconds)
            // The source that delivered is the blob's first now (a fallback that worked is preferred).
            if decoder.firstByteAt > started {
                links.record(
                    place: blob.linkPlace, bytes: received, firstByteSeconds: Double(decoder.firstByteAt - started) / 1e9,
                    totalSeconds: seconds)
            }
            logger.debug(
                "fetched",
                metadata: [
                    "blob.id": "\(blob.id)", "fetch.offset": "\(start)", "fetch.bytes": "\(length)", "fetch.chunks": "\(run.count)",
                    "fetch.priority": "\(priority)", "fetch.milliseconds": "\(Int(seconds * 1000))",
                    "fetch.queued_ms": "\(Double((started - queued) / 10_000) / 100)",
                    "fetch.first_byte_ms": "\(Double((decoder.firstByteAt &- started) / 10_000) / 100)",
                    "fetch.decode_ms": "\(Double(busy.total / 10_000) / 100)", "fetch.write_ms": "\(Double(busy.writing / 10_000) / 100)",
                ])
        }
        if decoded > 0, let store {
            do {
                try await runBlocking { try store.save(blobID: blob.id, bitmap: blob.bitmap) }
            } catch {
                logger.warning("chunk state not saved", metadata: ["blob.id": "\(blob.id)", "error": "\(error)"])
            }
        }
        // Reported after the bitmap is saved: a successor started after a kill -9 finds the blob complete, so it
        // counts the mark the front end may have set (`LazyBlob.init`).
        if completed {
            completion.withLock { $0 }?.call(blob.id)
            if stopsEvents { blob.completionPlaced() }
        }
    }
}
