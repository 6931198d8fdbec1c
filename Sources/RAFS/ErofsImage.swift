/// A RAFS v6 bootstrap (an uncompressed EROFS image) opened for reading: superblock, device table, RAFS blob
/// table, the directory tree, inode attributes, xattrs, and file data. Metadata-layout files (plain,
/// inline, tail-packed) are read from the bootstrap; chunk-based files are mapped to (device, block) and read
/// through an `ErofsDeviceReader` per device (a materialized blob or a `RafsBlob`).
///
/// Everything input-derived is bounds-checked: corrupt or hostile images produce `ImageFormatError`,
/// never a trap, an unbounded allocation or an endless walk.
public final class ErofsImage: Sendable {
    public let file: ImageFile
    public let superBlock: ErofsSuperBlock
    /// Present when the image is a RAFS v6 bootstrap (compat feature `rafsV6`).
    public let rafs: RafsSuperBlockExtension?
    /// The EROFS device table (`extra_devices` slots); index `i` is device `i + 1`.
    public let devices: [ErofsDeviceSlot]
    /// The RAFS blob table; blob `i` is device `i + 1`.
    public let blobs: [RafsBlobEntry]
    let longPrefixes: [ErofsXattr.LongPrefix]

    /// Deepest directory nesting the walk and lookups follow (PATH_MAX / 2 one-character components, far
    /// beyond any real image, small enough to stop a hostile chain quickly).
    public static let maximumDepth = 2048
    /// Largest directory, symlink or xattr area the reader loads whole.
    public static let maximumMetadataRead: UInt64 = 64 << 20
    /// PATH_MAX: longest symlink target.
    public static let maximumSymlinkLength: UInt64 = 4096

    public convenience init(path: String) throws(ImageFormatError) {
        try self.init(file: try ImageFile(path: path))
    }

    public init(file: ImageFile) throws(ImageFormatError) {
        self.file = file
        let needed = ErofsSuperBlock.offset + UInt64(ErofsSuperBlock.size)
        guard file.size >= needed else {
            throw .truncated(what: "bootstrap \(file.path)", needed: needed, available: file.size)
        }
        let sb = try ErofsSuperBlock(
            decoding: try file.bytes(
                at: ErofsSuperBlock.offset, count: ErofsSuperBlock.size,
                what: "EROFS superblock"))
        superBlock = sb

        var slots: [ErofsDeviceSlot] = []
        if sb.extraDevices > 0 {
            let raw = try file.bytes(
                at: sb.deviceTableOffset, count: Int(sb.extraDevices) * ErofsDeviceSlot.size,
                what: "device table")
            for index in 0..<Int(sb.extraDevices) {
                slots.append(try ErofsDeviceSlot(decoding: raw, at: index * ErofsDeviceSlot.size))
            }
        }
        devices = slots

        if sb.compatFeatures.contains(.rafsV6) {
            let ext = try RafsSuperBlockExtension(
                decoding: try file.bytes(
                    at: RafsSuperBlockExtension.offset, count: RafsSuperBlockExtension.size, what: "RAFS extended superblock"))
            rafs = ext
            blobs = try Self.readBlobTable(file: file, ext: ext)
            try Self.checkDevicesAreBlobs(devices: slots, blobs: blobs)
        } else {
            rafs = nil
            blobs = []
        }
        longPrefixes = try Self.readLongPrefixes(file: file, superBlock: sb)

        let root = try inode(nid: UInt64(sb.rootNid))
        guard root.fileType == .directory else {
            throw .badInode(nid: root.nid, reason: "the root inode is a \(root.fileType.rawValue), not a directory")
        }
    }

