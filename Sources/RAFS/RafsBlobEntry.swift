/// One entry of the RAFS v6 blob table (`RafsV6Blob`), 256 bytes, at `s_blob_table_offset`.
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 64 | blob_id (sha256 hex of the blob) |
/// | 64 | 4 | blob_index |
/// | 68 | 4 | chunk_size |
/// | 72 | 4 | chunk_count |
/// | 76 | 4 | compression_algo (0 none, 1 lz4_block, 2 gzip, 3 zstd) |
/// | 80 | 4 | digest_algo (0 blake3, 1 sha256) |
/// | 84 | 4 | features (BlobFeatures) |
/// | 88 | 8 | compressed_size (chunk data only) |
/// | 96 | 8 | uncompressed_size |
/// | 104 | 4 | blob_toc_size |
/// | 108 | 4 | ci_compressor (compression of the chunk-info array) |
/// | 112 | 8 | ci_offset (in the compressed blob) |
/// | 120 | 8 | ci_compressed_size |
/// | 128 | 8 | ci_uncompressed_size |
/// | 136 | 32 | blob_toc_digest (sha256 of ToC + its tar header) |
/// | 168 | 32 | blob_meta_digest (or cipher key) |
/// | 200 | 8 | blob_meta_size (or cipher IV bytes 0-7) |
/// | 208 | 8 | cipher_iv bytes 8-15 |
/// | 216 | 4 | cipher_algo |
/// | 220 | 36 | reserved |
public struct RafsBlobEntry: Equatable, Sendable {
    public static let size = 256

    /// Chunk compression (`compression_algo`, `ci_compressor`).
    public enum Compression: UInt32, Sendable {
        case none = 0
        case lz4Block = 1
        case gzip = 2
        case zstd = 3
    }

    /// Chunk digest (`digest_algo`).
    public enum DigestAlgorithm: UInt32, Sendable {
        case blake3 = 0
        case sha256 = 1
    }

    /// `BlobFeatures` bits.
    public struct Features: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Chunk uncompressed offsets are 4 KiB aligned.
        public static let aligned = Features(rawValue: 0x0000_0001)
        public static let inlinedFSMeta = Features(rawValue: 0x0000_0002)
        /// Chunk-info entries are the 24-byte v2 form (else 16-byte v1).
        public static let chunkInfoV2 = Features(rawValue: 0x0000_0004)
        public static let zran = Features(rawValue: 0x0000_0008)
        public static let separate = Features(rawValue: 0x0000_0010)
        /// The blob carries a `blob.digest` section with one 32-byte digest per chunk.
        public static let inlinedChunkDigest = Features(rawValue: 0x0000_0020)
        public static let tarfs = Features(rawValue: 0x0000_0040)
        public static let batch = Features(rawValue: 0x0000_0080)
        public static let encrypted = Features(rawValue: 0x0000_0100)
        public static let chunkDictGenerated = Features(rawValue: 0x0000_0200)
        public static let separatedWithPrefetchFiles = Features(rawValue: 0x0000_0400)
        public static let external = Features(rawValue: 0x0000_0800)
        /// Each section is followed by a 512-byte tar header.
        public static let hasTarHeader = Features(rawValue: 0x1000_0000)
        public static let hasToc = Features(rawValue: 0x2000_0000)
        public static let capTarToc = Features(rawValue: 0x4000_0000)
    }

    public var blobID: String
    public var blobIndex: UInt32
    public var chunkSize: UInt32
    public var chunkCount: UInt32
    public var compressionRaw: UInt32
    public var digestRaw: UInt32
    public var features: Features
    public var compressedSize: UInt64
    public var uncompressedSize: UInt64
    public var tocSize: UInt32
    public var metaCompressorRaw: UInt32
    public var metaOffset: UInt64
    public var metaCompressedSize: UInt64
    public var metaUncompressedSize: UInt64
    public var tocDigest: [UInt8]
    public var metaDigest: [UInt8]
    public var metaSize: UInt64
    public var cipherIVTail: [UInt8]
    public var cipherAlgorithm: UInt32

    public var compression: Compression? { Compression(rawValue: compressionRaw) }
    public var digestAlgorithm: DigestAlgorithm? { DigestAlgorithm(rawValue: digestRaw) }
    public var metaCompressor: Compression? { Compression(rawValue: metaCompressorRaw) }

    public init(decoding raw: LittleEndianBytes, at base: Int = 0) throws(ImageFormatError) {
        blobID = try raw.cString(base, 64)
        blobIndex = try raw.u32(base + 64)
        chunkSize = try raw.u32(base + 68)
        chunkCount = try raw.u32(base + 72)
        compressionRaw = try raw.u32(base + 76)
        digestRaw = try raw.u32(base + 80)
        features = Features(rawValue: try raw.u32(base + 84))
        compressedSize = try raw.u64(base + 88)
        uncompressedSize = try raw.u64(base + 96)
        tocSize = try raw.u32(base + 104)
        metaCompressorRaw = try raw.u32(base + 108)
        metaOffset = try raw.u64(base + 112)
        metaCompressedSize = try raw.u64(base + 120)
        metaUncompressedSize = try raw.u64(base + 128)
        tocDigest = try raw.slice(base + 136, 32)
        metaDigest = try raw.slice(base + 168, 32)
        metaSize = try raw.u64(base + 200)
        cipherIVTail = try raw.slice(base + 208, 8)
        cipherAlgorithm = try raw.u32(base + 216)
    }
}
