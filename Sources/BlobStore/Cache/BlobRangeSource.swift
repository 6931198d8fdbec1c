import Catalog
import LinuxKernel

/// Where a lazily served blob's stored (compressed) bytes come from: a registry's ranged GETs in the
/// service, a local file or a fault injector in tests.
public protocol BlobRangeSource: Sendable {
    /// Returns exactly `length` bytes of the stored blob starting at `offset`, or throws.
    func read(offset: UInt64, length: UInt64) async throws -> [UInt8]

    /// Hands `length` bytes of the stored blob starting at `offset` to `consumer` in order, as they arrive
    /// (pieces of any size), or throws. The default reads the whole range, then hands it over off the
    /// cooperative pool. A source that streams lets the engine serve the first chunks of a long fetch before
    /// its last bytes are in. `background` marks work nobody waits on yet (a prefetch table, a whole-image
    /// prefetch): a source that can runs it at background CPU priority, so that it yields to the containers
    /// starting meanwhile.
    func stream(offset: UInt64, length: UInt64, background: Bool, into consumer: any StoredBytesConsumer) async throws

    /// Names where the bytes come from (`registry/repository`, a path), so that a blob lists each place once.
    var identity: String { get }
}

/// Receives a fetch's stored bytes in order; may block (it decodes and writes chunks), so it is called off the
/// cooperative pool.
public protocol StoredBytesConsumer: Sendable {
    /// Takes the next piece; throws to stop the fetch (the error is what the fetch fails with).
    func receive(_ bytes: UnsafeRawBufferPointer) throws
}

extension BlobRangeSource {
    /// By default a source is named by its type (test doubles; the service's sources name their place).
    public var identity: String { "\(type(of: self))" }

    public func stream(offset: UInt64, length: UInt64, background: Bool, into consumer: any StoredBytesConsumer) async throws {
        let bytes = try await read(offset: offset, length: length)
        try await runBlocking { try bytes.withUnsafeBytes { try consumer.receive($0) } }
    }
}

/// Persists which chunks of a blob are present (the catalog, in the service).
public protocol ChunkStateStore: Sendable {
    func save(blobID: Int64, bitmap: [UInt8]) throws
}

/// Tuning of the fetch engine.
public struct FetchSettings: Equatable, Sendable {
    /// Ranged GETs running at once, over all blobs.
    public var maximumConcurrentFetches = 8
    /// A fetch is grown with the following missing chunks until it covers at least this many stored bytes
    /// (read amplification: fewer round trips for sequential readers). 0 fetches only what was asked.
    public var minimumFetchBytes: UInt64 = 0
    /// When on-demand reads of a blob are sequential, this many following bytes are fetched in the background
    /// (sequential readers find them local). 0 turns read-ahead off.
    public var readaheadBytes: UInt64 = 16 << 20
    /// Where the link's measured bandwidth-delay product times this is more than `readaheadBytes`, read-ahead
    /// windows grow to it (a long fat link needs that much in flight to stay busy), up to `maximumReadaheadBytes`.
    public var readaheadBandwidthDelayProducts: UInt64 = 4
    public var maximumReadaheadBytes: UInt64 = 256 << 20
    /// Upper bound of one merged ranged GET.
    public var maximumFetchBytes: UInt64 = 8 << 20
    /// Stored bytes a run may skip between two of its chunks (fetched and dropped): one GET instead of two
    /// when chunks are separated by a little unwanted data (a tar header between two files of a gzip-indexed
    /// blob, a small chunk that is already local).
    public var maximumFetchGapBytes: UInt64 = 64 << 10
    /// A reader waiting longer than this gets an error (EIO at the front end) instead of hanging.
    public var readerTimeout: Duration = .seconds(30)
    /// Uncompressed chunk bytes the backing files may hold (nil: no budget). Beyond it, least recently used
    /// chunks of unpinned blobs are evicted (holes punched) before a fetch writes.
    public var cacheBudgetBytes: UInt64?
    /// A chunk read or written within this long is never evicted: a front end that answered "present" for it
    /// may have a kernel read of it still to come.
    public var evictionGrace: Duration = .seconds(2)

    public init() {}
}

/// Why the blob store could not make a range present, or would not name a backing file: one enum for the
/// library (image refusals are the catalog's `CatalogError`), each case with the blob or key at fault.
public enum BlobStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownBlob(Int64)
    case rangeOutsideBlob(blob: Int64, offset: UInt64, length: UInt64, size: UInt64)
    case shortRead(blob: Int64, offset: UInt64, expected: UInt64, got: Int)
    case unverifiable(blob: Int64)
    /// Part of the range is in no chunk: the image never described those bytes, so nobody may read them.
    case undescribedRange(blob: Int64, offset: UInt64, length: UInt64, deviceSize: UInt64)
    case timedOut(blob: Int64, offset: UInt64, length: UInt64, after: Duration)
    /// A cachefiles key the kernel would refuse (`CachefilesNaming`).
    case volumeKeyTooLong(String)
    case cookieKeyTooLong([UInt8])
    /// The filesystem has no room for the chunks, even after evicting what could be evicted.
    case diskFull(blob: Int64, reason: String)

    public var description: String {
        switch self {
        case .unknownBlob(let id): return "blob \(id) is not registered with the fetch engine"
        case .rangeOutsideBlob(let blob, let offset, let length, let size):
            return "range \(offset)+\(length) lies outside blob \(blob) (\(size) bytes)"
        case .shortRead(let blob, let offset, let expected, let got):
            return "blob \(blob): asked for \(expected) bytes at \(offset), got \(got)"
        case .unverifiable(let blob): return "blob \(blob) has chunks without digests; refusing to serve it lazily"
        case .undescribedRange(let blob, let offset, let length, let deviceSize):
            return
                "blob \(blob): range \(offset)+\(length) holds bytes no chunk of the image describes (device of \(deviceSize) bytes); refused rather than read as a hole"
        case .timedOut(let blob, let offset, let length, let after):
            return "blob \(blob): range \(offset)+\(length) was not fetched within \(after)"
        case .volumeKeyTooLong(let key):
            return "cachefiles volume key \(key) is longer than the kernel's \(CachefilesNaming.maximumVolumeKeyLength) bytes"
        case .cookieKeyTooLong(let key):
            return "cachefiles cookie key of \(key.count) bytes is longer than the kernel's \(CachefilesNaming.maximumCookieKeyLength)"
        case .diskFull(let blob, let reason):
            return
                "blob \(blob): no space left for its chunks after evicting what could go (\(reason)); free space on the cache's filesystem, or unpin images or lower cache.max_bytes"
        }
    }
}

extension CatalogChunkStore: ChunkStateStore {}