    /// Device `i + 1` must be blob `i`, by name. The blob table is what pulls verify and serve; the device table
    /// is what the kernel opens: in fscache mode it asks for each device's data by the slot's tag. A slot
    /// naming a blob other than its table entry (say, another image's) would have the kernel read that blob
    /// through this image's chunk indexes.
    static func checkDevicesAreBlobs(devices: [ErofsDeviceSlot], blobs: [RafsBlobEntry]) throws(ImageFormatError) {
        guard devices.count == blobs.count else {
            throw .badBlobTable(reason: "the device table has \(devices.count) slots for \(blobs.count) blobs; each blob needs its own")
        }
        for (index, (device, blob)) in zip(devices, blobs).enumerated() where device.tagString != blob.blobID {
            throw .badBlobTable(
                reason: "device \(index + 1) is tagged \(device.tagString.debugDescription) but blob \(index) is \(blob.blobID)")
        }
    }

    private static func readBlobTable(file: ImageFile, ext: RafsSuperBlockExtension) throws(ImageFormatError) -> [RafsBlobEntry] {
        let size = Int(ext.blobTableSize)
        guard size % RafsBlobEntry.size == 0 else {
            throw .badBlobTable(reason: "size \(size) is not a multiple of \(RafsBlobEntry.size)")
        }
        // The chunk index keeps blob index + 1 in one byte.
        let count = size / RafsBlobEntry.size
        guard count <= 255 else { throw .badBlobTable(reason: "\(count) blobs, at most 255 can be addressed") }
        guard count > 0 else { return [] }
        let raw = try file.bytes(at: ext.blobTableOffset, count: size, what: "RAFS blob table")
        var entries: [RafsBlobEntry] = []
        var chunks: UInt64 = 0
        for index in 0..<count {
            let entry = try RafsBlobEntry(decoding: raw, at: index * RafsBlobEntry.size)
            guard entry.blobIndex == UInt32(index) else {
                throw .badBlobTable(reason: "entry \(index) says it is blob \(entry.blobIndex)")
            }
            try checkLimits(of: entry)
            // One blob is one backing file, registered once: two entries naming it would be two devices sharing
            // one file under two descriptions.
            if let first = entries.firstIndex(where: { $0.blobID == entry.blobID }) {
                throw .badBlobTable(reason: "blobs \(first) and \(index) are both \(entry.blobID)")
            }
            chunks += UInt64(entry.chunkCount)
            guard chunks <= ImageLimits.chunksPerImage else {
                throw .absurdSize(what: "chunks of the image's blobs", size: chunks, limit: ImageLimits.chunksPerImage)
            }
            entries.append(entry)
        }
        return entries
    }

    /// Refuses a blob entry whose sizes are beyond `ImageLimits`, before anything is sized by them.
    private static func checkLimits(of entry: RafsBlobEntry) throws(ImageFormatError) {
        let name = entry.blobID
        guard entry.uncompressedSize <= ImageLimits.blobBytes else {
            throw .absurdSize(what: "blob \(name) uncompressed size", size: entry.uncompressedSize, limit: ImageLimits.blobBytes)
        }
        guard entry.compressedSize <= ImageLimits.blobBytes else {
            throw .absurdSize(what: "blob \(name) compressed size", size: entry.compressedSize, limit: ImageLimits.blobBytes)
        }
        guard ImageLimits.chunkSizes.contains(entry.chunkSize), entry.chunkSize & (entry.chunkSize - 1) == 0 else {
            throw .badBlobTable(
                reason:
                    "blob \(name) has chunk size \(entry.chunkSize); a power of two from \(ImageLimits.chunkSizes.lowerBound) to \(ImageLimits.chunkSizes.upperBound) is needed"
            )
        }
        let metaLimit = UInt64(ImageLimits.metaBytes)
        guard entry.metaCompressedSize <= metaLimit, entry.metaUncompressedSize <= metaLimit else {
            throw .absurdSize(
                what: "blob \(name) meta", size: max(entry.metaCompressedSize, entry.metaUncompressedSize), limit: metaLimit)
        }
    }

