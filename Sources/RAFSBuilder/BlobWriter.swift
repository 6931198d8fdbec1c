import Digests
import LinuxKernel
import RAFS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Writes one nydus data blob, streaming, in the layout `RafsBlob` reads:
///
///     chunk data | tar "image.blob" | chunk-info array | meta header (4 KiB) | tar "blob.meta"
///     | chunk digests | tar "blob.digest" | ToC | tar "rafs.blob.toc"
///
/// Chunks are appended in order; each gets a 4 KiB-aligned uncompressed offset. The file is written under a
/// temporary name, hashed as it goes, and renamed to its sha256 (the blob id) when finished.
///
/// A blob whose chunk data is *stored elsewhere* (a gzip-indexed layer: its stored form is the layer's
/// uncompressed tar, fetched through the layer's gzip index) gets only the sections after the data: they are
/// written at the tar's size, the data region stays a hole, there is no `image.blob` section, and the blob id
/// is the sha256 of the layer's digest and those sections.
final class BlobWriter {
    /// Builder ordinal of the blob (the layer it comes from).
    let ordinal: Int
    let compression: ChunkCompression
    let level: Int
    let partialPath: String
    private let fd: Int32
    private var hasher = SHA256()
    private var pending: [UInt8] = []
    private var position: UInt64 = 0
    private var uncompressedEnd: UInt64 = 0
    private(set) var chunks: [BlobChunkInfo] = []
    private(set) var digests: [[UInt8]] = []
    /// File offset of each chunk's first use, for the bootstrap's chunk table.
    private(set) var fileOffsets: [UInt64] = []
    private var finished = false
    /// Set for a blob whose data lies elsewhere: the digest of the layer that holds it.
    let storedElsewhere: String?
    /// File offset of `pending`'s first byte.
    private var flushedTo: UInt64 = 0

    static let blockSize: UInt64 = 4096
    static let features: RafsBlobEntry.Features = [.aligned, .inlinedChunkDigest, .hasTarHeader, .hasToc, .capTarToc]
    /// v1 chunk infos: 24-bit chunk index in the chunk index, 40-bit compressed offsets, 44-bit uncompressed.
    static let maximumChunks = 1 << 24
    static let maximumCompressedOffset: UInt64 = 1 << 40
    static let maximumUncompressedOffset: UInt64 = 1 << 44
    private static let flushThreshold = 4 << 20

