/// Writing side of the EROFS on-disk structures the reader decodes (`ErofsSuperBlock`, `ErofsDeviceSlot`,
/// `ErofsChunkIndex`, inodes, dirents, inline xattrs). Offsets are the ones documented on each reader type.
extension ErofsSuperBlock {
    /// A superblock for a 4 KiB-block, uncompressed image; every field not given is zero.
    package init(
        compatFeatures: CompatFeatures, incompatFeatures: IncompatFeatures, rootNid: UInt16, inodeCount: UInt64,
        buildTime: UInt64, buildTimeNanoseconds: UInt32, blocks: UInt32, metaBlockAddress: UInt32, extraDevices: UInt16,
        deviceTableSlotOffset: UInt16
    ) {
        checksum = 0
        self.compatFeatures = compatFeatures
        blockSizeBits = 12
        extensionSlots = 0
        self.rootNid = rootNid
        self.inodeCount = inodeCount
        self.buildTime = buildTime
        self.buildTimeNanoseconds = buildTimeNanoseconds
        self.blocks = blocks
        self.metaBlockAddress = metaBlockAddress
        xattrBlockAddress = 0
        uuid = [UInt8](repeating: 0, count: 16)
        volumeName = ""
        self.incompatFeatures = incompatFeatures
        compressionField = 0
        self.extraDevices = extraDevices
        self.deviceTableSlotOffset = deviceTableSlotOffset
        directoryBlockBits = 0
        xattrPrefixCount = 0
        xattrPrefixStart = 0
        packedNid = 0
    }

    /// The 128 bytes that go at `ErofsSuperBlock.offset`.
    package func encoded() -> [UInt8] {
        var out = LittleEndianWriter(count: Self.size)
        out.u32(Self.magic, at: 0)
        out.u32(checksum, at: 4)
        out.u32(compatFeatures.rawValue, at: 8)
        out.u8(blockSizeBits, at: 12)
        out.u8(extensionSlots, at: 13)
        out.u16(rootNid, at: 14)
        out.u64(inodeCount, at: 16)
        out.u64(buildTime, at: 24)
        out.u32(buildTimeNanoseconds, at: 32)
        out.u32(blocks, at: 36)
        out.u32(metaBlockAddress, at: 40)
        out.u32(xattrBlockAddress, at: 44)
        out.raw(uuid, at: 48, length: 16)
        out.raw(Array(volumeName.utf8), at: 64, length: 16)
        out.u32(incompatFeatures.rawValue, at: 80)
        out.u16(compressionField, at: 84)
        out.u16(extraDevices, at: 86)
        out.u16(deviceTableSlotOffset, at: 88)
        out.u8(directoryBlockBits, at: 90)
        out.u8(xattrPrefixCount, at: 91)
        out.u32(xattrPrefixStart, at: 92)
        out.u64(packedNid, at: 100)
        return out.bytes
    }
}

extension ErofsDeviceSlot {
    /// A slot naming `tag` (a RAFS blob id) of `blocks` 4 KiB blocks.
    package static func encoded(tag: String, blocks: UInt32) -> [UInt8] {
        var out = LittleEndianWriter(count: size)
        out.raw(Array(tag.utf8), at: 0, length: 64)
        out.u32(blocks, at: 64)
        return out.bytes
    }
}

extension ErofsChunkIndex {
    /// RAFS v6 form: blob index + 1 in the low byte of `device_id`, the 24-bit chunk-info index split over
    /// `advise` and the high byte, the block address in the uncompressed blob.
    package init(rafsBlobIndex blob: UInt32, chunkInfoIndex: UInt32, blockAddress: UInt32) {
        self.init(
            advise: UInt16(truncatingIfNeeded: chunkInfoIndex),
            deviceID: UInt16(truncatingIfNeeded: blob + 1) | UInt16(truncatingIfNeeded: chunkInfoIndex >> 16) << 8,
            blockAddress: blockAddress)
    }

    package func encode(into out: inout LittleEndianWriter, at offset: Int) {
        out.u16(advise, at: offset)
        out.u16(deviceID, at: offset + 2)
        out.u32(blockAddress, at: offset + 4)
    }
}

extension ErofsFileType {
    /// `i_mode` type bits.
    package var modeBits: UInt16 {
        switch self {
        case .regular: return 0o100000
        case .directory: return 0o040000
        case .symlink: return 0o120000
        case .characterDevice: return 0o020000
        case .blockDevice: return 0o060000
        case .fifo: return 0o010000
        case .socket: return 0o140000
        case .unknown: return 0
        }
    }