    /// Long xattr name prefixes, from the metadata area (a packed inode is only used with the fragments
    /// feature, which this reader rejects).
    private static func readLongPrefixes(
        file: ImageFile, superBlock sb: ErofsSuperBlock
    ) throws(ImageFormatError)
        -> [ErofsXattr.LongPrefix]
    {
        guard sb.incompatFeatures.contains(.xattrPrefixes), sb.xattrPrefixCount > 0 else { return [] }
        var position = UInt64(sb.xattrPrefixStart) * 4
        var prefixes: [ErofsXattr.LongPrefix] = []
        for _ in 0..<sb.xattrPrefixCount {
            let length = Int(try file.bytes(at: position, count: 2, what: "xattr prefix length").u16(0))
            guard length >= 1, length <= ErofsDirent.maximumNameLength + 1 else {
                throw .badXattr(nid: 0, reason: "long prefix at \(position) has length \(length)")
            }
            let body = try file.read(at: position + 2, count: length, what: "xattr long prefix")
            prefixes.append(ErofsXattr.LongPrefix(baseIndex: body[0], infix: Array(body[1...])))
            position += UInt64((2 + length + 3) & ~3)
        }
        return prefixes
    }

    // MARK: Inodes

    public var rootNid: UInt64 { UInt64(superBlock.rootNid) }

    /// Decodes inode `nid`, checking that it and its inline xattrs lie inside the bootstrap.
    public func inode(nid: UInt64) throws(ImageFormatError) -> ErofsInode {
        guard let offset = superBlock.inodeOffset(nid: nid), offset < file.size else {
            throw .badInode(nid: nid, reason: "its offset lies beyond the end of the bootstrap (\(file.size) bytes)")
        }
        let compact = try file.bytes(at: offset, count: ErofsInode.compactSize, what: "inode nid \(nid)")
        let raw =
            try compact.u16(0) & 0x1 == 1
            ? file.bytes(at: offset, count: ErofsInode.extendedSize, what: "extended inode nid \(nid)")
            : compact
        let inode = try ErofsInode(nid: nid, offset: offset, decoding: raw, superBlock: superBlock)
        guard inode.trailerOffset <= file.size else {
            throw .badInode(nid: nid, reason: "its inline xattrs (\(inode.xattrSize) bytes) run past the end of the bootstrap")
        }
        guard inode.fileType != .unknown else {
            throw .badInode(nid: nid, reason: "mode 0o\(String(inode.mode, radix: 8)) has no valid file type")
        }
        return inode
    }

    // MARK: Data

    /// Bytes `[offset, offset + count)` of an inode's data (clamped to its size), from the bootstrap or
    /// through `devices` for chunks on other devices.
    public func readData(
        of inode: ErofsInode, offset: UInt64 = 0, count: Int? = nil,
        devices readers: [UInt16: any ErofsDeviceReader] = [:]
    ) throws(ImageFormatError) -> [UInt8] {
        guard offset < inode.size else { return [] }
        let available = inode.size - offset
        let wanted = count.map { UInt64(max(0, $0)) } ?? available
        let length = min(wanted, available)
        guard length <= ImageFile.maximumRead else {
            throw .absurdSize(what: "data of nid \(inode.nid)", size: length, limit: ImageFile.maximumRead)
        }
        let end = offset + length
        let bs = superBlock.blockSize
        switch inode.dataLayout {
        case .flatPlain?, .flatInline?:
            let blocks = (inode.size + bs - 1) / bs
            let inlineTail = inode.dataLayout == .flatInline
            let lastBlockStart = (inlineTail ? blocks - 1 : blocks) * bs
            var out: [UInt8] = []
            out.reserveCapacity(Int(length))
            if offset < lastBlockStart {
                let blockEnd = min(end, lastBlockStart)
                let base = UInt64(inode.union) << UInt64(superBlock.blockSizeBits)
                out += try file.read(at: base + offset, count: Int(blockEnd - offset), what: "data of nid \(inode.nid)")
            }
            if inlineTail && end > lastBlockStart {
                let tailSize = inode.size - lastBlockStart
                guard inode.trailerOffset % bs + tailSize <= bs else {
                    throw .badInode(nid: inode.nid, reason: "inline tail of \(tailSize) bytes crosses a block boundary")
                }
                let from = max(offset, lastBlockStart)
                out += try file.read(
                    at: inode.trailerOffset + (from - lastBlockStart), count: Int(end - from),
                    what: "inline data of nid \(inode.nid)")
            }
            return out
        case .chunkBased?:
            var out: [UInt8] = []
            out.reserveCapacity(Int(length))
            for mapping in try chunkMappings(of: inode) {
                let chunkEnd = mapping.fileOffset + mapping.length
                guard chunkEnd > offset, mapping.fileOffset < end else { continue }
                let from = max(offset, mapping.fileOffset)
                let to = min(end, chunkEnd)
                guard let deviceOffset = mapping.deviceOffset else {
                    out += [UInt8](repeating: 0, count: Int(to - from))
                    continue
                }
                let at = deviceOffset + (from - mapping.fileOffset)
                if mapping.device == 0 {
                    out += try file.read(at: at, count: Int(to - from), what: "chunk \(mapping.chunk) of nid \(inode.nid)")
                } else {
                    guard let reader = readers[mapping.device] else { throw .deviceUnavailable(device: mapping.device) }
                    let bytes = try reader.readDevice(at: at, count: Int(to - from))
                    guard bytes.count == Int(to - from) else {
                        throw .truncated(
                            what: "device \(mapping.device) data for nid \(inode.nid)",
                            needed: at + (to - from), available: at + UInt64(bytes.count))
                    }
                    out += bytes
                }
            }
            return out
        default:
            throw .unsupportedDataLayout(nid: inode.nid, layout: inode.layoutBits)
        }
    }