    init(ordinal: Int, directory: String, compression: ChunkCompression, level: Int, storedElsewhere: String? = nil) throws(BuildError) {
        self.ordinal = ordinal
        self.compression = storedElsewhere == nil ? compression : .none
        self.level = level
        self.storedElsewhere = storedElsewhere
        if let storedElsewhere { hasher.update(Array("zran:\(storedElsewhere)".utf8)) }
        let path = directory + "/.blob-\(ordinal).partial"
        partialPath = path
        do throws(SyscallError) {
            fd = try retryingSyscall("open", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        } catch {
            throw .io(path: path, error)
        }
        pending.reserveCapacity(Self.flushThreshold + (1 << 20))
    }

    deinit {
        close(fd)
        if !finished { unlink(partialPath) }
    }

    var chunkCount: Int { chunks.count }

    /// Appends one chunk: `stored` are the bytes written (compressed, or the raw data when `compressed` is
    /// false), `size` the uncompressed length.
    /// `storedAt`: for a blob whose data lies elsewhere, where the chunk's bytes are (nothing is written).
    func append(
        stored: UnsafeRawBufferPointer, size: Int, compressed: Bool, digest: [UInt8], fileOffset: UInt64, storedAt: UInt64? = nil
    ) throws(BuildError) -> ChunkLocation {
        guard chunks.count < Self.maximumChunks else {
            throw .formatLimit(reason: "blob \(ordinal) would have more than \(Self.maximumChunks) chunks")
        }
        guard position + UInt64(stored.count) < Self.maximumCompressedOffset,
            uncompressedEnd + UInt64(size) < Self.maximumUncompressedOffset
        else {
            throw .formatLimit(reason: "blob \(ordinal) would exceed the 40-bit compressed / 44-bit uncompressed offsets")
        }
        let info = BlobChunkInfo(
            index: UInt32(chunks.count), compressedOffset: storedAt ?? position, compressedSize: UInt32(stored.count),
            uncompressedOffset: uncompressedEnd, uncompressedSize: UInt32(size), flags: compressed ? .compressed : [])
        if let storedAt {
            guard storedElsewhere != nil, storedAt >= position, storedAt + UInt64(stored.count) < Self.maximumCompressedOffset else {
                throw .formatLimit(reason: "blob \(ordinal): chunk stored at \(storedAt) lies before the previous one or out of range")
            }
            position = storedAt + UInt64(stored.count)
            flushedTo = position
        } else {
            try write(stored)
        }
        uncompressedEnd = (uncompressedEnd + UInt64(size) + Self.blockSize - 1) / Self.blockSize * Self.blockSize
        chunks.append(info)
        digests.append(digest)
        fileOffsets.append(fileOffset)
        return ChunkLocation(blob: ordinal, index: info.index, uncompressedOffset: info.uncompressedOffset)
    }

    private func write(_ bytes: UnsafeRawBufferPointer) throws(BuildError) {
        pending.append(contentsOf: bytes)
        position += UInt64(bytes.count)
        if pending.count >= Self.flushThreshold { try flush() }
    }

    private func write(_ bytes: [UInt8]) throws(BuildError) {
        try withBytes(bytes) { (raw) throws(BuildError) in try write(raw) }
    }

    private func flush() throws(BuildError) {
        guard !pending.isEmpty else { return }
        let (fd, path) = (self.fd, partialPath)
        pending.withUnsafeBytes { hasher.update($0) }
        do throws(SyscallError) {
            try FileSystem.writeAll(fd, pending, at: flushedTo, path: path)
        } catch {
            throw .io(path: path, error)
        }
        flushedTo += UInt64(pending.count)
        pending.removeAll(keepingCapacity: true)
    }

    /// Writes the meta sections and the ToC, syncs, and renames the blob to `<directory>/<blob id>`. Returns
    /// nil (and removes the file) when no chunk was ever appended: nydus does not emit empty blobs.
    /// `storedSize`: for a blob whose data lies elsewhere, the size of that data (the layer's uncompressed tar).
    func finish(directory: String, sync: Bool, storedSize: UInt64? = nil) throws(BuildError) -> (summary: BlobSummary, path: String)? {
        guard !chunks.isEmpty else {
            finished = true
            unlink(partialPath)
            return nil
        }
        var toc: [UInt8] = []
        if storedElsewhere != nil {
            guard let storedSize, storedSize >= position else {
                throw .formatLimit(reason: "blob \(ordinal): its data ends at \(position), past the stored size \(storedSize ?? 0)")
            }
            position = storedSize
            flushedTo = storedSize
        } else {
            // image.blob: the chunk data. Like nydus, its digest covers the data and its trailing tar header.
            let dataSize = position
            try write(RafsEncoding.tarHeader(name: "image.blob", size: dataSize))
            try flush()
            let imageBlobDigest = hasher.peek()
            toc += RafsEncoding.tocEntry(
                name: "image.blob", compression: .none, digest: imageBlobDigest, compressedOffset: 0, compressedSize: dataSize,
                uncompressedSize: uncompressedEnd)
        }

        // blob.meta: the chunk-info array, compressed like the chunks when that helps, then its header.
        var infos = LittleEndianWriter(count: chunks.count * BlobChunkInfo.v1Size)
        for chunk in chunks { RafsEncoding.chunkInfoV1(chunk, into: &infos, at: Int(chunk.index) * BlobChunkInfo.v1Size) }
        let compressor = try ChunkCompressor(algorithm: compression, level: level)
        let packed = try withBytes(infos.bytes) { (raw) throws(BuildError) in try compressor.compress(raw) }
        let metaCompressor: RafsBlobEntry.Compression = packed == nil ? .none : compression.rafs
        let metaStored = packed ?? infos.bytes
        let metaOffset = position
        let header = RafsEncoding.metaHeader(
            features: Self.features, compressor: metaCompressor, entries: UInt32(chunks.count), offset: metaOffset,
            compressedSize: UInt64(metaStored.count), uncompressedSize: UInt64(infos.count))
        try write(metaStored)
        try write(header)
        try write(RafsEncoding.tarHeader(name: "blob.meta", size: UInt64(metaStored.count + header.count)))
        toc += RafsEncoding.tocEntry(
            name: "blob.meta", compression: metaCompressor, digest: SHA256.hash(infos.bytes), compressedOffset: metaOffset,
            compressedSize: UInt64(metaStored.count), uncompressedSize: UInt64(infos.count))
        toc += RafsEncoding.tocEntry(
            name: "blob.meta.header", compression: .none, digest: SHA256.hash(header),
            compressedOffset: metaOffset + UInt64(metaStored.count), compressedSize: UInt64(header.count),
            uncompressedSize: UInt64(header.count))

        // blob.digest: one sha256 per chunk, in chunk-index order, stored plain (digests do not compress).
        let digestOffset = position
        let digestBytes = digests.flatMap { $0 }
        try write(digestBytes)
        try write(RafsEncoding.tarHeader(name: "blob.digest", size: UInt64(digestBytes.count)))
        toc += RafsEncoding.tocEntry(
            name: "blob.digest", compression: .none, digest: SHA256.hash(digestBytes), compressedOffset: digestOffset,
            compressedSize: UInt64(digestBytes.count), uncompressedSize: UInt64(digestBytes.count))

        // The ToC and its tar header end the blob; `blob_toc_size` counts both.
        let tocTar = RafsEncoding.tarHeader(name: "rafs.blob.toc", size: UInt64(toc.count))
        try write(toc)
        try write(tocTar)
        try flush()
        let blobID = hasher.finalize().hexString
        if sync {
            do throws(SyscallError) {
                try retryingSyscall("fsync", partialPath) { fsync(fd) }
            } catch {
                throw .io(path: partialPath, error)
            }
        }
        let finalPath = directory + "/" + blobID
        do throws(SyscallError) {
            try retryingSyscall("rename", finalPath) { rename(partialPath, finalPath) }
        } catch {
            throw .io(path: finalPath, error)
        }
        finished = true
        let summary = BlobSummary(
            blobID: blobID, chunkCount: UInt32(chunks.count), compression: compression.rafs, features: Self.features,
            compressedSize: position, uncompressedSize: uncompressedEnd, tocSize: UInt32(toc.count + tocTar.count),
            tocDigest: SHA256.hash(toc + tocTar), metaCompressor: metaCompressor, metaOffset: metaOffset,
            metaCompressedSize: UInt64(metaStored.count), metaUncompressedSize: UInt64(infos.count))
        return (summary, finalPath)
    }
}
