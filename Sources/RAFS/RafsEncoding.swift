/// Writing side of the RAFS v6 structures the reader decodes (`RafsSuperBlockExtension`, `RafsBlobEntry`,
/// `BlobChunkInfo` v1, `BlobMetaHeader`, `BlobTocEntry`, `RafsChunkTableEntry`). Offsets are the ones
/// documented on each reader type.
package enum RafsEncoding {
    /// The 256-byte extended superblock.
    package static func superBlockExtension(
        flags: RafsSuperBlockExtension.Flags, blobTableOffset: UInt64, blobTableSize: UInt32, chunkSize: UInt32,
        chunkTableOffset: UInt64, chunkTableSize: UInt64, prefetchTableOffset: UInt64 = 0, prefetchTableSize: UInt32 = 0
    ) -> [UInt8] {
        var out = LittleEndianWriter(count: RafsSuperBlockExtension.size)
        out.u64(flags.rawValue, at: 0)
        out.u64(blobTableOffset, at: 8)
        out.u32(blobTableSize, at: 16)
        out.u32(chunkSize, at: 20)
        out.u64(chunkTableOffset, at: 24)
        out.u64(chunkTableSize, at: 32)
        out.u64(prefetchTableOffset, at: 40)
        out.u32(prefetchTableSize, at: 48)
        return out.bytes
    }

    /// One 256-byte blob-table entry.
    package static func blobEntry(_ blob: BlobSummary, index: UInt32, chunkSize: UInt32) -> [UInt8] {
        var out = LittleEndianWriter(count: RafsBlobEntry.size)
        out.raw(Array(blob.blobID.utf8), at: 0, length: 64)
        out.u32(index, at: 64)
        out.u32(chunkSize, at: 68)
        out.u32(blob.chunkCount, at: 72)
        out.u32(blob.compression.rawValue, at: 76)
        out.u32(RafsBlobEntry.DigestAlgorithm.sha256.rawValue, at: 80)
        out.u32(blob.features.rawValue, at: 84)
        out.u64(blob.compressedSize, at: 88)
        out.u64(blob.uncompressedSize, at: 96)
        out.u32(blob.tocSize, at: 104)
        out.u32(blob.metaCompressor.rawValue, at: 108)
        out.u64(blob.metaOffset, at: 112)
        out.u64(blob.metaCompressedSize, at: 120)
        out.u64(blob.metaUncompressedSize, at: 128)
        out.raw(blob.tocDigest, at: 136, length: 32)
        return out.bytes
    }

    /// A v1 chunk-info entry (16 bytes): sizes are stored minus one, split 20 + 4 bits.
    package static func chunkInfoV1(_ chunk: BlobChunkInfo, into out: inout LittleEndianWriter, at offset: Int) {
        let uncompressedMinusOne = UInt64(chunk.uncompressedSize - 1)
        let compressedMinusOne = UInt64(chunk.compressedSize - 1)
        let uncomp =
            (chunk.uncompressedOffset & 0xFFF_FFFF_F000) | (uncompressedMinusOne & 0xF_FFFF) << 44
            | ((uncompressedMinusOne >> 20) & 0xF) << 8
        let comp =
            (chunk.compressedOffset & 0xFF_FFFF_FFFF) | (compressedMinusOne & 0xF_FFFF) << 44
            | ((compressedMinusOne >> 20) & 0xF) << 40
        out.u64(uncomp, at: offset)
        out.u64(comp, at: offset + 8)
    }

    /// The 4 KiB blob-meta header that follows the chunk-info array.
    package static func metaHeader(
        features: RafsBlobEntry.Features, compressor: RafsBlobEntry.Compression, entries: UInt32, offset: UInt64,
        compressedSize: UInt64, uncompressedSize: UInt64
    ) -> [UInt8] {
        var out = LittleEndianWriter(count: BlobMetaHeader.size)
        out.u32(BlobMetaHeader.magic, at: 0)
        out.u32(features.rawValue, at: 4)
        out.u32(compressor.rawValue, at: 8)
        out.u32(entries, at: 12)
        out.u64(offset, at: 16)
        out.u64(compressedSize, at: 24)
        out.u64(uncompressedSize, at: 32)
        out.u32(BlobMetaHeader.magic, at: BlobMetaHeader.size - 4)
        return out.bytes
    }

    /// ToC flag for a section's compression (the inverse of `BlobTocEntry.compression`).
    package static func tocFlags(_ compression: RafsBlobEntry.Compression) -> UInt32 {
        switch compression {
        case .none: return 0x1
        case .zstd: return 0x2
        case .lz4Block: return 0x4
        case .gzip: return 0x8
        }
    }

    /// One 128-byte ToC entry.
    package static func tocEntry(
        name: String, compression: RafsBlobEntry.Compression, digest: [UInt8], compressedOffset: UInt64,
        compressedSize: UInt64, uncompressedSize: UInt64
    ) -> [UInt8] {
        var out = LittleEndianWriter(count: BlobTocEntry.size)
        out.u32(tocFlags(compression), at: 0)
        out.raw(Array(name.utf8), at: 8, length: 16)
        out.raw(digest, at: 24, length: 32)
        out.u64(compressedOffset, at: 56)
        out.u64(compressedSize, at: 64)
        out.u64(uncompressedSize, at: 72)
        return out.bytes
    }

    /// One 80-byte row of the bootstrap's chunk table.
    package static func chunkTableEntry(
        digest: [UInt8], blobIndex: UInt32, chunk: BlobChunkInfo, fileOffset: UInt64, into out: inout LittleEndianWriter,
        at offset: Int
    ) {
        out.raw(digest, at: offset, length: 32)
        out.u32(blobIndex, at: offset + 32)
        out.u32(chunk.isCompressed ? 0x1 : 0, at: offset + 36)
        out.u32(chunk.compressedSize, at: offset + 40)
        out.u32(chunk.uncompressedSize, at: offset + 44)
        out.u64(chunk.compressedOffset, at: offset + 48)
        out.u64(chunk.uncompressedOffset, at: offset + 56)
        out.u64(fileOffset, at: offset + 64)
        out.u32(chunk.index, at: offset + 72)
        out.u32(0, at: offset + 76)
    }

    /// The 512-byte GNU tar header nydus writes *after* each blob section (`data | header`), so a blob can be
    /// streamed without knowing sizes first: name, regular type, octal size, zero mode/ids/mtime.
    package static func tarHeader(name: String, size: UInt64) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: BlobTocEntry.tarHeaderSize)
        func put(_ text: String, at offset: Int) {
            for (index, byte) in text.utf8.enumerated() { block[offset + index] = byte }
        }
        put(String(name.prefix(99)), at: 0)
        put(octal(size, digits: 11), at: 124)
        put(octal(0, digits: 11), at: 136)
        block[156] = UInt8(ascii: "0")
        put("ustar  ", at: 257)
        // The checksum counts its own field as spaces.
        for index in 148..<156 { block[index] = UInt8(ascii: " ") }
        let sum = block.reduce(0) { $0 + UInt64($1) }
        for index in 148..<156 { block[index] = 0 }
        put(octal(sum, digits: 7), at: 148)
        return block
    }

    private static func octal(_ value: UInt64, digits: Int) -> String {
        let text = String(value, radix: 8)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}