    /// The chunk table of a chunk-based inode: where each chunk of the file lives.
    public func chunkMappings(of inode: ErofsInode) throws(ImageFormatError) -> [ErofsChunkMapping] {
        guard inode.dataLayout == .chunkBased else {
            throw .unsupportedDataLayout(nid: inode.nid, layout: inode.layoutBits)
        }
        let format = UInt16(truncatingIfNeeded: inode.union)
        guard format & ~(ErofsChunkIndex.blockBitsMask | ErofsChunkIndex.indexesFlag) == 0 else {
            throw .badInode(nid: inode.nid, reason: "chunk format 0x\(String(format, radix: 16)) has unknown bits")
        }
        let chunkBits = UInt64(superBlock.blockSizeBits) + UInt64(format & ErofsChunkIndex.blockBitsMask)
        guard chunkBits <= 40 else {
            throw .badInode(nid: inode.nid, reason: "chunk size 2^\(chunkBits) is absurd")
        }
        let chunkSize: UInt64 = 1 << chunkBits
        let count = inode.size == 0 ? 0 : (inode.size - 1) / chunkSize + 1
        let hasIndexes = format & ErofsChunkIndex.indexesFlag != 0
        let unit = UInt64(hasIndexes ? ErofsChunkIndex.size : ErofsChunkIndex.blockMapEntrySize)
        let base = (inode.trailerOffset + unit - 1) / unit * unit
        // The table must fit in the bootstrap; checking first keeps a hostile i_size from allocating.
        guard count <= (file.size / unit), base + count * unit <= file.size else {
            throw .badChunkIndex(
                nid: inode.nid, chunk: count,
                reason: "\(count) chunk entries from offset \(base) do not fit in the bootstrap")
        }
        guard count > 0 else { return [] }
        let raw = try file.bytes(at: base, count: Int(count * unit), what: "chunk indexes of nid \(inode.nid)")
        // The kernel keeps only as many device bits as extra devices need.
        var mask: UInt16 = 1
        while mask < superBlock.extraDevices + 1 { mask <<= 1 }
        mask -= 1
        var mappings: [ErofsChunkMapping] = []
        mappings.reserveCapacity(Int(count))
        for chunk in 0..<count {
            let fileOffset = chunk * chunkSize
            let length = min(chunkSize, inode.size - fileOffset)
            var device: UInt16 = 0
            var index: ErofsChunkIndex?
            let address: UInt32
            if hasIndexes {
                let entry = try ErofsChunkIndex(decoding: raw, at: Int(chunk * unit))
                device = entry.deviceID & mask
                address = entry.blockAddress
                index = entry
            } else {
                address = try raw.u32(Int(chunk * unit))
            }
            var mapping = ErofsChunkMapping(
                chunk: chunk, fileOffset: fileOffset, length: length, device: device,
                blockAddress: nil, deviceOffset: nil, index: index)
            if address != ErofsChunkIndex.nullAddress {
                guard Int(device) <= devices.count else {
                    throw .badChunkIndex(
                        nid: inode.nid, chunk: chunk,
                        reason: "device \(device) is not in the device table (\(devices.count) extra devices)")
                }
                let deviceOffset = UInt64(address) << UInt64(superBlock.blockSizeBits)
                let deviceSize =
                    device == 0
                    ? file.size : UInt64(devices[Int(device) - 1].blocks) << UInt64(superBlock.blockSizeBits)
                guard deviceOffset + length <= deviceSize else {
                    throw .badChunkIndex(
                        nid: inode.nid, chunk: chunk,
                        reason: "block \(address) + \(length) bytes lies past the end of device \(device) (\(deviceSize) bytes)")
                }
                mapping.blockAddress = address
                mapping.deviceOffset = deviceOffset
            }
            mappings.append(mapping)
        }
        return mappings
    }

