/// The EROFS superblock: 128 bytes at byte 1024 of the primary device (the RAFS v6 bootstrap).
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 4 | magic `0xE0F5E1E2` |
/// | 4 | 4 | checksum (crc32c, only with COMPAT_SB_CHKSUM) |
/// | 8 | 4 | feature_compat |
/// | 12 | 1 | blkszbits (block size = 1 << bits) |
/// | 13 | 1 | sb_extslots |
/// | 14 | 2 | root_nid |
/// | 16 | 8 | inos |
/// | 24 | 8 | build_time (mtime of compact inodes) |
/// | 32 | 4 | build_time_nsec |
/// | 36 | 4 | blocks |
/// | 40 | 4 | meta_blkaddr (inode `nid` lives at `meta_blkaddr * blocksize + nid * 32`) |
/// | 44 | 4 | xattr_blkaddr (shared xattr `id` lives at `xattr_blkaddr * blocksize + id * 4`) |
/// | 48 | 16 | uuid |
/// | 64 | 16 | volume_name |
/// | 80 | 4 | feature_incompat |
/// | 84 | 2 | available_compr_algs / lz4_max_distance |
/// | 86 | 2 | extra_devices |
/// | 88 | 2 | devt_slotoff (device table at `devt_slotoff * 128`) |
/// | 90 | 1 | dirblkbits |
/// | 91 | 1 | xattr_prefix_count |
/// | 92 | 4 | xattr_prefix_start (long prefixes at `start * 4`) |
/// | 100 | 8 | packed_nid |
/// | 108 | 1 | xattr_filter_reserved |
/// | 109 | 19 | reserved |
public struct ErofsSuperBlock: Equatable, Sendable {
    public static let offset: UInt64 = 1024
    public static let size = 128
    public static let magic: UInt32 = 0xE0F5_E1E2

    public struct CompatFeatures: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let superBlockChecksum = CompatFeatures(rawValue: 0x0000_0001)
        public static let mtime = CompatFeatures(rawValue: 0x0000_0002)
        public static let xattrFilter = CompatFeatures(rawValue: 0x0000_0004)
        /// Set by nydus-image on RAFS v6 bootstraps: the RAFS extended superblock follows at 1152.
        public static let rafsV6 = CompatFeatures(rawValue: 0x4000_0000)
    }

    public struct IncompatFeatures: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Also BIG_PCLUSTER / COMPR_CFGS in compressed images (same bit, different meaning per era).
        public static let zeroPadding = IncompatFeatures(rawValue: 0x0000_0001)
        public static let compressionConfigs = IncompatFeatures(rawValue: 0x0000_0002)
        public static let chunkedFile = IncompatFeatures(rawValue: 0x0000_0004)
        /// Shares its bit with COMPR_HEAD2 of compressed images.
        public static let deviceTable = IncompatFeatures(rawValue: 0x0000_0008)
        public static let tailPacking = IncompatFeatures(rawValue: 0x0000_0010)
        public static let fragments = IncompatFeatures(rawValue: 0x0000_0020)
        public static let xattrPrefixes = IncompatFeatures(rawValue: 0x0000_0040)
    }

    public var checksum: UInt32
    public var compatFeatures: CompatFeatures
    public var blockSizeBits: UInt8
    public var extensionSlots: UInt8
    public var rootNid: UInt16
    public var inodeCount: UInt64
    public var buildTime: UInt64
    public var buildTimeNanoseconds: UInt32
    public var blocks: UInt32
    public var metaBlockAddress: UInt32
    public var xattrBlockAddress: UInt32
    public var uuid: [UInt8]
    public var volumeName: String
    public var incompatFeatures: IncompatFeatures
    public var compressionField: UInt16
    public var extraDevices: UInt16
    public var deviceTableSlotOffset: UInt16
    public var directoryBlockBits: UInt8
    public var xattrPrefixCount: UInt8
    public var xattrPrefixStart: UInt32
    public var packedNid: UInt64

    public var blockSize: UInt64 { 1 << UInt64(blockSizeBits) }
    /// Byte offset of the first slot of the device table.
    public var deviceTableOffset: UInt64 { UInt64(deviceTableSlotOffset) * UInt64(ErofsDeviceSlot.size) }
    /// Byte offset of inode `nid`.
    public func inodeOffset(nid: UInt64) -> UInt64? {
        let (slot, overflow) = nid.multipliedReportingOverflow(by: UInt64(ErofsInode.slotSize))
        let (sum, overflow2) = (UInt64(metaBlockAddress) << UInt64(blockSizeBits)).addingReportingOverflow(slot)
        return overflow || overflow2 ? nil : sum
    }

    /// Decodes and validates the 128 bytes read at `offset`.
    public init(decoding raw: LittleEndianBytes) throws(ImageFormatError) {
        let found = try raw.u32(0)
        guard found == Self.magic else {
            throw .badMagic(what: "EROFS superblock", offset: Self.offset, expected: Self.magic, found: found)
        }
        checksum = try raw.u32(4)
        compatFeatures = CompatFeatures(rawValue: try raw.u32(8))
        blockSizeBits = try raw.u8(12)
        extensionSlots = try raw.u8(13)
        rootNid = try raw.u16(14)
        inodeCount = try raw.u64(16)
        buildTime = try raw.u64(24)
        buildTimeNanoseconds = try raw.u32(32)
        blocks = try raw.u32(36)
        metaBlockAddress = try raw.u32(40)
        xattrBlockAddress = try raw.u32(44)
        uuid = try raw.slice(48, 16)
        volumeName = try raw.cString(64, 16)
        incompatFeatures = IncompatFeatures(rawValue: try raw.u32(80))
        compressionField = try raw.u16(84)
        extraDevices = try raw.u16(86)
        deviceTableSlotOffset = try raw.u16(88)
        directoryBlockBits = try raw.u8(90)
        xattrPrefixCount = try raw.u8(91)
        xattrPrefixStart = try raw.u32(92)
        packedNid = try raw.u64(100)

        // The kernel accepts 512 B up to page-size blocks; 64 KiB is the largest page size anywhere.
        guard (9...16).contains(blockSizeBits) else { throw .unsupportedBlockSize(bits: blockSizeBits) }
        // Bits whose meaning for uncompressed images this reader implements (0x1 and 0x2 are only
        // meaningful for compressed inodes, which are rejected per inode).
        let understood: IncompatFeatures = [
            .zeroPadding, .compressionConfigs, .chunkedFile, .deviceTable, .tailPacking, .xattrPrefixes,
        ]
        let unknown = incompatFeatures.subtracting(understood)
        guard unknown.isEmpty else { throw .unsupportedFeatures(incompat: unknown.rawValue) }
    }
}
