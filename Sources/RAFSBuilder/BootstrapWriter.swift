import LinuxKernel
import Logging
import RAFS

/// Lays out the merged tree as a RAFS v6 bootstrap (an EROFS image with 4 KiB blocks):
///
///     0     reserved | EROFS superblock @1024 | RAFS extended superblock @1152 | device table @1408
///     4096  blob table (one 256-byte entry per blob, in device order)
///     next  inodes (meta_blkaddr 0: nid = offset / 32), breadth first from the root, each followed by its
///           inline xattrs and either its inline tail (directories, symlinks) or its chunk indexes (files)
///     next  whole blocks of directories and symlinks too big to inline
///     next  RAFS chunk table (80 bytes per chunk: digests and offsets for tools; the kernel ignores it)
///
/// Compact inodes are used when the inode fits one and its mtime equals the superblock's build time (the
/// most common mtime in the tree), extended ones otherwise.
struct BootstrapWriter {
    let options: BuildOptions
    let logger: Logger?

    static let blockSize = 4096
    static let deviceTableOffset = 1408

    /// Everything placed for one inode.
    private struct Placement {
        var inode: TreeInode
        var extended: Bool
        var layout: ErofsInode.DataLayout
        var xattrArea: [UInt8]
        var size: UInt64
        var offset: Int = 0
        /// Directory blocks or symlink bytes: the full blocks go to the data area, the tail inline.
        var data: [UInt8] = []
        var entries: [(name: [UInt8], inode: TreeInode)] = []
        var inlineTail = 0
        var dataBlocks = 0
        var firstBlock: UInt32 = 0
        var chunkIndexBytes = 0

        var inodeSize: Int { extended ? ErofsInode.extendedSize : ErofsInode.compactSize }
    }

