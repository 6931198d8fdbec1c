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
        /// When each chunk was last read or written, or registered present (monotonic nanoseconds):
        /// the eviction order, and the grace that keeps just-answered ranges on disk.
        var lastUsed: [UInt64]

        /// Neither local nor being fetched: nothing brings chunk `index` unless somebody asks for it.
        func isIdle(_ index: Int) -> Bool { !present[index] && inFlight[UInt32(index)] == nil }
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
        state = Mutex(initial)
    }

    deinit { close(fd) }

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

    /// Evicts the chunks at `indexes` that are present, not being fetched and last used at or before
    /// `usedBefore`: marks each missing and punches its blocks, under the state lock, so no reader or fetch can
    /// see it present once its bytes are going. The punched range is the chunk's whole blocks
    /// (`blockAlignedSize`: no other chunk's bytes, and a hole SEEK_HOLE finds after a crash). Returns what was
    /// freed; stops at the first failed punch.
    func evict(_ indexes: [Int], usedBefore cutoff: UInt64) -> (chunks: Int, bytes: UInt64, error: SyscallError?) {
        state.withLock { state in
            var freed = (chunks: 0, bytes: UInt64(0), error: SyscallError?.none)
            for index in indexes where state.present[index] && state.inFlight[UInt32(index)] == nil && state.lastUsed[index] <= cutoff {
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
