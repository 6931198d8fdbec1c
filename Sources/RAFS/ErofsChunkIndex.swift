/// Chunk-based data layout (`i_format` layout 4).
///
/// The inode's `i_u` holds the chunk format (low 16 bits):
///
/// | bits | meaning |
/// |---|---|
/// | 0-4 | chunk blkbits: chunk size = block size << blkbits |
/// | 5 | INDEXES: 8-byte chunk indexes follow; clear: a plain array of 4-byte block addresses |
///
/// The array starts after the inode and its inline xattrs, aligned up to the entry size; entry `n` maps
/// file bytes `[n * chunksize, (n + 1) * chunksize)`. A block address of `0xFFFFFFFF` is a hole.
///
/// Chunk index, 8 bytes:
///
/// | offset | size | field (EROFS) | RAFS v6 reading |
/// |---:|---:|---|---|
/// | 0 | 2 | advise | c_blob_addr_lo: chunk-info index bits 0-15 |
/// | 2 | 2 | device_id | c_blob_addr_hi: low byte blob index + 1, high byte chunk-info index bits 16-23 |
/// | 4 | 4 | blkaddr | block address in the *uncompressed* blob |
///
/// The kernel masks `device_id` with `roundup_pow_of_two(extra_devices + 1) - 1`, which drops the
/// chunk-info bits RAFS stores in the high byte.
public struct ErofsChunkIndex: Equatable, Sendable {
    public static let size = 8
    public static let blockMapEntrySize = 4
    public static let nullAddress: UInt32 = 0xFFFF_FFFF
    public static let blockBitsMask: UInt16 = 0x001F
    public static let indexesFlag: UInt16 = 0x0020

    public var advise: UInt16
    public var deviceID: UInt16
    public var blockAddress: UInt32

    public init(advise: UInt16, deviceID: UInt16, blockAddress: UInt32) {
        self.advise = advise
        self.deviceID = deviceID
        self.blockAddress = blockAddress
    }

    public init(decoding raw: LittleEndianBytes, at offset: Int = 0) throws(ImageFormatError) {
        advise = try raw.u16(offset)
        deviceID = try raw.u16(offset + 2)
        blockAddress = try raw.u32(offset + 4)
    }

    public var isHole: Bool { blockAddress == Self.nullAddress }

    /// RAFS v6: index into the blob table (the low byte minus one); nil when the low byte is 0.
    public var rafsBlobIndex: UInt32? {
        let low = UInt32(deviceID & 0x00FF)
        return low == 0 ? nil : low - 1
    }

    /// RAFS v6: 24-bit index into the blob's chunk-info array.
    public var rafsChunkInfoIndex: UInt32 {
        UInt32(deviceID >> 8) << 16 | UInt32(advise)
    }
}

/// Where one chunk of a chunk-based file lives.
public struct ErofsChunkMapping: Equatable, Sendable {
    /// Chunk number within the file.
    public var chunk: UInt64
    public var fileOffset: UInt64
    /// Bytes of the file in this chunk (the last one is short).
    public var length: UInt64
    /// 0 is the bootstrap itself; 1...extra_devices index the device table (RAFS: blob index + 1).
    public var device: UInt16
    /// Block address in that device (the uncompressed blob), nil for a hole.
    public var blockAddress: UInt32?
    /// Byte offset in the device, nil for a hole.
    public var deviceOffset: UInt64?
    /// The raw index entry (nil for the 4-byte block-map form).
    public var index: ErofsChunkIndex?
}