    /// Writes the bootstrap bytes. `blobs` are in table order; `tableIndex` maps builder blob ordinals to it.
    func encode(
        root: TreeInode, blobs: [(summary: BlobSummary, writer: BlobWriter)], tableIndex: [Int: UInt32]
    ) throws(BuildError) -> [UInt8] {
        let inodes = order(root)
        let buildTime = Self.mostCommonTime(inodes)
        var placements: [Placement] = []
        placements.reserveCapacity(inodes.count)
        var anyXattr = false
        for inode in inodes {
            let placement = try plan(inode, buildTime: buildTime)
            anyXattr = anyXattr || !placement.xattrArea.isEmpty
            placements.append(placement)
        }

        // Inodes, in order, with the block-crossing rules the kernel needs for inline data.
        // The chunk index keeps blob index + 1 in one byte.
        guard blobs.count <= 255 else { throw .formatLimit(reason: "\(blobs.count) blobs, at most 255 can be addressed") }
        let blobTableOffset = Self.align(Self.deviceTableOffset + blobs.count * ErofsDeviceSlot.size, Self.blockSize)
        let blobTableSize = blobs.count * RafsBlobEntry.size
        // The prefetch table follows the blob table (nydus's place for it): one u32 nid per listed path.
        let prefetched = blobs.isEmpty ? [] : try prefetchInodes(root)
        let prefetchTableOffset = blobTableOffset + blobTableSize
        let prefetchTableSize = prefetched.count * 4
        var cursor = Self.align(prefetchTableOffset + prefetchTableSize, Self.blockSize)
        for index in placements.indices {
            var placement = placements[index]
            let head = placement.inodeSize + placement.xattrArea.count
            let record: Int
            if placement.layout == .chunkBased {
                record = Self.align(head, ErofsChunkIndex.size) + placement.chunkIndexBytes
            } else {
                record = head + placement.inlineTail
            }
            cursor = Self.align(cursor, ErofsInode.slotSize)
            let inBlock = cursor % Self.blockSize
            let mustFit = placement.layout == .flatInline ? record : head
            if inBlock + mustFit > Self.blockSize && mustFit <= Self.blockSize { cursor = Self.align(cursor, Self.blockSize) }
            placement.offset = cursor
            placement.inode.nid = UInt64(cursor / ErofsInode.slotSize)
            cursor += record
            placements[index] = placement
        }
        guard placements[0].inode.nid <= UInt64(UInt16.max) else { throw .formatLimit(reason: "the root nid does not fit 16 bits") }

        // Whole data blocks after the inodes.
        var block = UInt32(Self.align(cursor, Self.blockSize) / Self.blockSize)
        for index in placements.indices where placements[index].dataBlocks > 0 {
            placements[index].firstBlock = block
            block += UInt32(placements[index].dataBlocks)
        }
        let chunkTableOffset = Int(block) * Self.blockSize
        let chunkCount = blobs.reduce(0) { $0 + $1.writer.chunkCount }
        let chunkTableSize = chunkCount * RafsChunkTableEntry.size
        let total = Self.align(chunkTableOffset + chunkTableSize, Self.blockSize)
        guard total / Self.blockSize <= Int(UInt32.max) else { throw .formatLimit(reason: "the bootstrap exceeds 2^32 blocks") }

        // Like nydus, `blocks` counts the blobs' blocks (its reader refuses other values when there is no
        // blob); the kernel does not use it to bound bootstrap reads.
        let deviceBlocks64 = blobs.reduce(UInt64(0)) { $0 + $1.summary.uncompressedSize / UInt64(Self.blockSize) }
        guard deviceBlocks64 <= UInt64(UInt32.max) else { throw .formatLimit(reason: "the blobs exceed 2^32 blocks") }
        let deviceBlocks = UInt32(deviceBlocks64)
        var out = LittleEndianWriter(count: total)
        var flags: RafsSuperBlockExtension.Flags = [.hashSHA256, options.compression.superBlockFlag, .explicitUIDGID, .inlinedChunkDigest]
        if anyXattr { flags.insert(.hasXattr) }
        let superBlock = ErofsSuperBlock(
            compatFeatures: .rafsV6, incompatFeatures: [.chunkedFile, .deviceTable], rootNid: UInt16(placements[0].inode.nid),
            inodeCount: UInt64(placements.count), buildTime: buildTime.seconds, buildTimeNanoseconds: buildTime.nanoseconds,
            blocks: deviceBlocks, metaBlockAddress: 0, extraDevices: UInt16(blobs.count),
            deviceTableSlotOffset: UInt16(Self.deviceTableOffset / ErofsDeviceSlot.size))
        out.raw(superBlock.encoded(), at: Int(ErofsSuperBlock.offset))
        out.raw(
            RafsEncoding.superBlockExtension(
                flags: flags, blobTableOffset: UInt64(blobTableOffset), blobTableSize: UInt32(blobTableSize),
                chunkSize: options.chunkSize, chunkTableOffset: UInt64(chunkTableOffset), chunkTableSize: UInt64(chunkTableSize),
                prefetchTableOffset: prefetched.isEmpty ? 0 : UInt64(prefetchTableOffset), prefetchTableSize: UInt32(prefetchTableSize)),
            at: Int(RafsSuperBlockExtension.offset))
        for (index, inode) in prefetched.enumerated() {
            guard inode.nid <= UInt64(UInt32.max) else { throw .formatLimit(reason: "a prefetched inode's nid does not fit 32 bits") }
            out.u32(UInt32(inode.nid), at: prefetchTableOffset + index * 4)
        }
        for (index, blob) in blobs.enumerated() {
            let blocks = blob.summary.uncompressedSize / UInt64(Self.blockSize)
            out.raw(
                ErofsDeviceSlot.encoded(tag: blob.summary.blobID, blocks: UInt32(blocks)),
                at: Self.deviceTableOffset + index * ErofsDeviceSlot.size)
            out.raw(
                RafsEncoding.blobEntry(blob.summary, index: UInt32(index), chunkSize: options.chunkSize),
                at: blobTableOffset + index * RafsBlobEntry.size)
        }

        let chunkBits = UInt16(options.chunkSize.trailingZeroBitCount - 12)
        for placement in placements {
            try write(placement, chunkBits: chunkBits, tableIndex: tableIndex, into: &out)
        }

        var row = chunkTableOffset
        for (index, blob) in blobs.enumerated() {
            let writer = blob.writer
            for chunk in writer.chunks {
                RafsEncoding.chunkTableEntry(
                    digest: writer.digests[Int(chunk.index)], blobIndex: UInt32(index), chunk: chunk,
                    fileOffset: writer.fileOffsets[Int(chunk.index)], into: &out, at: row)
                row += RafsChunkTableEntry.size
            }
        }
        return out.bytes
    }

    /// The inodes of `options.prefetchPaths`, each once, in the order given.
    private func prefetchInodes(_ root: TreeInode) throws(BuildError) -> [TreeInode] {
        var found: [TreeInode] = []
        for path in options.prefetchPaths {
            var inode = root
            for name in path.split(separator: "/") where name != "." {
                guard inode.type == .directory, let entry = inode.children[String(name)] else {
                    throw .invalidOptions(reason: "prefetch path \(path) is not in the image")
                }
                inode = entry.inode
            }
            if !found.contains(where: { $0 === inode }) { found.append(inode) }
        }
        return found
    }

