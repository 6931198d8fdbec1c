import Digests
import LinuxKernel

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One nydus data blob as stored (chunks compressed one by one, then the chunk-info array, its 4 KiB header,
/// the chunk digests and the ToC, each section followed by a tar header when the blob has them), read
/// through its blob-table entry.
///
/// It maps the *uncompressed* blob (what EROFS sees as the device, in which chunk-based inodes address
/// blocks) to the compressed chunks that hold it, decompresses and verifies chunks, serves uncompressed
/// ranges as an `ErofsDeviceReader`, and materializes the uncompressed blob as a sparse file.
public final class RafsBlob: Sendable, ErofsDeviceReader {
    /// The blob file (whole, or only its meta tail for a lazily pulled blob). It is not kept open: a host
    /// serves thousands of blobs, and reads of chunks from this file (converted images, inspection) open it.
    public let path: String
    public let entry: RafsBlobEntry
    public let metaHeader: BlobMetaHeader
    /// The chunk-info array, in array (chunk index) order.
    public let chunks: [BlobChunkInfo]
    /// ToC entries when the blob has a ToC, else empty.
    public let toc: [BlobTocEntry]
    /// Expected digest of each chunk by chunk index, as the bootstrap commits to them (its chunk table, or the
    /// blob's `blob.digest` section through the ToC digest the blob table records).
    public let chunkDigests: [[UInt8]]
    /// Chunk indexes sorted by uncompressed offset, for range lookups.
    private let byUncompressedOffset: [Int]
    /// What in the bootstrap vouches for the chunk map and digests.
    public let commitmentSource: CommitmentSource
    /// Hex sha256 of the chunk map and digests the bootstrap commits to (see `commitment(entry:chunks:digests:)`):
    /// images may share this blob's backing file only when their commitments are equal.
    public let commitment: String

    /// Size of the uncompressed blob as a device: the declared size rounded up to 4 KiB, the alignment of
    /// chunk offsets.
    public var deviceSize: UInt64 { (entry.uncompressedSize + 4095) / 4096 * 4096 }

    /// Opens the blob file at `path` described by `entry`, and refuses it unless the bootstrap commits to its
    /// meta: `chunkTable` is the bootstrap's RAFS chunk table (offsets, sizes and digests for every blob's
    /// chunks); without rows for every chunk, the blob table's ToC digest must vouch for the meta and digests.
    public init(path: String, entry: RafsBlobEntry, chunkTable: [RafsChunkTableEntry] = []) throws(ImageFormatError) {
        let file = try ImageFile(path: path)
        self.path = path
        self.entry = entry
        let name = entry.blobID

        guard entry.features.isDisjoint(with: [.encrypted, .zran, .batch]) else {
            throw .badBlobMeta(
                blob: name, reason: "features 0x\(String(entry.features.rawValue, radix: 16)) (encrypted, zran or batch) are not supported")
        }
        guard entry.compression != nil else {
            throw .unsupportedCompression(algorithm: entry.compressionRaw, context: "blob \(name) chunks")
        }
        guard entry.digestAlgorithm != nil else { throw .unsupportedDigest(algorithm: entry.digestRaw) }
        guard let metaCompressor = entry.metaCompressor else {
            throw .unsupportedCompression(algorithm: entry.metaCompressorRaw, context: "blob \(name) meta")
        }

        // The chunk-info array and its header.
        let entrySize = entry.features.contains(.chunkInfoV2) ? BlobChunkInfo.v2Size : BlobChunkInfo.v1Size
        let needed = UInt64(entry.chunkCount) * UInt64(entrySize)
        guard entry.metaUncompressedSize >= needed, entry.metaUncompressedSize <= ImageFile.maximumRead else {
            throw .badBlobMeta(
                blob: name, reason: "\(entry.metaUncompressedSize) bytes cannot hold \(entry.chunkCount) chunk infos of \(entrySize) bytes")
        }
        guard entry.metaCompressedSize <= file.size else {
            throw .outOfBounds(what: "blob \(name) meta", offset: entry.metaOffset, length: entry.metaCompressedSize, size: file.size)
        }
        let stored = try file.read(at: entry.metaOffset, count: Int(entry.metaCompressedSize), what: "blob meta")
        let plain = try ChunkDecompressor.decompress(
            stored, algorithm: metaCompressor,
            expectedSize: Int(entry.metaUncompressedSize),
            context: "blob \(name) meta")
        let headerOffset = entry.metaOffset + entry.metaCompressedSize
        let header = try BlobMetaHeader(
            decoding: try file.bytes(
                at: headerOffset, count: BlobMetaHeader.size,
                what: "blob meta header"), at: headerOffset)
        guard header.entries == entry.chunkCount, header.offset == entry.metaOffset,
            header.compressedSize == entry.metaCompressedSize, header.uncompressedSize == entry.metaUncompressedSize,
            header.compressorRaw == entry.metaCompressorRaw
        else {
            throw .badBlobMeta(blob: name, reason: "header (\(header.entries) entries at \(header.offset)) disagrees with the blob table")
        }
        metaHeader = header

        let raw = LittleEndianBytes(plain, what: "chunk infos of blob \(name)")
        var infos: [BlobChunkInfo] = []
        infos.reserveCapacity(Int(entry.chunkCount))
        for index in 0..<entry.chunkCount {
            let base = Int(index) * entrySize
            let info =
                entrySize == BlobChunkInfo.v2Size
                ? try BlobChunkInfo.decodeV2(raw, at: base, index: index)
                : try BlobChunkInfo.decodeV1(raw, at: base, index: index)
            guard info.compressedEnd <= file.size else {
                throw .badChunkInfo(
                    blob: name, chunk: index,
                    reason: "compressed bytes \(info.compressedOffset)..<\(info.compressedEnd) lie past the blob's end (\(file.size))")
            }
            guard info.uncompressedEnd <= entry.uncompressedSize, info.uncompressedSize <= max(entry.chunkSize, 1) else {
                throw .badChunkInfo(
                    blob: name, chunk: index,
                    reason:
                        "uncompressed \(info.uncompressedOffset)+\(info.uncompressedSize) lies outside the blob (\(entry.uncompressedSize) bytes, chunk size \(entry.chunkSize))"
                )
            }
            infos.append(info)
        }
        chunks = infos
        let order = infos.indices.sorted { infos[$0].uncompressedOffset < infos[$1].uncompressedOffset }
        for (previous, next) in zip(order, order.dropFirst()) where infos[next].uncompressedOffset < infos[previous].uncompressedEnd {
            throw .badChunkInfo(
                blob: name, chunk: infos[next].index,
                reason: "its uncompressed bytes overlap those of chunk \(infos[previous].index)")
        }
        byUncompressedOffset = order

        toc = try Self.readToc(file: file, entry: entry)
        let committed = try Self.committedDigests(
            chunks: infos, plainMeta: plain, storedMeta: stored, entry: entry, chunkTable: chunkTable, file: file, toc: toc)
        chunkDigests = committed.digests
        commitmentSource = committed.source
        commitment = Self.commitment(entry: entry, chunks: infos, digests: committed.digests)
    }

    /// What vouches for a blob's chunk map and digests: the bootstrap itself, in one of two ways.
    public enum CommitmentSource: String, Sendable {
        /// The bootstrap's RAFS chunk table has a row for every chunk, agreeing with the blob meta.
        case chunkTable = "chunk table"
        /// The ToC whose sha256 the blob table records names the chunk-info array's and the digests' sha256.
        case toc = "ToC"
    }

    /// The chunk digests the bootstrap commits to, after checking that it commits to the blob meta too. A
    /// blob meta is only ever trusted through the bootstrap (itself checked against the manifest): either its
    /// chunk table lists every chunk at the same offsets and sizes, or the blob table's ToC digest vouches for
    /// the ToC, which vouches for the chunk-info array (or the blob table's meta digest does) and for the
    /// `blob.digest` section. Anything else is refused: a meta fetched from a registry is not evidence.
    private static func committedDigests(
        chunks: [BlobChunkInfo], plainMeta: [UInt8], storedMeta: [UInt8], entry: RafsBlobEntry, chunkTable: [RafsChunkTableEntry],
        file: ImageFile, toc: [BlobTocEntry]
    ) throws(ImageFormatError) -> (digests: [[UInt8]], source: CommitmentSource) {
        let name = entry.blobID
        var digests = [[UInt8]](repeating: [], count: chunks.count)
        for row in chunkTable where row.blobIndex == entry.blobIndex {
            guard row.index < entry.chunkCount else {
                throw .badChunkInfo(
                    blob: name, chunk: row.index, reason: "the bootstrap's chunk table names a chunk the blob does not have")
            }
            let info = chunks[Int(row.index)]
            guard row.uncompressedOffset == info.uncompressedOffset, row.uncompressedSize == info.uncompressedSize,
                row.compressedOffset == info.compressedOffset, row.compressedSize == info.compressedSize
            else {
                throw .badChunkInfo(
                    blob: name, chunk: row.index,
                    reason:
                        "the blob meta puts it at \(info.uncompressedOffset)+\(info.uncompressedSize) (stored \(info.compressedOffset)+\(info.compressedSize)), the bootstrap's chunk table at \(row.uncompressedOffset)+\(row.uncompressedSize) (stored \(row.compressedOffset)+\(row.compressedSize))"
                )
            }
            let index = Int(row.index)
            guard digests[index].isEmpty || digests[index] == row.digest else {
                throw .badChunkInfo(blob: name, chunk: row.index, reason: "the bootstrap's chunk table gives it two digests")
            }
            digests[index] = row.digest
        }
        if !digests.contains(where: \.isEmpty) { return (digests, .chunkTable) }

        // No complete chunk table: the ToC must be vouched for by the bootstrap and vouch for both sections.
        guard entry.tocDigest.contains(where: { $0 != 0 }), !toc.isEmpty else {
            throw .badBlobMeta(
                blob: name,
                reason: "the bootstrap commits to neither its chunk map (no chunk table rows for every chunk) nor its ToC (no ToC digest)")
        }
        let metaDigest = SHA256.hash(plainMeta)
        let metaVouched =
            toc.contains { $0.name == "blob.meta" && $0.digest == metaDigest }
            || (entry.metaDigest.contains { $0 != 0 } && (entry.metaDigest == metaDigest || entry.metaDigest == SHA256.hash(storedMeta)))
        guard metaVouched else {
            throw .badBlobMeta(blob: name, reason: "its chunk-info array matches neither the ToC's blob.meta digest nor the blob table's")
        }
        guard let section = toc.first(where: { $0.name == "blob.digest" }) else {
            throw .badToc(blob: name, reason: "no blob.digest section, and the bootstrap's chunk table does not cover every chunk")
        }
        let bytes = try readTocSection(file: file, section, blob: name)
        guard bytes.count == chunks.count * 32 else {
            throw .badToc(blob: name, reason: "blob.digest has \(bytes.count) bytes for \(chunks.count) chunks")
        }
        return ((0..<chunks.count).map { Array(bytes[$0 * 32..<($0 + 1) * 32]) }, .toc)
    }

    /// sha256 over everything that decides which bytes a reader of the uncompressed blob gets: the blob's id,
    /// sizes and algorithms, and each chunk's place (stored and uncompressed), flags and digest. Two images
    /// whose blobs have equal commitments serve the same bytes at the same offsets, verified against the same
    /// digests: only then may they share a backing file.
    static func commitment(entry: RafsBlobEntry, chunks: [BlobChunkInfo], digests: [[UInt8]]) -> String {
        var hasher = SHA256()
        var buffer: [UInt8] = []
        func append(_ value: some FixedWidthInteger) {
            withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) }
        }
        buffer.append(contentsOf: Array("rafs-blob-commitment-v1\0".utf8) + Array(entry.blobID.utf8) + [0])
        for value in [entry.chunkSize, entry.chunkCount, entry.compressionRaw, entry.digestRaw] { append(value) }
        append(entry.uncompressedSize)
        hasher.update(buffer)
        for (chunk, digest) in zip(chunks, digests) {
            buffer.removeAll(keepingCapacity: true)
            append(chunk.index)
            append(chunk.compressedOffset)
            append(chunk.compressedSize)
            append(chunk.uncompressedOffset)
            append(chunk.uncompressedSize)
            append(chunk.flags.rawValue)
            buffer.append(contentsOf: digest)
            hasher.update(buffer)
        }
        return hasher.finalize().hexString
    }

    /// Opens blob `index` of `image` from `directory`, where blobs are stored under their ids.
    public convenience init(image: ErofsImage, index: Int, directory: String) throws(ImageFormatError) {
        guard image.blobs.indices.contains(index) else {
            throw .badBlobTable(reason: "blob index \(index) is not in the table (\(image.blobs.count) blobs)")
        }
        let entry = image.blobs[index]
        try self.init(path: directory + "/" + entry.blobID, entry: entry, chunkTable: try image.rafsChunkTable())
    }

    private static func readToc(file: ImageFile, entry: RafsBlobEntry) throws(ImageFormatError) -> [BlobTocEntry] {
        guard entry.features.contains(.hasToc), entry.tocSize > 0 else { return [] }
        let name = entry.blobID
        // `blob_toc_size` counts the ToC's trailing tar header too: the entries are the bytes before it.
        let tarHeader = UInt64(entry.features.contains(.hasTarHeader) ? BlobTocEntry.tarHeaderSize : 0)
        let size = UInt64(entry.tocSize)
        guard size > tarHeader, (size - tarHeader) % UInt64(BlobTocEntry.size) == 0, size <= 1 << 20 else {
            throw .badToc(blob: name, reason: "size \(size) is not a tar header plus a multiple of \(BlobTocEntry.size) up to 1 MiB")
        }
        guard file.size >= size else {
            throw .truncated(what: "blob \(name) ToC", needed: size, available: file.size)
        }
        let withHeader = try file.read(at: file.size - size, count: Int(size), what: "blob ToC")
        if entry.tocDigest.contains(where: { $0 != 0 }) {
            let found = SHA256.hash(withHeader)
            guard found == entry.tocDigest else {
                throw .digestMismatch(context: "blob \(name) ToC", expected: entry.tocDigest.hexString, found: found.hexString)
            }
        }
        let entryBytes = Int(size - tarHeader)
        let raw = LittleEndianBytes(Array(withHeader[0..<entryBytes]), what: "blob \(name) ToC")
        var entries: [BlobTocEntry] = []
        for index in 0..<entryBytes / BlobTocEntry.size {
            let tocEntry = try BlobTocEntry(decoding: raw, at: index * BlobTocEntry.size)
            if tocEntry.name.isEmpty { continue }
            entries.append(tocEntry)
        }
        return entries
    }

    /// The uncompressed bytes of one ToC section, checked against its sha256.
    static func readTocSection(file: ImageFile, _ section: BlobTocEntry, blob: String) throws(ImageFormatError) -> [UInt8] {
        guard let compression = section.compression else {
            throw .unsupportedCompression(algorithm: section.flags, context: "blob \(blob) ToC entry \(section.name)")
        }
        guard section.compressedSize <= file.size else {
            throw .outOfBounds(
                what: "ToC entry \(section.name)", offset: section.compressedOffset, length: section.compressedSize, size: file.size)
        }
        let stored = try file.read(at: section.compressedOffset, count: Int(section.compressedSize), what: "ToC entry \(section.name)")
        guard section.uncompressedSize <= ImageFile.maximumRead else {
            throw .absurdSize(what: "ToC entry \(section.name)", size: section.uncompressedSize, limit: ImageFile.maximumRead)
        }
        let data = try ChunkDecompressor.decompress(
            stored, algorithm: compression, expectedSize: Int(section.uncompressedSize),
            context: "blob \(blob) ToC entry \(section.name)")
        let found = SHA256.hash(data)
        guard found == section.digest else {
            throw .digestMismatch(
                context: "blob \(blob) ToC entry \(section.name)", expected: section.digest.hexString, found: found.hexString)
        }
        return data
    }

    /// The uncompressed bytes of ToC section `name` (e.g. `blob.meta`, `blob.digest`), digest checked.
    public func tocSection(_ name: String) throws(ImageFormatError) -> [UInt8] {
        guard let section = toc.first(where: { $0.name == name }) else {
            throw .badToc(blob: entry.blobID, reason: "no entry named \(name)")
        }
        return try Self.readTocSection(file: try ImageFile(path: path), section, blob: entry.blobID)
    }

    // MARK: Chunks

    /// The chunks holding uncompressed bytes `[offset, offset + length)`, in uncompressed order. Gaps
    /// between chunks (alignment padding) hold zeros and have no chunk.
    public func chunks(coveringUncompressed offset: UInt64, length: UInt64) -> [BlobChunkInfo] {
        guard length > 0 else { return [] }
        let end = offset.addingReportingOverflow(length).overflow ? UInt64.max : offset + length
        // First chunk whose end lies after `offset`: chunks do not overlap, so ends are sorted too.
        var low = 0
        var high = byUncompressedOffset.count
        while low < high {
            let middle = (low + high) / 2
            if chunks[byUncompressedOffset[middle]].uncompressedEnd <= offset { low = middle + 1 } else { high = middle }
        }
        var result: [BlobChunkInfo] = []
        var position = low
        while position < byUncompressedOffset.count {
            let chunk = chunks[byUncompressedOffset[position]]
            if chunk.uncompressedOffset >= end { break }
            result.append(chunk)
            position += 1
        }
        return result
    }

    /// Whether the range lies in what the image describes: every 4 KiB device block under it (the unit the
    /// kernel reads) holds bytes of some chunk. A block no chunk touches is no part of any file, so a read of
    /// it is refused (EIO) rather than answered with the hole's zeros.
    public func describes(offset: UInt64, length: UInt64) -> Bool {
        describedChunks(offset: offset, length: length) != nil
    }

    /// The chunks under the range when the image describes all of it (see `describes`), else nil: one lookup
    /// serves both questions on the front ends' per-read path.
    public func describedChunks(offset: UInt64, length: UInt64) -> [BlobChunkInfo]? {
        guard length > 0 else { return [] }
        guard offset < deviceSize else { return nil }
        let end = min(deviceSize, offset.addingReportingOverflow(length).overflow ? UInt64.max : offset + length)
        let block: UInt64 = 4096
        let start = offset / block * block
        let found = chunks(coveringUncompressed: start, length: end - start)
        var covered = start
        for chunk in found {
            guard chunk.uncompressedOffset / block * block <= covered else { return nil }
            covered = max(covered, (chunk.uncompressedEnd + block - 1) / block * block)
        }
        guard covered >= end else { return nil }
        // Only those under the range itself (the first may lie just before it, in the same block).
        return found.filter { $0.uncompressedEnd > offset }
    }

    /// The digest nydus records for chunk data, with this blob's algorithm.
    public func digest(of data: [UInt8]) -> [UInt8] {
        data.withUnsafeBytes { digest(of: $0) }
    }

    public func digest(of data: UnsafeRawBufferPointer) -> [UInt8] {
        guard entry.digestAlgorithm == .sha256 else { return BLAKE3.hash(data) }
        var hasher = SHA256()
        hasher.update(data)
        return hasher.finalize()
    }

    /// Reads, decompresses and (when a digest is known and `verify` is set) verifies one chunk.
    public func readChunk(_ chunk: BlobChunkInfo, verify: Bool = true) throws(ImageFormatError) -> [UInt8] {
        try readChunk(chunk, from: try ImageFile(path: path), verify: verify)
    }

    /// `readChunk` through a file the caller opened once for many chunks.
    public func readChunk(_ chunk: BlobChunkInfo, from file: ImageFile, verify: Bool = true) throws(ImageFormatError) -> [UInt8] {
        let stored = try file.read(at: chunk.compressedOffset, count: Int(chunk.compressedSize), what: "chunk \(chunk.index)")
        return try decodeChunk(chunk, stored: stored, verify: verify)
    }

    /// Whether every chunk has a known digest, so that fetched chunks can always be verified.
    public var hasAllDigests: Bool {
        chunkDigests.count == chunks.count && chunkDigests.allSatisfy { !$0.isEmpty }
    }

    /// Decompresses the stored (compressed) bytes of one chunk, fetched from wherever, and verifies them.
    /// With `verify`, a chunk without a known digest is refused: unverified bytes never reach a reader.
    public func decodeChunk(_ chunk: BlobChunkInfo, stored: [UInt8], verify: Bool = true) throws(ImageFormatError) -> [UInt8] {
        let compression = try storedCompression(of: chunk, storedCount: stored.count)
        let data = try ChunkDecompressor.decompress(
            stored, algorithm: compression, expectedSize: Int(chunk.uncompressedSize), context: "blob \(entry.blobID) chunk \(chunk.index)")
        if verify { try check(chunk, digest: digest(of: data)) }
        return data
    }

    /// `decodeChunk` without copies: `use` gets the verified chunk, which is `stored` itself when the chunk is
    /// uncompressed and the front of `scratch` (at least `chunk.uncompressedSize` bytes) when it is not.
    public func withDecodedChunk<Result>(
        _ chunk: BlobChunkInfo, stored: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer,
        _ use: (UnsafeRawBufferPointer) throws -> Result
    ) throws -> Result {
        let compression = try storedCompression(of: chunk, storedCount: stored.count)
        let size = Int(chunk.uncompressedSize)
        let data: UnsafeRawBufferPointer
        if compression == .none {
            try ChunkDecompressor.checkUncompressed(
                storedCount: stored.count, expectedSize: size, context: "blob \(entry.blobID) chunk \(chunk.index)")
            data = stored
        } else {
            guard scratch.count >= size else {
                throw ImageFormatError.absurdSize(
                    what: "blob \(entry.blobID) chunk \(chunk.index)", size: UInt64(size), limit: UInt64(scratch.count))
            }
            let target = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<size])
            try ChunkDecompressor.decompress(
                stored, algorithm: compression, into: target, context: "blob \(entry.blobID) chunk \(chunk.index)")
            data = UnsafeRawBufferPointer(target)
        }
        try check(chunk, digest: digest(of: data))
        return try use(data)
    }

    /// How the chunk's stored bytes are compressed, after checking what can be checked before decoding them.
    private func storedCompression(of chunk: BlobChunkInfo, storedCount: Int) throws(ImageFormatError) -> RafsBlobEntry.Compression {
        let name = entry.blobID
        guard chunk.flags.isDisjoint(with: [.zran, .batch, .encrypted]) else {
            throw .badChunkInfo(
                blob: name, chunk: chunk.index,
                reason: "flags 0x\(String(chunk.flags.rawValue, radix: 16)) (zran, batch or encrypted) are not supported")
        }
        guard storedCount == Int(chunk.compressedSize) else {
            throw .badChunkInfo(blob: name, chunk: chunk.index, reason: "got \(storedCount) stored bytes, expected \(chunk.compressedSize)")
        }
        guard chunk.isCompressed else { return .none }
        guard let compression = entry.compression, compression != .none else {
            throw .badChunkInfo(blob: name, chunk: chunk.index, reason: "marked compressed in a blob without compression")
        }
        return compression
    }

    /// Checks the digest of decoded chunk data against the chunk's recorded one; a chunk without one is refused.
    private func check(_ chunk: BlobChunkInfo, digest found: [UInt8]) throws(ImageFormatError) {
        let name = entry.blobID
        guard chunkDigests.indices.contains(Int(chunk.index)), !chunkDigests[Int(chunk.index)].isEmpty else {
            throw .badChunkInfo(blob: name, chunk: chunk.index, reason: "no digest is known for it, so it cannot be verified")
        }
        let expected = chunkDigests[Int(chunk.index)]
        guard found == expected else {
            throw .digestMismatch(context: "blob \(name) chunk \(chunk.index)", expected: expected.hexString, found: found.hexString)
        }
    }

    /// Uncompressed blob bytes, as the kernel reads the device: chunks decompressed, gaps as zeros.
    public func readDevice(at offset: UInt64, count: Int) throws(ImageFormatError) -> [UInt8] {
        let length = UInt64(max(0, count))
        guard offset <= deviceSize, length <= deviceSize - offset else {
            throw .outOfBounds(what: "uncompressed blob \(entry.blobID)", offset: offset, length: length, size: deviceSize)
        }
        guard length <= ImageFile.maximumRead else {
            throw .absurdSize(what: "device read", size: length, limit: ImageFile.maximumRead)
        }
        var out = [UInt8](repeating: 0, count: count)
        let file = try ImageFile(path: path)
        for chunk in chunks(coveringUncompressed: offset, length: length) {
            let data = try readChunk(chunk, from: file)
            let from = max(offset, chunk.uncompressedOffset)
            let to = min(offset + length, chunk.uncompressedEnd)
            // One bulk copy per chunk: a per-byte loop dominates reads in debug builds.
            let source = Int(from - chunk.uncompressedOffset)
            out.replaceSubrange(Int(from - offset)..<Int(to - offset), with: data[source..<source + Int(to - from)])
        }
        return out
    }

    // MARK: Materialize

    /// What `materialize` wrote.
    public struct MaterializeReport: Equatable, Sendable {
        public var chunks: Int
        public var bytesWritten: UInt64
        public var fileSize: UInt64
    }

    /// Writes the uncompressed blob to `path` (replacing it atomically): every chunk decompressed, verified and
    /// written at its uncompressed offset; gaps stay holes of a sparse file of `deviceSize` bytes.
    @discardableResult
    public func materialize(to path: String) throws(ImageFormatError) -> MaterializeReport {
        let partial = path + ".partial"
        let fd: Int32
        do throws(SyscallError) {
            fd = try retryingSyscall("open", partial) { open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        } catch {
            throw .io(path: partial, error)
        }
        var report = MaterializeReport(chunks: 0, bytesWritten: 0, fileSize: deviceSize)
        do throws(ImageFormatError) {
            defer { close(fd) }
            do throws(SyscallError) {
                try retryingSyscall("ftruncate", partial) { ftruncate(fd, off_t(deviceSize)) }
            } catch {
                throw .io(path: partial, error)
            }
            let file = try ImageFile(path: self.path)
            for chunk in chunks {
                let data = try readChunk(chunk, from: file)
                try Self.writeAll(fd, data, at: chunk.uncompressedOffset, path: partial)
                report.chunks += 1
                report.bytesWritten += UInt64(data.count)
            }
            do throws(SyscallError) {
                try retryingSyscall("fsync", partial) { fsync(fd) }
            } catch {
                throw .io(path: partial, error)
            }
        } catch {
            unlink(partial)
            throw error
        }
        do throws(SyscallError) {
            try retryingSyscall("rename", path) { rename(partial, path) }
        } catch {
            unlink(partial)
            throw .io(path: path, error)
        }
        return report
    }

    private static func writeAll(_ fd: Int32, _ data: [UInt8], at offset: UInt64, path: String) throws(ImageFormatError) {
        do throws(SyscallError) { try FileSystem.writeAll(fd, data, at: offset, path: path) } catch { throw .io(path: path, error) }
    }
}