    /// Dirent `file_type` (FT_*), the inverse of `init(direntType:)`.
    package var direntType: UInt8 {
        switch self {
        case .regular: return 1
        case .directory: return 2
        case .characterDevice: return 3
        case .blockDevice: return 4
        case .fifo: return 5
        case .socket: return 6
        case .symlink: return 7
        case .unknown: return 0
        }
    }
}

/// The fields of one inode as the builder writes them (compact or extended form chosen by the caller).
package struct ErofsInodeRecord {
    package var extended: Bool
    package var layout: ErofsInode.DataLayout
    package var xattrInlineCount: UInt16
    package var mode: UInt16
    package var nlink: UInt32
    package var size: UInt64
    package var union: UInt32
    package var ino: UInt32
    package var uid: UInt32
    package var gid: UInt32
    package var mtime: UInt64
    package var mtimeNanoseconds: UInt32

    package init(
        extended: Bool, layout: ErofsInode.DataLayout, xattrInlineCount: UInt16, mode: UInt16, nlink: UInt32, size: UInt64, union: UInt32,
        ino: UInt32, uid: UInt32, gid: UInt32, mtime: UInt64, mtimeNanoseconds: UInt32
    ) {
        self.extended = extended
        self.layout = layout
        self.xattrInlineCount = xattrInlineCount
        self.mode = mode
        self.nlink = nlink
        self.size = size
        self.union = union
        self.ino = ino
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.mtimeNanoseconds = mtimeNanoseconds
    }

    package func encode(into out: inout LittleEndianWriter, at offset: Int) {
        out.u16(UInt16(layout.rawValue) << 1 | (extended ? 1 : 0), at: offset)
        out.u16(xattrInlineCount, at: offset + 2)
        out.u16(mode, at: offset + 4)
        if extended {
            out.u64(size, at: offset + 8)
            out.u32(union, at: offset + 16)
            out.u32(ino, at: offset + 20)
            out.u32(uid, at: offset + 24)
            out.u32(gid, at: offset + 28)
            out.u64(mtime, at: offset + 32)
            out.u32(mtimeNanoseconds, at: offset + 40)
            out.u32(nlink, at: offset + 44)
            out.u64(0, at: offset + 56)
        } else {
            out.u16(UInt16(truncatingIfNeeded: nlink), at: offset + 6)
            out.u32(UInt32(truncatingIfNeeded: size), at: offset + 8)
            out.u32(union, at: offset + 16)
            out.u32(ino, at: offset + 20)
            out.u16(UInt16(truncatingIfNeeded: uid), at: offset + 24)
            out.u16(UInt16(truncatingIfNeeded: gid), at: offset + 26)
            out.u32(0, at: offset + 28)
        }
    }
}

extension ErofsXattr {
    /// Splits a full attribute name into a short-prefix index and the suffix stored on disk; nil when no
    /// short prefix covers it (EROFS cannot store it without the long-prefix table).
    package static func split(_ name: String) -> (index: UInt8, suffix: [UInt8])? {
        // Longest prefix first: the ACL names are whole names under "system.".
        for index: UInt8 in [2, 3, 1, 4, 5, 6] {
            guard let prefix = shortPrefix(index), name.hasPrefix(prefix) else { continue }
            let suffix = Array(name.utf8.dropFirst(prefix.utf8.count))
            if index == 2 || index == 3 {
                guard suffix.isEmpty else { continue }
            }
            return (index, suffix)
        }
        return nil
    }

    /// The inline xattr area for `xattrs` (already split and sorted): a 12-byte header with no shared ids,
    /// then each entry padded to 4 bytes. Empty when there are none.
    package static func inlineArea(_ xattrs: [(index: UInt8, suffix: [UInt8], value: [UInt8])]) -> [UInt8] {
        guard !xattrs.isEmpty else { return [] }
        var out = LittleEndianWriter(count: 12)
        for entry in xattrs {
            let base = out.count
            out.u8(UInt8(entry.suffix.count), at: base)
            out.u8(entry.index, at: base + 1)
            out.u16(UInt16(entry.value.count), at: base + 2)
            out.append(entry.suffix)
            out.append(entry.value)
            out.align(to: 4)
        }
        return out.bytes
    }
}

extension ErofsDevice {
    /// `new_encode_dev`: the kernel's 32-bit device number, stored in `i_u` of device inodes.
    package static func encode(major: UInt32, minor: UInt32) -> UInt32 {
        (minor & 0xFF) | (major & 0xFFF) << 8 | (minor & ~0xFF) << 12
    }
}

/// Namespace for device-number encoding.
package enum ErofsDevice {}
