/// One EROFS directory entry record, 12 bytes. A directory's data is a sequence of blocks; each block holds
/// `nameoff(first) / 12` records followed by their names (not NUL-terminated: a name runs to the next record's
/// `nameoff`, the last one to the first NUL or the end of the block's used bytes). Records are sorted by name.
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 8 | nid |
/// | 8 | 2 | nameoff (within the block) |
/// | 10 | 1 | file_type (FT_*) |
/// | 11 | 1 | reserved |
public struct ErofsDirent: Equatable, Sendable {
    public static let size = 12
    /// EROFS_NAME_LEN.
    public static let maximumNameLength = 255

    public var nid: UInt64
    public var nameOffset: UInt16
    public var fileType: UInt8

    public init(decoding raw: LittleEndianBytes, at offset: Int) throws(ImageFormatError) {
        nid = try raw.u64(offset)
        nameOffset = try raw.u16(offset + 8)
        fileType = try raw.u8(offset + 10)
    }
}

/// A directory entry as the reader returns it: name, target nid and the type the entry claims.
public struct ErofsDirectoryEntry: Equatable, Sendable {
    public var name: String
    public var nid: UInt64
    public var fileType: ErofsFileType
}