    // MARK: Directories

    /// The entries of directory `inode`, `.` and `..` included, in on-disk (sorted) order.
    public func directoryEntries(of inode: ErofsInode) throws(ImageFormatError) -> [ErofsDirectoryEntry] {
        guard inode.fileType == .directory else {
            throw .badDirectory(nid: inode.nid, reason: "it is a \(inode.fileType.rawValue)")
        }
        guard inode.size <= Self.maximumMetadataRead else {
            throw .absurdSize(what: "directory nid \(inode.nid)", size: inode.size, limit: Self.maximumMetadataRead)
        }
        let data = try readData(of: inode)
        let bs = Int(superBlock.blockSize)
        var entries: [ErofsDirectoryEntry] = []
        var blockStart = 0
        while blockStart < data.count {
            let blockLength = min(bs, data.count - blockStart)
            let block = LittleEndianBytes(
                Array(data[blockStart..<blockStart + blockLength]),
                what: "directory block of nid \(inode.nid)")
            let first = try ErofsDirent(decoding: block, at: 0)
            let firstNameOffset = Int(first.nameOffset)
            guard firstNameOffset >= ErofsDirent.size, firstNameOffset < blockLength,
                firstNameOffset % ErofsDirent.size == 0
            else {
                throw .badDirectory(
                    nid: inode.nid, reason: "first name offset \(firstNameOffset) is invalid in a block of \(blockLength) bytes")
            }
            let count = firstNameOffset / ErofsDirent.size
            for index in 0..<count {
                let dirent = index == 0 ? first : try ErofsDirent(decoding: block, at: index * ErofsDirent.size)
                let start = Int(dirent.nameOffset)
                var stop: Int
                if index + 1 < count {
                    stop = Int(try block.u16((index + 1) * ErofsDirent.size + 8))
                } else {
                    stop = start
                    while stop < blockLength, block.bytes[stop] != 0 { stop += 1 }
                }
                guard start >= firstNameOffset, stop > start, stop <= blockLength,
                    stop - start <= ErofsDirent.maximumNameLength
                else {
                    throw .badDirectory(nid: inode.nid, reason: "entry \(index) has name bytes \(start)..<\(stop) outside its block")
                }
                let name = String(decoding: block.bytes[start..<stop], as: UTF8.self)
                entries.append(
                    ErofsDirectoryEntry(
                        name: name, nid: dirent.nid,
                        fileType: ErofsFileType(direntType: dirent.fileType)))
            }
            blockStart += blockLength
        }
        return entries
    }

    /// Resolves an absolute path (no symlinks followed, like lstat) to its inode.
    public func lookup(_ path: String) throws(ImageFormatError) -> ErofsInode {
        var current = try inode(nid: rootNid)
        let components = path.split(separator: "/").filter { $0 != "." }
        guard components.count <= Self.maximumDepth else { throw .tooDeep(path: path, limit: Self.maximumDepth) }
        for component in components {
            guard current.fileType == .directory else { throw .notADirectory(path: path) }
            guard let entry = try directoryEntries(of: current).first(where: { $0.name == component }) else {
                throw .notFound(path: path)
            }
            current = try inode(nid: entry.nid)
        }
        return current
    }

