import CLinux
import LinuxKernel
import RAFS
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One blob served on demand: its chunk map (from the blob meta), its sparse backing file of full
/// uncompressed size, where its stored bytes come from, and which chunks are present or being fetched.
final class LazyBlob: Sendable {
    struct State {
        var present: [Bool]
        var presentCount = 0
        var presentBytes: UInt64 = 0
        /// Stored (compressed) bytes fetched for this blob since it was registered.
        var bytesFetched: UInt64 = 0
        /// End of the last on-demand range, to spot sequential readers.
        var lastOnDemandEnd: UInt64 = UInt64.max
        /// Where the current sequential reader started: its read-ahead stays in that file until it leaves it.
        var streamStart: UInt64 = 0
        /// The read-ahead window of the next top-up (0: none yet); doubles while the reader stays sequential.
        var readaheadWindow: UInt64 = 0
        /// The fetch each missing chunk is waiting on, so concurrent readers share one GET per chunk.
        var inFlight: [UInt32: ChunkFetch] = [:]
        /// Whether the engine has reported this blob complete (once per registration, and again after an
        /// eviction made it incomplete).
        var completionReported = false
        /// How often it has been reported complete to a handler that may stop events (`BlobEngine.onComplete`).
        /// Each such report may have made the front end stop asking about the blob (fanotify's ignore mark):
        /// the kernel then reads it with no event, so `lastUsed` is stale.
        var completionReports = 0
        /// The report count when eviction last had the front end re-arm the blob's reads, and when (monotonic
        /// nanoseconds). Its chunks are punched only when no report came since, and once the grace has passed
        /// since: a read the kernel let through before the re-arm has finished by then.
        var rearmed: (reports: Int, at: UInt64) = (0, 0)
        /// Completion reports counted whose handler has not returned: the front end may be placing its mark
        /// right now, so a re-arm would remove nothing and the mark would come after it, uncounted.
        var completionsPlacing = 0
        /// When each chunk was last read or written, or registered present (monotonic nanoseconds):
        /// the eviction order, and the grace that keeps just-answered ranges on disk.
        var lastUsed: [UInt64]

        /// Chunks under the ranges of on-demand readers not yet answered, with how many such readers count on
        /// each. A reader is answered once its whole range is present, and the kernel then reads every byte of
        /// it from the backing file: a chunk it found present (or saw land) while another of its chunks was
        /// still coming must not be punched out before that answer, whatever the grace.
        var leases: [UInt32: Int] = [:]

        /// Neither local nor being fetched: nothing brings chunk `index` unless somebody asks for it.
        func isIdle(_ index: Int) -> Bool { !present[index] && inFlight[UInt32(index)] == nil }

        /// Present, and neither being fetched nor counted on by a waiting reader: eviction may take it (subject
        /// to the grace and pins, which the eviction pass judges).
        func isEvictable(_ index: Int) -> Bool {
            present[index] && inFlight[UInt32(index)] == nil && leases[UInt32(index)] == nil
        }

        /// A waiting reader counts on these chunks until `endLeases`.
        mutating func lease(_ chunks: [BlobChunkInfo]) {
            for chunk in chunks { leases[chunk.index, default: 0] += 1 }
        }

        /// The reader is answered (or gave up): its chunks count as used now, so the grace covers the kernel's
        /// read that follows the answer.
        mutating func endLeases(_ chunks: [BlobChunkInfo], at now: UInt64) {
            for chunk in chunks {
                let count = (leases[chunk.index] ?? 1) - 1
                leases[chunk.index] = count > 0 ? count : nil
                lastUsed[Int(chunk.index)] = now
            }
        }
    }

    let id: Int64
    let rafs: RafsBlob
    let backingPath: String
    /// Where the stored bytes can be fetched from, most preferred first, and the link the first one is on
    /// (`LinkEstimates.place`, kept with the list: read-ahead asks for it on every read).
    private let sourceList: Mutex<(sources: [any BlobRangeSource], place: String)>
    /// Chunk indexes ordered by stored offset, and each chunk's position in that order.
    let byStoredOffset: [Int]
    let storedPosition: [Int]
    let state: Mutex<State>
    /// Uncompressed bytes of all chunks.
    let chunkBytes: UInt64
    /// Where files' data ends, sorted (`ErofsImage.fileDataEnds`); empty until known (it is computed after
    /// the blob is registered, off the pull's path).
    let fileEnds = Mutex<[ErofsImage.FileDataEnd]>([])
    private let fd: Int32

