import Archive
import LinuxKernel
import RAFS
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The stored bytes of a blob built from a gzip index (`ZranIndexBuilder`): its stored form is an image
/// layer's uncompressed tar, which exists only inside the layer's gzip stream. A range of the tar is served by
/// one ranged GET of the layer from the checkpoint before the range to the one after it, inflated as it
/// arrives; the engine then checks each chunk of it against the digest the bootstrap holds, as for any blob.
public struct GzipIndexedBlobSource: BlobRangeSource {
    /// Where the layer's gzip bytes come from (its registry).
    public let layer: any BlobRangeSource
    /// The encoded `GzipIndex`: its table is read at the first fetch and kept (32 bytes a checkpoint); a
    /// checkpoint's window (up to 32 KiB) is read from the file for each fetch that starts there, so a served
    /// blob costs no memory for its windows.
    public let indexPath: String
    /// Where the encoded index starts in that file (a pulled blob keeps the package it came in, whose index
    /// follows a header).
    public let indexOffset: UInt64
    /// Where the package lies in its registry when the file holds only its head and meta (a pull fetches no
    /// window): a checkpoint's window is then fetched from there the first time a read starts at it, and
    /// written into the file's hole. nil: the file is whole.
    public let windows: (any BlobRangeSource)?
    private let index = IndexCache()

    public init(layer: any BlobRangeSource, indexPath: String, indexOffset: UInt64 = 0, windows: (any BlobRangeSource)? = nil) {
        self.layer = layer
        self.indexPath = indexPath
        self.indexOffset = indexOffset
        self.windows = windows
    }

    public var identity: String { "gzip-index:" + layer.identity }

    public func read(offset: UInt64, length: UInt64) async throws -> [UInt8] {
        let collected = Collector()
        try await stream(offset: offset, length: length, background: false, into: collected)
        return collected.bytes
    }

    public func stream(offset: UInt64, length: UInt64, background: Bool, into consumer: any StoredBytesConsumer) async throws {
        let index = try await loadIndex()
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= index.uncompressedSize else {
            throw BlobStoreError.rangeOutsideBlob(blob: 0, offset: offset, length: length, size: index.uncompressedSize)
        }
        let position = index.checkpoint(before: offset)
        let checkpoint = index.checkpoints[position]
        let start = checkpoint.fetchStart
        let stop = index.compressedEnd(covering: end)
        let inflating = InflatingConsumer(checkpoint: checkpoint, start: offset, length: length, downstream: consumer)
        // The table was decoded alone: windows are read (or fetched) when a stream starts at their checkpoint.
        let location = index.windowLocations[position]
        var fetchedWindow = false
        do {
            if location.size > 0 {
                // The window (from the file, or from the registry the first time) and the layer's range at once:
                // what arrives before the window waits in the consumer, so a cold window costs no round trip.
                async let streamed: Void = layer.stream(offset: start, length: stop - start, background: background, into: inflating)
                do {
                    let (window, fetched) = try await self.window(position, at: location)
                    fetchedWindow = fetched
                    try inflating.start(window: window)
                } catch {
                    inflating.abandon()
                    _ = try? await streamed
                    throw error
                }
                try await streamed
            } else {
                try inflating.start(window: [])
                try await layer.stream(offset: start, length: stop - start, background: background, into: inflating)
            }
        } catch {
            // Whatever failed (a window that inflates chunks failing their digests among it), a window fetched
            // from the registry is fetched again next time.
            self.index.forgetWindow(position)
            throw error
        }
        // A fetched window is reused once a stream inflated from it delivered verified chunks.
        if fetchedWindow { self.index.markWindow(position) }
        let remaining = inflating.remaining
        guard remaining == 0 else {
            throw BlobStoreError.shortRead(blob: 0, offset: offset, expected: length, got: Int(length - remaining))
        }
    }

    /// A checkpoint's window: from the file, or (a window a pull left in the registry, until a stream inflated
    /// from it succeeded) from the package, written into the file. Not verified on its own: a wrong window
    /// inflates chunks that fail their digests, and is then fetched again.
    private func window(_ position: Int, at location: GzipIndex.WindowLocation) async throws -> (bytes: [UInt8], fetched: Bool) {
        let (path, offset) = (indexPath, indexOffset + location.offset)
        if let windows, !index.hasWindow(position) {
            let bytes = try await windows.read(offset: offset, length: UInt64(location.size))
            guard bytes.count == location.size else {
                throw BlobStoreError.shortRead(blob: 0, offset: offset, expected: UInt64(location.size), got: bytes.count)
            }
            try await runBlocking {
                let fd = try retryingSyscall("open", path) { open(path, O_WRONLY | O_CLOEXEC) }
                defer { close(fd) }
                try FileSystem.writeAll(fd, bytes, at: offset, path: path)
            }
            return (bytes, true)
        }
        let bytes = try await runBlocking { try ImageFile(path: path).read(at: offset, count: location.size, what: "gzip index window") }
        return (bytes, false)
    }

