/// Extended attributes of EROFS inodes.
///
/// Inline area after the inode (`i_xattr_icount` != 0), `12 + 4 * (icount - 1)` bytes:
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 4 | h_name_filter (bloom filter, bit set = name absent) |
/// | 4 | 1 | h_shared_count |
/// | 5 | 7 | reserved |
/// | 12 | 4 × shared_count | shared xattr ids (entry at `xattr_blkaddr * blocksize + id * 4`) |
/// | … | … | inline entries, each padded to 4 bytes |
///
/// Entry (inline or shared), 4-byte header:
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 1 | e_name_len |
/// | 1 | 1 | e_name_index (bit 7: long prefix, low 7 bits its index) |
/// | 2 | 2 | e_value_size |
/// | 4 | name_len | name suffix |
/// | 4 + name_len | value_size | value |
///
/// Long prefix table (`xattr_prefix_count` items from byte `xattr_prefix_start * 4`): each item is a
/// 2-byte length, then `base_index` (1 byte) and the infix, padded to 4 bytes.
public struct ErofsXattr: Equatable, Sendable {
    public var name: String
    public var value: [UInt8]

    public init(name: String, value: [UInt8]) {
        self.name = name
        self.value = value
    }

    /// Short name prefixes by `e_name_index` (EROFS_XATTR_INDEX_*).
    public static func shortPrefix(_ index: UInt8) -> String? {
        switch index {
        case 1: return "user."
        case 2: return "system.posix_acl_access"
        case 3: return "system.posix_acl_default"
        case 4: return "trusted."
        case 5: return "lustre."
        case 6: return "security."
        default: return nil
        }
    }

    /// Overlayfs keeps its own attributes under these namespaces; images for overlay lower layers
    /// (whiteouts, opaque directories) carry them, often through a long prefix.
    public static let overlayPrefixes = ["trusted.overlay.", "user.overlay."]

    /// The bit of `e_name_index` that selects a long prefix.
    static let longPrefixFlag: UInt8 = 0x80

    /// A long prefix: a short prefix index plus an infix (e.g. `trusted.` + `overlay.`).
    public struct LongPrefix: Equatable, Sendable {
        public var baseIndex: UInt8
        public var infix: [UInt8]

        public var prefix: String? {
            Self.join(baseIndex, infix)
        }

        static func join(_ base: UInt8, _ infix: [UInt8]) -> String? {
            guard let short = ErofsXattr.shortPrefix(base) else { return nil }
            return short + String(decoding: infix, as: UTF8.self)
        }
    }

    /// Size of an entry with its header and padding, as laid out on disk.
    static func entrySize(nameLength: Int, valueSize: Int) -> Int {
        (4 + nameLength + valueSize + 3) & ~3
    }
}