    init(id: Int64, rafs: RafsBlob, backingPath: String, sources: [any BlobRangeSource], present: [Bool]) throws {
        self.id = id
        self.rafs = rafs
        self.backingPath = backingPath
        sourceList = Mutex((sources, LinkEstimates.place(of: sources.first?.identity ?? "")))
        chunkBytes = rafs.chunks.reduce(0) { $0 + UInt64($1.uncompressedSize) }
        let order = rafs.chunks.indices.sorted { rafs.chunks[$0].compressedOffset < rafs.chunks[$1].compressedOffset }
        byStoredOffset = order
        var positions = [Int](repeating: 0, count: order.count)
        for (position, index) in order.enumerated() { positions[index] = position }
        storedPosition = positions
        fd = try retryingSyscall("open", backingPath) { open(backingPath, O_RDWR | O_CLOEXEC) }
        // Chunks found present count as used now: a predecessor daemon may have answered a read of them just
        // before it stopped, and the kernel's read may still be coming (the grace covers it).
        var initial = State(present: present, lastUsed: [UInt64](repeating: monotonicNanoseconds(), count: present.count))
        for (index, isPresent) in present.enumerated() where isPresent {
            initial.presentCount += 1
            initial.presentBytes += UInt64(rafs.chunks[index].uncompressedSize)
        }
        initial.completionReported = initial.presentCount == present.count
        // Registered complete, it is reported so (`BlobEngine.register`), and a predecessor may have marked it
        // (a daemon without a budget sharing the fanotify group), whatever this daemon's handler does.
        initial.completionReports = initial.completionReported ? 1 : 0
        initial.completionsPlacing = initial.completionReported ? 1 : 0
        state = Mutex(initial)
    }

    deinit { close(fd) }

    /// The completion handler has returned: what it marked, a re-arm from now on removes.
    func completionPlaced() {
        state.withLock { $0.completionsPlacing = max(0, $0.completionsPlacing - 1) }
    }

    var sources: [any BlobRangeSource] { sourceList.withLock { $0.sources } }

    /// The link of the preferred source: what `LinkEstimates` measures it under.
    var linkPlace: String { sourceList.withLock { $0.place } }

    /// Adds a source unless one with the same identity is known.
    func add(_ source: any BlobRangeSource) {
        sourceList.withLock { list in
            if !list.sources.contains(where: { $0.identity == source.identity }) { list.sources.append(source) }
        }
    }

    /// Moves `source` to the front: it delivered where the ones before it failed.
    func prefer(_ source: any BlobRangeSource) {
        sourceList.withLock { list in
            guard let index = list.sources.firstIndex(where: { $0.identity == source.identity }), index > 0 else { return }
            list.sources.insert(list.sources.remove(at: index), at: 0)
            list.place = LinkEstimates.place(of: source.identity)
        }
    }

    /// The file whose data holds `offset` (the first one ending after it), nil when no file's data is known
    /// there.
    func file(containing offset: UInt64) -> ErofsImage.FileDataEnd? {
        fileEnds.withLock { ends in
            var low = 0
            var high = ends.count
            while low < high {
                let middle = (low + high) / 2
                if ends[middle].end > offset { high = middle } else { low = middle + 1 }
            }
            return low < ends.count ? ends[low] : nil
        }
    }