    /// The header and table of the index at `offset` of `file` (`size` bytes long), checked, without windows.
    private static func readTable(_ file: ImageFile, at offset: UInt64, size: UInt64) throws -> GzipIndex {
        let prefix = try file.read(at: offset, count: Int(min(size, UInt64(GzipIndex.headerSize))), what: "gzip index header")
        let tableSize = try GzipIndex.tableSize(prefix: prefix)
        guard UInt64(tableSize) <= size else {
            throw ArchiveError.badGzipIndex(detail: "its table of \(tableSize) bytes exceeds the index")
        }
        return try GzipIndex(decodingTable: try file.read(at: offset, count: tableSize, what: "gzip index table"), encodedSize: size)
    }

    private func loadIndex() async throws -> GzipIndex {
        if let loaded = index.value { return loaded }
        let (path, base) = (indexPath, indexOffset)
        let loaded = try await runBlocking { () throws -> GzipIndex in
            let file = try ImageFile(path: path)
            guard file.size >= base else { throw ArchiveError.badGzipIndex(detail: "\(path) is shorter than its index offset \(base)") }
            return try Self.readTable(file, at: base, size: file.size - base)
        }
        index.value = loaded
        return loaded
    }
}

/// The decoded index, and which windows this process has fetched into the file, shared by copies of the
/// source. Windows fetched before a restart are fetched again (32 KiB each): a hole and a window of zeros look
/// alike, and a zero window would fail every chunk inflated from it.
private final class IndexCache: Sendable {
    private let stored = Mutex<GzipIndex?>(nil)
    private let fetchedWindows = Mutex<Set<Int>>([])
    var value: GzipIndex? {
        get { stored.withLock { $0 } }
        set { stored.withLock { $0 = newValue } }
    }
    func hasWindow(_ position: Int) -> Bool { fetchedWindows.withLock { $0.contains(position) } }
    func markWindow(_ position: Int) { _ = fetchedWindows.withLock { $0.insert(position) } }
    func forgetWindow(_ position: Int) { _ = fetchedWindows.withLock { $0.remove(position) } }
}

/// Feeds the layer's compressed bytes to the inflater and the inflated range on to the engine's decoder. The
/// inflater starts once the checkpoint's window is known (`start`); bytes that arrive before are held (at most
/// `maximumPendingBytes`: a round trip's worth on any link we serve).
private final class InflatingConsumer: StoredBytesConsumer, @unchecked Sendable {
    // @unchecked: `inflater`, `pending` and `abandoned` are touched only inside `lock`, by the transfer thread's
    // `receive` and by `start`/`abandon` from the task that fetched the window; the inflater is used nowhere else.
    static let maximumPendingBytes = 64 << 20

    private let checkpoint: GzipCheckpoint
    private let start: UInt64
    private let length: UInt64
    private let downstream: any StoredBytesConsumer
    private let lock = Mutex(())
    private var inflater: GzipRangeInflater?
    private var pending: [UInt8] = []
    private var abandoned = false

    init(checkpoint: GzipCheckpoint, start: UInt64, length: UInt64, downstream: any StoredBytesConsumer) {
        self.checkpoint = checkpoint
        self.start = start
        self.length = length
        self.downstream = downstream
    }

    var remaining: UInt64 { lock.withLock { _ in inflater?.remaining ?? length } }

    /// Starts inflating with the checkpoint's window, first what arrived before it.
    func start(window: [UInt8]) throws {
        var primed = checkpoint
        primed.window = window
        let started = try GzipRangeInflater(from: primed, start: start, length: length)
        try lock.withLock { _ in
            inflater = started
            let held = pending
            pending = []
            guard !held.isEmpty, !started.isDone else { return }
            try held.withUnsafeBytes { bytes in try started.feed(bytes) { try downstream.receive($0) } }
        }
    }

    /// No window is coming: the transfer stops at its next piece.
    func abandon() { lock.withLock { _ in abandoned = true } }

    struct Abandoned: Error {}

    func receive(_ bytes: UnsafeRawBufferPointer) throws {
        try lock.withLock { _ in
            guard !abandoned else { throw Abandoned() }
            guard let inflater else {
                guard pending.count + bytes.count <= Self.maximumPendingBytes else { throw Abandoned() }
                pending.append(contentsOf: bytes)
                return
            }
            guard !inflater.isDone else { return }
            try inflater.feed(bytes) { try downstream.receive($0) }
        }
    }
}

/// Gathers streamed bytes (for `read`).
private final class Collector: StoredBytesConsumer {
    private let stored = Mutex<[UInt8]>([])
    var bytes: [UInt8] { stored.withLock { $0 } }
    func receive(_ bytes: UnsafeRawBufferPointer) throws { stored.withLock { $0.append(contentsOf: bytes) } }
}