    // MARK: Attributes

    /// The extended attributes of `inode`, shared ones first, names with their full prefix.
    public func xattrs(of inode: ErofsInode) throws(ImageFormatError) -> [ErofsXattr] {
        guard inode.xattrSize > 0 else { return [] }
        let body = try file.bytes(
            at: inode.offset + UInt64(inode.inodeSize), count: inode.xattrSize,
            what: "inline xattrs of nid \(inode.nid)")
        let shared = Int(try body.u8(4))
        var position = 12 + 4 * shared
        guard position <= body.count else {
            throw .badXattr(nid: inode.nid, reason: "\(shared) shared ids do not fit in \(body.count) bytes")
        }
        var result: [ErofsXattr] = []
        for index in 0..<shared {
            let id = UInt64(try body.u32(12 + 4 * index))
            let at = (UInt64(superBlock.xattrBlockAddress) << UInt64(superBlock.blockSizeBits)) + id * 4
            let header = try file.bytes(at: at, count: 4, what: "shared xattr \(id)")
            let nameLength = Int(try header.u8(0))
            let valueSize = Int(try header.u16(2))
            let whole = try file.bytes(at: at, count: 4 + nameLength + valueSize, what: "shared xattr \(id)")
            result.append(try decodeXattr(whole, at: 0, nid: inode.nid))
        }
        while position + 4 <= body.count {
            let nameLength = Int(try body.u8(position))
            let valueSize = Int(try body.u16(position + 2))
            let size = ErofsXattr.entrySize(nameLength: nameLength, valueSize: valueSize)
            guard position + 4 + nameLength + valueSize <= body.count else {
                throw .badXattr(nid: inode.nid, reason: "inline entry at \(position) runs past the xattr area")
            }
            result.append(try decodeXattr(body, at: position, nid: inode.nid))
            position += size
        }
        return result
    }

    private func decodeXattr(_ raw: LittleEndianBytes, at base: Int, nid: UInt64) throws(ImageFormatError) -> ErofsXattr {
        let nameLength = Int(try raw.u8(base))
        let index = try raw.u8(base + 1)
        let valueSize = Int(try raw.u16(base + 2))
        let suffix = try raw.slice(base + 4, nameLength)
        let value = try raw.slice(base + 4 + nameLength, valueSize)
        let prefix: String?
        if index & ErofsXattr.longPrefixFlag != 0 {
            let slot = Int(index & ~ErofsXattr.longPrefixFlag)
            prefix = slot < longPrefixes.count ? longPrefixes[slot].prefix : nil
        } else {
            prefix = ErofsXattr.shortPrefix(index)
        }
        guard let prefix else { throw .badXattr(nid: nid, reason: "unknown name index \(index)") }
        return ErofsXattr(name: prefix + String(decoding: suffix, as: UTF8.self), value: value)
    }

    /// A symlink's target (its data).
    public func symlinkTarget(of inode: ErofsInode) throws(ImageFormatError) -> String {
        guard inode.size <= Self.maximumSymlinkLength else {
            throw .absurdSize(what: "symlink nid \(inode.nid)", size: inode.size, limit: Self.maximumSymlinkLength)
        }
        return String(decoding: try readData(of: inode), as: UTF8.self)
    }

    /// The listing entry for `inode` at `path`.
    public func entry(for inode: ErofsInode, path: String) throws(ImageFormatError) -> ErofsEntry {
        let type = inode.fileType
        return ErofsEntry(
            path: path, nid: inode.nid, type: type, mode: inode.mode, uid: inode.uid, gid: inode.gid,
            size: inode.size, mtime: inode.mtime, mtimeNanoseconds: inode.mtimeNanoseconds, nlink: inode.nlink,
            rdev: type == .characterDevice || type == .blockDevice ? inode.union : 0,
            symlinkTarget: type == .symlink ? try symlinkTarget(of: inode) : nil,
            xattrs: try xattrs(of: inode), dataLayout: inode.layoutBits
        )
    }

