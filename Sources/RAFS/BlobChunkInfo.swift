/// One entry of a blob's chunk-info array ("blob meta", the compression-context table): where a chunk lies
/// in the compressed blob and in the uncompressed blob. Decoded from either on-disk form.
///
/// v1, 16 bytes (two little-endian u64):
///
/// | word | bits | field |
/// |---|---|---|
/// | uncomp_info (0) | 0-7 | reserved |
/// | | 8-11 | (uncompressed size - 1) bits 20-23 |
/// | | 12-43 | uncompressed offset (the value is the offset itself, 4 KiB aligned) |
/// | | 44-63 | (uncompressed size - 1) bits 0-19 |
/// | comp_info (8) | 0-39 | compressed offset |
/// | | 40-43 | (compressed size - 1) bits 20-23 |
/// | | 44-63 | (compressed size - 1) bits 0-19 |
///
/// v1 has no flag bits: a chunk is compressed when its two sizes differ.
///
/// v2, 24 bytes (three little-endian u64):
///
/// | word | bits | field |
/// |---|---|---|
/// | uncomp_info (0) | 0-31 | uncompressed offset >> 12 |
/// | | 32-55 | uncompressed size - 1 |
/// | | 56-63 | flags: 0x01 compressed, 0x02 zran, 0x04 batch, 0x08 encrypted, 0x10 has crc32 |
/// | comp_info (8) | 0-39 | compressed offset |
/// | | 40-63 | compressed size (not minus one) |
/// | data (16) | 0-63 | zran/batch index and offset, or crc32 |
public struct BlobChunkInfo: Equatable, Sendable {
    public static let v1Size = 16
    public static let v2Size = 24

    public struct Flags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let compressed = Flags(rawValue: 0x01)
        public static let zran = Flags(rawValue: 0x02)
        public static let batch = Flags(rawValue: 0x04)
        public static let encrypted = Flags(rawValue: 0x08)
        public static let hasCRC32 = Flags(rawValue: 0x10)
    }

    /// Position in the chunk-info array.
    public var index: UInt32
    public var compressedOffset: UInt64
    public var compressedSize: UInt32
    public var uncompressedOffset: UInt64
    public var uncompressedSize: UInt32
    public var flags: Flags
    /// v2's third word; 0 for v1.
    public var data: UInt64

    public var isCompressed: Bool { flags.contains(.compressed) }
    public var compressedEnd: UInt64 { compressedOffset + UInt64(compressedSize) }
    public var uncompressedEnd: UInt64 { uncompressedOffset + UInt64(uncompressedSize) }
    /// The chunk's uncompressed bytes rounded up to whole 4 KiB blocks: what it takes on disk. Uncompressed
    /// offsets are block aligned and chunks do not overlap, so these blocks hold no other chunk's bytes.
    public var blockAlignedSize: UInt64 { (UInt64(uncompressedSize) + 4095) / 4096 * 4096 }

    public init(
        index: UInt32, compressedOffset: UInt64, compressedSize: UInt32, uncompressedOffset: UInt64,
        uncompressedSize: UInt32, flags: Flags, data: UInt64 = 0
    ) {
        self.index = index
        self.compressedOffset = compressedOffset
        self.compressedSize = compressedSize
        self.uncompressedOffset = uncompressedOffset
        self.uncompressedSize = uncompressedSize
        self.flags = flags
        self.data = data
    }

    public static func decodeV1(_ raw: LittleEndianBytes, at base: Int, index: UInt32) throws(ImageFormatError) -> Self {
        let uncomp = try raw.u64(base)
        let comp = try raw.u64(base + 8)
        let compressedSize = UInt32(truncatingIfNeeded: (comp >> 44) | ((comp >> 40) & 0xF) << 20) + 1
        let uncompressedSize = UInt32(truncatingIfNeeded: (uncomp >> 44) | ((uncomp >> 8) & 0xF) << 20) + 1
        let compressed = compressedSize != uncompressedSize
        return BlobChunkInfo(
            index: index,
            compressedOffset: comp & 0xFF_FFFF_FFFF,
            compressedSize: compressedSize,
            uncompressedOffset: uncomp & 0xFFF_FFFF_F000,
            uncompressedSize: uncompressedSize,
            flags: compressed ? .compressed : []
        )
    }

    public static func decodeV2(_ raw: LittleEndianBytes, at base: Int, index: UInt32) throws(ImageFormatError) -> Self {
        let uncomp = try raw.u64(base)
        let comp = try raw.u64(base + 8)
        return BlobChunkInfo(
            index: index,
            compressedOffset: comp & 0xFF_FFFF_FFFF,
            compressedSize: UInt32(truncatingIfNeeded: comp >> 40),
            uncompressedOffset: (uncomp & 0xFFFF_FFFF) << 12,
            uncompressedSize: UInt32(truncatingIfNeeded: (uncomp >> 32) & 0xFF_FFFF) + 1,
            flags: Flags(rawValue: UInt8(truncatingIfNeeded: uncomp >> 56)),
            data: try raw.u64(base + 16)
        )
    }
}

/// The 4 KiB header that follows the chunk-info array in the compressed blob (`BlobCompressionContextHeader`).
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 4 | magic `0xB10BB10B` |
/// | 4 | 4 | features (BlobFeatures) |
/// | 8 | 4 | ci_compressor |
/// | 12 | 4 | ci_entries |
/// | 16 | 8 | ci_offset |
/// | 24 | 8 | ci_compressed_size |
/// | 32 | 8 | ci_uncompressed_size |
/// | 40 | 8 | ci_zran_offset |
/// | 48 | 8 | ci_zran_size |
/// | 56 | 4 | ci_zran_count |
/// | 60 | 4032 | reserved |
/// | 4092 | 4 | magic2 `0xB10BB10B` |
public struct BlobMetaHeader: Equatable, Sendable {
    public static let size = 4096
    public static let magic: UInt32 = 0xB10B_B10B

    public var features: RafsBlobEntry.Features
    public var compressorRaw: UInt32
    public var entries: UInt32
    public var offset: UInt64
    public var compressedSize: UInt64
    public var uncompressedSize: UInt64

    public init(decoding raw: LittleEndianBytes, at fileOffset: UInt64) throws(ImageFormatError) {
        for position in [0, Self.size - 4] {
            let found = try raw.u32(position)
            guard found == Self.magic else {
                throw .badMagic(
                    what: "blob meta header", offset: fileOffset + UInt64(position),
                    expected: Self.magic, found: found)
            }
        }
        features = RafsBlobEntry.Features(rawValue: try raw.u32(4))
        compressorRaw = try raw.u32(8)
        entries = try raw.u32(12)
        offset = try raw.u64(16)
        compressedSize = try raw.u64(24)
        uncompressedSize = try raw.u64(32)
    }
}
