/// The RAFS v6 extended superblock: 256 bytes at byte 1152 (right after the EROFS superblock), present when
/// the EROFS compat features carry `rafsV6`.
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 8 | s_flags (RafsSuperFlags) |
/// | 8 | 8 | s_blob_table_offset |
/// | 16 | 4 | s_blob_table_size (a multiple of 256) |
/// | 20 | 4 | s_chunk_size |
/// | 24 | 8 | s_chunk_table_offset |
/// | 32 | 8 | s_chunk_table_size (a multiple of 80) |
/// | 40 | 8 | s_prefetch_table_offset |
/// | 48 | 4 | s_prefetch_table_size |
/// | 52 | 4 | padding |
/// | 56 | 200 | reserved |
public struct RafsSuperBlockExtension: Equatable, Sendable {
    public static let offset: UInt64 = 1152
    public static let size = 256

    public struct Flags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let compressionNone = Flags(rawValue: 0x0000_0001)
        public static let compressionLZ4 = Flags(rawValue: 0x0000_0002)
        public static let hashBlake3 = Flags(rawValue: 0x0000_0004)
        public static let hashSHA256 = Flags(rawValue: 0x0000_0008)
        public static let explicitUIDGID = Flags(rawValue: 0x0000_0010)
        public static let hasXattr = Flags(rawValue: 0x0000_0020)
        public static let compressionGzip = Flags(rawValue: 0x0000_0040)
        public static let compressionZstd = Flags(rawValue: 0x0000_0080)
        public static let inlinedChunkDigest = Flags(rawValue: 0x0000_0100)
        public static let tarfsMode = Flags(rawValue: 0x0000_0200)
        public static let encryptionNone = Flags(rawValue: 0x0100_0000)
        public static let encryptionAES128XTS = Flags(rawValue: 0x0200_0000)
    }

    public var flags: Flags
    public var blobTableOffset: UInt64
    public var blobTableSize: UInt32
    public var chunkSize: UInt32
    public var chunkTableOffset: UInt64
    public var chunkTableSize: UInt64
    public var prefetchTableOffset: UInt64
    public var prefetchTableSize: UInt32

    public init(decoding raw: LittleEndianBytes) throws(ImageFormatError) {
        flags = Flags(rawValue: try raw.u64(0))
        blobTableOffset = try raw.u64(8)
        blobTableSize = try raw.u32(16)
        chunkSize = try raw.u32(20)
        chunkTableOffset = try raw.u64(24)
        chunkTableSize = try raw.u64(32)
        prefetchTableOffset = try raw.u64(40)
        prefetchTableSize = try raw.u32(48)
    }
}
