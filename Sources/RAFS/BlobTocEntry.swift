/// One entry of a blob's table of contents (`rafs.blob.toc`), 128 bytes. The ToC sits at the end of the
/// blob, right before the final 512-byte tar header when the blob has tar headers.
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 4 | flags (0x1 none, 0x2 zstd, 0x4 lz4_block) |
/// | 4 | 4 | reserved |
/// | 8 | 16 | name (`image.blob`, `blob.meta`, `blob.meta.header`, `blob.digest`, `image.boot`) |
/// | 24 | 32 | sha256 of the uncompressed entry data |
/// | 56 | 8 | compressed offset |
/// | 64 | 8 | compressed size |
/// | 72 | 8 | uncompressed size |
/// | 80 | 48 | reserved |
public struct BlobTocEntry: Equatable, Sendable {
    public static let size = 128
    /// Size of one tar header block.
    public static let tarHeaderSize = 512

    public var flags: UInt32
    public var name: String
    public var digest: [UInt8]
    public var compressedOffset: UInt64
    public var compressedSize: UInt64
    public var uncompressedSize: UInt64

    public init(decoding raw: LittleEndianBytes, at base: Int) throws(ImageFormatError) {
        flags = try raw.u32(base)
        name = try raw.cString(base + 8, 16)
        digest = try raw.slice(base + 24, 32)
        compressedOffset = try raw.u64(base + 56)
        compressedSize = try raw.u64(base + 64)
        uncompressedSize = try raw.u64(base + 72)
    }

    /// The entry's compression as a blob-table compression value.
    public var compression: RafsBlobEntry.Compression? {
        switch flags & 0xF {
        case 0x1: return RafsBlobEntry.Compression.none
        case 0x2: return .zstd
        case 0x4: return .lz4Block
        default: return nil
        }
    }
}