    /// lstat of an absolute path.
    public func stat(_ path: String) throws(ImageFormatError) -> ErofsEntry {
        try entry(for: try lookup(path), path: path.isEmpty ? "/" : path)
    }

    // MARK: Walk

    /// Every entry of the tree, depth first in directory order, the root first. Refuses cycles (a directory
    /// seen twice) and trees deeper than `maximumDepth`.
    public func walk(_ visit: (ErofsEntry) throws(ImageFormatError) -> Void) throws(ImageFormatError) {
        let root = try inode(nid: rootNid)
        var visitedDirectories: Set<UInt64> = [root.nid]
        try visit(try entry(for: root, path: "/"))
        try walkDirectory(root, path: "", depth: 1, visited: &visitedDirectories, visit)
    }

    private func walkDirectory(
        _ directory: ErofsInode, path: String, depth: Int, visited: inout Set<UInt64>,
        _ visit: (ErofsEntry) throws(ImageFormatError) -> Void
    ) throws(ImageFormatError) {
        guard depth <= Self.maximumDepth else { throw .tooDeep(path: path, limit: Self.maximumDepth) }
        for child in try directoryEntries(of: directory) where child.name != "." && child.name != ".." {
            guard !child.name.contains("/") else {
                throw .badDirectory(nid: directory.nid, reason: "entry name \"\(child.name)\" contains a slash")
            }
            let childPath = path + "/" + child.name
            let node = try inode(nid: child.nid)
            try visit(try entry(for: node, path: childPath))
            if node.fileType == .directory {
                // EROFS has no directory hard links: a second way into a directory is a loop or corruption.
                guard visited.insert(node.nid).inserted else { throw .directoryLoop(path: childPath, nid: node.nid) }
                try walkDirectory(node, path: childPath, depth: depth + 1, visited: &visited, visit)
            }
        }
    }

    /// The whole listing.
    public func entries() throws(ImageFormatError) -> [ErofsEntry] {
        var all: [ErofsEntry] = []
        try walk { all.append($0) }
        return all
    }

    /// A regular file's content, reading chunks on other devices through `devices`.
    public func readFile(_ path: String, devices readers: [UInt16: any ErofsDeviceReader] = [:]) throws(ImageFormatError) -> [UInt8] {
        let node = try lookup(path)
        guard node.fileType == .regular else { throw .notARegularFile(path: path) }
        return try readData(of: node, devices: readers)
    }

    // MARK: RAFS

    /// The RAFS chunk table (digests and both offsets of every chunk), empty for plain EROFS images.
    public func rafsChunkTable() throws(ImageFormatError) -> [RafsChunkTableEntry] {
        guard let rafs, rafs.chunkTableSize > 0 else { return [] }
        guard rafs.chunkTableSize % UInt64(RafsChunkTableEntry.size) == 0 else {
            throw .badBlobTable(reason: "chunk table size \(rafs.chunkTableSize) is not a multiple of \(RafsChunkTableEntry.size)")
        }
        let rows = rafs.chunkTableSize / UInt64(RafsChunkTableEntry.size)
        guard rows <= ImageLimits.chunksPerImage else {
            throw .absurdSize(what: "RAFS chunk table rows", size: rows, limit: ImageLimits.chunksPerImage)
        }
        guard rafs.chunkTableSize <= file.size else {
            throw .outOfBounds(what: "RAFS chunk table", offset: rafs.chunkTableOffset, length: rafs.chunkTableSize, size: file.size)
        }
        let raw = try file.bytes(at: rafs.chunkTableOffset, count: Int(rafs.chunkTableSize), what: "RAFS chunk table")
        return try (0..<Int(rafs.chunkTableSize) / RafsChunkTableEntry.size).map { (index) throws(ImageFormatError) in
            try RafsChunkTableEntry(decoding: raw, at: index * RafsChunkTableEntry.size)
        }
    }
}
