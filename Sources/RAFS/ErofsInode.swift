/// An EROFS on-disk inode, compact (32 bytes) or extended (64 bytes), decoded into one shape.
///
/// Both forms start with `i_format` (bit 0: 0 compact, 1 extended; bits 1-3: data layout).
///
/// Compact, 32 bytes:
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 2 | i_format |
/// | 2 | 2 | i_xattr_icount |
/// | 4 | 2 | i_mode |
/// | 6 | 2 | i_nlink |
/// | 8 | 4 | i_size |
/// | 12 | 4 | reserved |
/// | 16 | 4 | i_u (raw_blkaddr / rdev / chunk format) |
/// | 20 | 4 | i_ino |
/// | 24 | 2 | i_uid |
/// | 26 | 2 | i_gid |
/// | 28 | 4 | reserved |
///
/// Extended, 64 bytes:
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 2 | i_format |
/// | 2 | 2 | i_xattr_icount |
/// | 4 | 2 | i_mode |
/// | 6 | 2 | reserved |
/// | 8 | 8 | i_size |
/// | 16 | 4 | i_u |
/// | 20 | 4 | i_ino |
/// | 24 | 4 | i_uid |
/// | 28 | 4 | i_gid |
/// | 32 | 8 | i_mtime (seconds) |
/// | 40 | 4 | i_mtime_nsec |
/// | 44 | 4 | i_nlink |
/// | 48 | 16 | reserved |
///
/// Compact inodes have no mtime of their own: they take the superblock's build time.
public struct ErofsInode: Equatable, Sendable {
    public static let slotSize = 32
    public static let compactSize = 32
    public static let extendedSize = 64

    /// `i_format` bits 1-3.
    public enum DataLayout: UInt8, Sendable {
        case flatPlain = 0
        case compressedFull = 1
        case flatInline = 2
        case compressedCompact = 3
        case chunkBased = 4
    }

    public var nid: UInt64
    /// Byte offset of the inode in the bootstrap.
    public var offset: UInt64
    public var isExtended: Bool
    public var layoutBits: UInt8
    public var xattrInlineCount: UInt16
    public var mode: UInt16
    public var nlink: UInt32
    public var size: UInt64
    /// The `i_u` union: block address, rdev or chunk format, depending on type and layout.
    public var union: UInt32
    public var ino: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtime: UInt64
    public var mtimeNanoseconds: UInt32

    public var inodeSize: Int { isExtended ? Self.extendedSize : Self.compactSize }
    public var dataLayout: DataLayout? { DataLayout(rawValue: layoutBits) }
    public var fileType: ErofsFileType { ErofsFileType(mode: mode) }

    /// Size of the inline xattr area after the inode: a 12-byte header and `icount - 1` 4-byte words.
    public var xattrSize: Int { xattrInlineCount == 0 ? 0 : 12 + 4 * (Int(xattrInlineCount) - 1) }

    /// Where inline (tail) data or chunk indexes begin: right after the inode and its inline xattrs.
    public var trailerOffset: UInt64 { offset + UInt64(inodeSize) + UInt64(xattrSize) }

    public init(
        nid: UInt64, offset: UInt64, decoding raw: LittleEndianBytes, superBlock: ErofsSuperBlock
    )
        throws(ImageFormatError)
    {
        self.nid = nid
        self.offset = offset
        let format = try raw.u16(0)
        // Bits above the layout are reserved: a set bit means a newer format or garbage.
        guard format >> 4 == 0 else { throw .badInode(nid: nid, reason: "i_format 0x\(String(format, radix: 16)) has reserved bits set") }
        isExtended = format & 0x1 == 1
        layoutBits = UInt8((format >> 1) & 0x7)
        xattrInlineCount = try raw.u16(2)
        mode = try raw.u16(4)
        if isExtended {
            nlink = try raw.u32(44)
            size = try raw.u64(8)
            union = try raw.u32(16)
            ino = try raw.u32(20)
            uid = try raw.u32(24)
            gid = try raw.u32(28)
            mtime = try raw.u64(32)
            mtimeNanoseconds = try raw.u32(40)
        } else {
            nlink = UInt32(try raw.u16(6))
            size = UInt64(try raw.u32(8))
            union = try raw.u32(16)
            ino = try raw.u32(20)
            uid = UInt32(try raw.u16(24))
            gid = UInt32(try raw.u16(26))
            mtime = superBlock.buildTime
            mtimeNanoseconds = superBlock.buildTimeNanoseconds
        }
    }
}

/// File types as `i_mode`'s S_IFMT bits and as dirent `file_type` (the kernel's FT_* numbering).
public enum ErofsFileType: String, Sendable, Equatable, CaseIterable {
    case regular, directory, symlink, characterDevice, blockDevice, fifo, socket, unknown

    public init(mode: UInt16) {
        switch mode & 0o170000 {
        case 0o100000: self = .regular
        case 0o040000: self = .directory
        case 0o120000: self = .symlink
        case 0o020000: self = .characterDevice
        case 0o060000: self = .blockDevice
        case 0o010000: self = .fifo
        case 0o140000: self = .socket
        default: self = .unknown
        }
    }

    /// Dirent `file_type`: 1 regular, 2 directory, 3 chrdev, 4 blkdev, 5 fifo, 6 socket, 7 symlink.
    public init(direntType: UInt8) {
        switch direntType {
        case 1: self = .regular
        case 2: self = .directory
        case 3: self = .characterDevice
        case 4: self = .blockDevice
        case 5: self = .fifo
        case 6: self = .socket
        case 7: self = .symlink
        default: self = .unknown
        }
    }
}