    /// Breadth-first order from the root, entries sorted by name bytes; hard-linked inodes appear once.
    /// Sets each inode's link count.
    private func order(_ root: TreeInode) -> [TreeInode] {
        var result: [TreeInode] = [root]
        root.placed = true
        root.links = 2
        var next = 0
        while next < result.count {
            let directory = result[next]
            next += 1
            guard directory.type == .directory else { continue }
            for (_, entry) in Self.sortedEntries(directory) {
                let child = entry
                if child.type == .directory {
                    directory.links += 1
                    child.links = 2
                    child.parent = directory
                } else {
                    child.links += 1
                }
                if !child.placed {
                    child.placed = true
                    result.append(child)
                }
            }
        }
        return result
    }

    static func sortedEntries(_ directory: TreeInode) -> [(name: [UInt8], inode: TreeInode)] {
        directory.children.map { (Array($0.key.utf8), $0.value.inode) }.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    /// The (seconds, nanoseconds) most inodes share, ties to the earliest: compact inodes take it.
    private static func mostCommonTime(_ inodes: [TreeInode]) -> (seconds: UInt64, nanoseconds: UInt32) {
        var counts: [UInt64: [UInt32: Int]] = [:]
        for inode in inodes { counts[inode.mtime, default: [:]][inode.mtimeNanoseconds, default: 0] += 1 }
        var best: (seconds: UInt64, nanoseconds: UInt32, count: Int) = (0, 0, 0)
        for (seconds, byNanos) in counts {
            for (nanos, count) in byNanos
            where count > best.count || (count == best.count && (seconds, nanos) < (best.seconds, best.nanoseconds)) {
                best = (seconds, nanos, count)
            }
        }
        return (best.seconds, best.nanoseconds)
    }

    static func align(_ value: Int, _ alignment: Int) -> Int { (value + alignment - 1) / alignment * alignment }

    // MARK: Planning

    private func plan(_ inode: TreeInode, buildTime: (seconds: UInt64, nanoseconds: UInt32)) throws(BuildError) -> Placement {
        let xattrArea = try xattrArea(of: inode)
        var size: UInt64 = 0
        var layout = ErofsInode.DataLayout.flatPlain
        var entries: [(name: [UInt8], inode: TreeInode)] = []
        switch inode.type {
        case .directory:
            entries = Self.sortedEntries(inode)
            entries.append((Array(".".utf8), inode))
            entries.append((Array("..".utf8), inode.parent ?? inode))
            entries.sort { $0.name.lexicographicallyPrecedes($1.name) }
            size = UInt64(Self.directorySize(entries))
        case .symlink:
            size = UInt64(inode.target.count)
        case .regular:
            size = inode.size
            if size > 0 {
                layout = .chunkBased
                let expected = (size + UInt64(options.chunkSize) - 1) / UInt64(options.chunkSize)
                guard inode.chunks.count == Int(expected) else {
                    throw .formatLimit(reason: "a file of \(size) bytes has \(inode.chunks.count) chunks, expected \(expected)")
                }
            }
        default:
            break
        }
        let compact =
            inode.mtime == buildTime.seconds && inode.mtimeNanoseconds == buildTime.nanoseconds && size <= UInt64(UInt32.max)
            && inode.uid <= 0xFFFF && inode.gid <= 0xFFFF && inode.links <= 0xFFFF
        var placement = Placement(inode: inode, extended: !compact, layout: layout, xattrArea: xattrArea, size: size)
        placement.entries = entries
        if layout == .chunkBased {
            placement.chunkIndexBytes = inode.chunks.count * ErofsChunkIndex.size
        } else if size > 0 {
            let blocks = Int((size + UInt64(Self.blockSize) - 1) / UInt64(Self.blockSize))
            let tail = Int(size) - (blocks - 1) * Self.blockSize
            if tail < Self.blockSize && placement.inodeSize + xattrArea.count + tail <= Self.blockSize {
                placement.layout = .flatInline
                placement.inlineTail = tail
                placement.dataBlocks = blocks - 1
            } else {
                placement.dataBlocks = blocks
            }
        }
        return placement
    }

    /// The inline xattr area: names split into EROFS short prefixes, sorted; names no short prefix covers
    /// are skipped (logged), as mkfs.erofs does without long prefixes.
    private func xattrArea(of inode: TreeInode) throws(BuildError) -> [UInt8] {
        guard !inode.xattrs.isEmpty else { return [] }
        var entries: [(index: UInt8, suffix: [UInt8], value: [UInt8])] = []
        for (name, value) in inode.xattrs {
            guard let split = ErofsXattr.split(name), split.suffix.count <= 255, value.count <= Int(UInt16.max) else {
                logger?.warning("skipping an extended attribute EROFS cannot store", metadata: ["xattr.name": "\(name)"])
                continue
            }
            entries.append((split.index, split.suffix, value))
        }
        entries.sort { $0.index != $1.index ? $0.index < $1.index : $0.suffix.lexicographicallyPrecedes($1.suffix) }
        let area = ErofsXattr.inlineArea(entries)
        guard area.count <= 12 + 4 * (Int(UInt16.max) - 1) else {
            throw .formatLimit(reason: "extended attributes of one inode take \(area.count) bytes")
        }
        return area
    }

    /// Packs sorted entries into blocks: each block holds 12-byte records, then their names.
    private static func directoryBlocks(_ entries: [(name: [UInt8], inode: TreeInode)]) -> [Range<Int>] {
        var blocks: [Range<Int>] = []
        var start = 0
        var used = 0
        for (index, entry) in entries.enumerated() {
            let need = ErofsDirent.size + entry.name.count
            if used + need > blockSize {
                blocks.append(start..<index)
                start = index
                used = 0
            }
            used += need
        }
        blocks.append(start..<entries.count)
        return blocks
    }

    private static func directorySize(_ entries: [(name: [UInt8], inode: TreeInode)]) -> Int {
        let blocks = directoryBlocks(entries)
        let last = blocks[blocks.count - 1]
        let lastUsed = entries[last].reduce(0) { $0 + ErofsDirent.size + $1.name.count }
        return (blocks.count - 1) * blockSize + lastUsed
    }

    /// Directory content with the final nids.
    private static func directoryBytes(_ entries: [(name: [UInt8], inode: TreeInode)]) -> [UInt8] {
        let blocks = directoryBlocks(entries)
        var out = LittleEndianWriter(count: 0)
        for (number, range) in blocks.enumerated() {
            let base = number * blockSize
            var nameOffset = range.count * ErofsDirent.size
            for (slot, index) in range.enumerated() {
                let entry = entries[index]
                let record = base + slot * ErofsDirent.size
                out.u64(entry.inode.nid, at: record)
                out.u16(UInt16(nameOffset), at: record + 8)
                out.u8(entry.inode.type.direntType, at: record + 10)
                out.u8(0, at: record + 11)
                out.raw(entry.name, at: base + nameOffset)
                nameOffset += entry.name.count
            }
            if number < blocks.count - 1 { out.raw([], at: base, length: blockSize) }
        }
        return out.bytes
    }

    // MARK: Writing

    private func write(
        _ placement: Placement, chunkBits: UInt16, tableIndex: [Int: UInt32], into out: inout LittleEndianWriter
    ) throws(BuildError) {
        let inode = placement.inode
        var union: UInt32 = 0
        switch placement.layout {
        case .chunkBased: union = UInt32(ErofsChunkIndex.indexesFlag | chunkBits)
        default:
            if placement.dataBlocks > 0 { union = placement.firstBlock }
            if inode.type == .characterDevice || inode.type == .blockDevice { union = inode.rdev }
        }
        let record = ErofsInodeRecord(
            extended: placement.extended, layout: placement.layout,
            xattrInlineCount: placement.xattrArea.isEmpty ? 0 : UInt16((placement.xattrArea.count - 12) / 4 + 1),
            mode: inode.mode, nlink: inode.links, size: placement.size, union: union,
            ino: UInt32(truncatingIfNeeded: placement.offset / ErofsInode.slotSize), uid: inode.uid, gid: inode.gid,
            mtime: inode.mtime, mtimeNanoseconds: inode.mtimeNanoseconds)
        record.encode(into: &out, at: placement.offset)
        let trailer = placement.offset + placement.inodeSize
        out.raw(placement.xattrArea, at: trailer)
        let afterXattrs = trailer + placement.xattrArea.count

        if placement.layout == .chunkBased {
            var position = Self.align(afterXattrs, ErofsChunkIndex.size)
            for location in inode.chunks {
                guard let blob = tableIndex[location.blob] else {
                    throw .formatLimit(reason: "a chunk refers to blob \(location.blob), which was not written")
                }
                ErofsChunkIndex(
                    rafsBlobIndex: blob, chunkInfoIndex: location.index,
                    blockAddress: UInt32(location.uncompressedOffset / UInt64(Self.blockSize))
                ).encode(into: &out, at: position)
                position += ErofsChunkIndex.size
            }
            return
        }
        guard placement.size > 0 else { return }
        let data = inode.type == .directory ? Self.directoryBytes(placement.entries) : inode.target
        let blockBytes = placement.layout == .flatInline ? placement.dataBlocks * Self.blockSize : data.count
        if placement.dataBlocks > 0 {
            out.raw(data[0..<blockBytes], at: Int(placement.firstBlock) * Self.blockSize)
        }
        if placement.layout == .flatInline {
            out.raw(data[blockBytes...], at: afterXattrs)
        }
    }
}