/// What the bootstrap needs to know about one finished blob.
package struct BlobSummary: Sendable {
    package var blobID: String
    package var chunkCount: UInt32
    package var compression: RafsBlobEntry.Compression
    package var features: RafsBlobEntry.Features
    package var compressedSize: UInt64
    package var uncompressedSize: UInt64
    package var tocSize: UInt32
    package var tocDigest: [UInt8]
    package var metaCompressor: RafsBlobEntry.Compression
    package var metaOffset: UInt64
    package var metaCompressedSize: UInt64
    package var metaUncompressedSize: UInt64

    package init(
        blobID: String, chunkCount: UInt32, compression: RafsBlobEntry.Compression, features: RafsBlobEntry.Features,
        compressedSize: UInt64, uncompressedSize: UInt64, tocSize: UInt32, tocDigest: [UInt8], metaCompressor: RafsBlobEntry.Compression,
        metaOffset: UInt64, metaCompressedSize: UInt64, metaUncompressedSize: UInt64
    ) {
        self.blobID = blobID
        self.chunkCount = chunkCount
        self.compression = compression
        self.features = features
        self.compressedSize = compressedSize
        self.uncompressedSize = uncompressedSize
        self.tocSize = tocSize
        self.tocDigest = tocDigest
        self.metaCompressor = metaCompressor
        self.metaOffset = metaOffset
        self.metaCompressedSize = metaCompressedSize
        self.metaUncompressedSize = metaUncompressedSize
    }
}
