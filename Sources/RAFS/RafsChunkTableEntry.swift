/// One entry of the bootstrap's chunk table (`s_chunk_table_offset`, RafsV5ChunkInfo reused by v6),
/// 80 bytes. RAFS v6 keeps it for the chunk digests and for tools; the kernel never reads it.
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 32 | block_id (digest of the uncompressed chunk) |
/// | 32 | 4 | blob_index |
/// | 36 | 4 | flags (0x1 compressed, 0x4 encrypted, 0x8 batch) |
/// | 40 | 4 | compressed_size |
/// | 44 | 4 | uncompressed_size |
/// | 48 | 8 | compressed_offset |
/// | 56 | 8 | uncompressed_offset |
/// | 64 | 8 | file_offset |
/// | 72 | 4 | index (chunk-info index within the blob) |
/// | 76 | 4 | crc32 |
public struct RafsChunkTableEntry: Equatable, Sendable {
    public static let size = 80

    public var digest: [UInt8]
    public var blobIndex: UInt32
    public var flags: UInt32
    public var compressedSize: UInt32
    public var uncompressedSize: UInt32
    public var compressedOffset: UInt64
    public var uncompressedOffset: UInt64
    public var fileOffset: UInt64
    public var index: UInt32
    public var crc32: UInt32

    public init(decoding raw: LittleEndianBytes, at base: Int = 0) throws(ImageFormatError) {
        digest = try raw.slice(base, 32)
        blobIndex = try raw.u32(base + 32)
        flags = try raw.u32(base + 36)
        compressedSize = try raw.u32(base + 40)
        uncompressedSize = try raw.u32(base + 44)
        compressedOffset = try raw.u64(base + 48)
        uncompressedOffset = try raw.u64(base + 56)
        fileOffset = try raw.u64(base + 64)
        index = try raw.u32(base + 72)
        crc32 = try raw.u32(base + 76)
    }
}