    /// Writes one verified chunk at its uncompressed offset.
    func write(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws(SyscallError) {
        try FileSystem.writeAll(fd, data, at: offset, path: backingPath)
    }

    /// Evicts the chunks at `indexes` that are present, not being fetched, counted on by no waiting reader and
    /// last used at or before `usedBefore`: marks each missing and punches its blocks, under the state lock, so
    /// no reader or fetch can see it present once its bytes are going. The punched range is the chunk's whole
    /// blocks (`blockAlignedSize`: no other chunk's bytes, and a hole SEEK_HOLE finds after a crash). Returns
    /// what was freed; stops at the first failed punch. Nothing is evicted unless the blob's reads were re-armed
    /// after its last completion report (`reports` of them), at `usedBefore` or earlier (`EvictionReadiness`).
    func evict(_ indexes: [Int], usedBefore cutoff: UInt64, reports: Int) -> (chunks: Int, bytes: UInt64, error: SyscallError?) {
        state.withLock { state in
            var freed = (chunks: 0, bytes: UInt64(0), error: SyscallError?.none)
            guard state.completionReports == reports, state.rearmed.reports == reports, state.rearmed.at <= cutoff else { return freed }
            for index in indexes where state.isEvictable(index) && state.lastUsed[index] <= cutoff {
                let chunk = rafs.chunks[index]
                do throws(SyscallError) {
                    try FileSystem.punchHole(fd, offset: chunk.uncompressedOffset, length: chunk.blockAlignedSize, path: backingPath)
                } catch {
                    freed.error = error
                    break
                }
                // A crash here leaves the bitmap saying present over a hole: start-up's SEEK_HOLE check catches it.
                CrashPoint.reach("evict.punched")
                state.present[index] = false
                state.presentCount -= 1
                state.presentBytes -= UInt64(chunk.uncompressedSize)
                freed.chunks += 1
                freed.bytes += UInt64(chunk.uncompressedSize)
            }
            if freed.chunks > 0 { state.completionReported = false }
            return freed
        }
    }

    /// Whether eviction may punch chunks of this blob now (`cutoff`: the pass's grace cutoff).
    enum EvictionReadiness {
        /// Re-armed since the last completion report (`reports`), longer than the grace ago.
        case ready(reports: Int)
        /// Re-armed within the grace: reads let through before it may still be under way.
        case settling(until: UInt64)
        /// Reported complete since it was last re-armed (or never re-armed): the front end must re-arm it first.
        case needsRearm(reports: Int)
    }

    func evictionReadiness(cutoff: UInt64, grace: UInt64) -> EvictionReadiness {
        state.withLock { state in
            // Asked again a grace from now: the handler places its mark in far less.
            guard state.completionsPlacing == 0 else { return .settling(until: cutoff + 2 * grace) }
            guard state.rearmed.reports == state.completionReports else { return .needsRearm(reports: state.completionReports) }
            guard state.rearmed.at <= cutoff else { return .settling(until: state.rearmed.at + grace) }
            return .ready(reports: state.completionReports)
        }
    }

    /// The front end re-armed the blob's reads at `now`, with `reports` completion reports made: unless another
    /// came since, the grace starts now.
    func noteRearmed(reports: Int, at now: UInt64) {
        state.withLock { state in
            if state.completionReports == reports, state.completionsPlacing == 0 { state.rearmed = (reports, now) }
        }
    }

    /// A reader leasing `chunks` is done with them (`State.endLeases`).
    func endLeases(_ chunks: [BlobChunkInfo]) {
        state.withLock { $0.endLeases(chunks, at: monotonicNanoseconds()) }
    }

    var bitmap: [UInt8] {
        state.withLock { state in
            var bits = [UInt8](repeating: 0, count: (state.present.count + 7) / 8)
            for (index, isPresent) in state.present.enumerated() where isPresent { bits[index / 8] |= 1 << (index % 8) }
            return bits
        }
    }

    /// Chunks the catalog says are present, confirmed against the backing file: a chunk counts only if no
    /// hole lies inside its range (SEEK_HOLE), so a write cut short by a crash is fetched again.
    static func confirmedPresent(bitmap: [UInt8], rafs: RafsBlob, backingPath: String) throws -> [Bool] {
        let fd = try retryingSyscall("open", backingPath) { open(backingPath, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var present = [Bool](repeating: false, count: rafs.chunks.count)
        for (index, chunk) in rafs.chunks.enumerated() {
            guard index / 8 < bitmap.count, bitmap[index / 8] & (1 << (index % 8)) != 0 else { continue }
            let hole = lseek(fd, off_t(chunk.uncompressedOffset), clinux_seek_hole())
            present[index] = hole >= 0 && UInt64(hole) >= min(chunk.uncompressedEnd, rafs.entry.uncompressedSize)
        }
        return present
    }
}
