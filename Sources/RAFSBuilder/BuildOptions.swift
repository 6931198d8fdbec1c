import RAFS

/// Per-chunk compression of built blobs.
public enum ChunkCompression: String, Sendable, Codable, CaseIterable {
    case zstd
    case lz4
    case none

    /// The blob-table value nydus uses for it.
    var rafs: RafsBlobEntry.Compression {
        switch self {
        case .zstd: return .zstd
        case .lz4: return .lz4Block
        case .none: return .none
        }
    }

    /// The RAFS superblock flag announcing it.
    var superBlockFlag: RafsSuperBlockExtension.Flags {
        switch self {
        case .zstd: return .compressionZstd
        case .lz4: return .compressionLZ4
        case .none: return .compressionNone
        }
    }
}

/// How `ImageBuilder` lays out an image.
public struct BuildOptions: Sendable {
    /// Bytes per chunk: a power of two from 4 KiB to 16 MiB (the v1 chunk-info limit).
    public var chunkSize: UInt32 = 1 << 20
    public var compression: ChunkCompression = .zstd
    /// zstd level (1...19); 3 is zstd's own default and nydus's.
    public var zstdLevel: Int = 3
    /// Chunks compressed concurrently per batch; nil uses every core.
    public var threads: Int? = nil
    /// Largest regular file accepted from a layer.
    public var maximumFileSize: Int64 = 1 << 40
    /// Deepest path accepted (components), and longest path in bytes.
    public var maximumDepth: Int = 512
    public var maximumPathLength: Int = 4096
    /// Most entries accepted over all layers.
    public var maximumEntries: Int = 10_000_000
    /// fsync blobs before renaming them into place.
    public var syncOutput: Bool = true
    /// Absolute paths in the image (files or directories) a container reads at start-up: recorded as the
    /// bootstrap's RAFS v6 prefetch table (their nids, as nydus's `--prefetch-policy fs` does), so that a
    /// snapshotter fetches them in the background as soon as the image is pulled.
    public var prefetchPaths: [String] = []
    /// Set: build a gzip index of each layer instead of storing its data (see `GzipIndexedBuild`). Each layer
    /// must be one gzip member and name its digest; its blob holds only meta, its chunks' stored offsets are
    /// offsets in the layer's uncompressed tar, and a checkpoint is kept about every this many tar bytes.
    public var gzipIndexSpan: UInt64? = nil

    public static let minimumChunkSize: UInt32 = 4096
    public static let maximumChunkSize: UInt32 = 16 << 20

    public init(chunkSize: UInt32 = 1 << 20, compression: ChunkCompression = .zstd, zstdLevel: Int = 3) {
        self.chunkSize = chunkSize
        self.compression = compression
        self.zstdLevel = zstdLevel
    }

    func validate() throws(BuildError) {
        guard chunkSize >= Self.minimumChunkSize, chunkSize <= Self.maximumChunkSize, chunkSize & (chunkSize - 1) == 0 else {
            throw .invalidOptions(reason: "chunk size \(chunkSize) is not a power of two from 4 KiB to 16 MiB")
        }
        guard (1...19).contains(zstdLevel) else { throw .invalidOptions(reason: "zstd level \(zstdLevel) is not in 1...19") }
        if let threads, threads < 1 { throw .invalidOptions(reason: "\(threads) threads") }
        for path in prefetchPaths where !path.hasPrefix("/") {
            throw .invalidOptions(reason: "prefetch path \(path) is not absolute (start it with /)")
        }
    }
}

/// One layer to build from: a tar file, plain, gzip or zstd (detected from its first bytes).
public struct LayerInput: Sendable, Hashable {
    public var path: String
    /// The layer's digest, as its manifest names it: needed by gzip-indexed builds, which name blobs after it.
    public var digest: String?

    public init(path: String, digest: String? = nil) {
        self.path = path
        self.digest = digest
    }
}

/// Progress reports during a build.
public struct BuildProgress: Sendable, Equatable {
    public enum Phase: String, Sendable {
        case layer
        case blob
        case bootstrap
        case done
    }

    public var phase: Phase
    /// Layer being read (0-based), or the layer count when past the layers.
    public var layer: Int
    public var layerCount: Int
    /// Entries and uncompressed file bytes read so far over all layers.
    public var entries: Int
    public var bytes: UInt64
}

/// One data blob written by a build.
public struct BuiltBlob: Sendable, Equatable, Codable {
    /// Hex sha256 of the blob file, also its file name and its device-table tag.
    public var blobID: String
    public var path: String
    /// Layer the blob was built from (0-based).
    public var layer: Int
    /// Size of the blob file (chunks, meta, digests, ToC).
    public var compressedSize: UInt64
    /// Size of the uncompressed blob (the device the kernel reads).
    public var uncompressedSize: UInt64
    public var chunkCount: Int
    /// Gzip-indexed builds: the encoded `GzipIndex` of the layer (`<blob id>.gzidx` beside the blob), the layer's
    /// digest, and where the blob's meta sections start (before it, the blob file is a hole).
    public var gzipIndexPath: String? = nil
    public var layerDigest: String? = nil
    public var metaStart: UInt64? = nil
}

/// What a build produced.
public struct BuildResult: Sendable, Equatable, Codable {
    public var bootstrapPath: String
    /// Blobs in blob-table (device-table) order. Layers that contribute no new chunk have no blob: nydus
    /// omits empty blobs too, so `blobs.count` can be smaller than the layer count.
    public var blobs: [BuiltBlob]
    /// Entries in the merged tree, root included.
    public var inodeCount: Int
    /// Chunks referenced again instead of stored again (within and across layers).
    public var dedupedChunks: Int
    /// Uncompressed bytes of regular files read from the layers.
    public var fileBytes: UInt64
}
