import Archive
import LinuxKernel
import Logging
import RAFS

/// Builds a nydus RAFS v6 image from OCI layer tars (plain, gzip or zstd), streamed, never extracted: one
/// bootstrap for the merged layers and one data blob per layer that contributes chunks.
///
/// The output is deterministic: entries are sorted, timestamps come only from the tars, and blobs are
/// named by their sha256. Chunks are deduplicated within and across layers by sha256 of their data.
public struct ImageBuilder: Sendable {
    public let options: BuildOptions
    public let logger: Logger?

    /// File name of the bootstrap inside the output directory (nydus's name inside its bootstrap layer).
    public static let bootstrapName = "image.boot"

    public init(options: BuildOptions = BuildOptions(), logger: Logger? = nil) {
        self.options = options
        self.logger = logger
    }

    /// Builds `layers` (bottom first) into `outputDirectory` (created if missing): `image.boot` plus blobs
    /// named by blob id. A layer whose chunks all exist in earlier blobs, or that has no file data, gets no
    /// blob (nydus omits empty blobs); the result lists blobs in device-table order.
    public func build(
        layers: [LayerInput], outputDirectory: String, progress: (@Sendable (BuildProgress) -> Void)? = nil
    ) throws(BuildError) -> BuildResult {
        try options.validate()
        var options = options
        if options.gzipIndexSpan != nil { options.compression = .none }
        do throws(SyscallError) { try FileSystem.makeDirectories(outputDirectory) } catch { throw .io(path: outputDirectory, error) }
        let tree = MergedTree(options: options)
        let pipeline = try ChunkPipeline(options: options)
        var writers: [BlobWriter] = []
        var fileBytes: UInt64 = 0
        var report = BuildProgress(phase: .layer, layer: 0, layerCount: layers.count, entries: 0, bytes: 0)
        var buffer = [UInt8]()
        var indexes: [Int: GzipIndex] = [:]

        for (index, layer) in layers.enumerated() {
            report.layer = index
            progress?(report)
            var indexed = try options.gzipIndexSpan.map { (span) throws(BuildError) in
                try GzipIndexedLayer(layer, ordinal: index, span: span)
            }
            let writer = try BlobWriter(
                ordinal: index, directory: outputDirectory, compression: options.compression, level: options.zstdLevel,
                storedElsewhere: indexed?.digest)
            let reader: TarReader
            do {
                reader =
                    try indexed?.reader(maximumEntrySize: options.maximumFileSize)
                    ?? TarReader.open(path: layer.path, maximumEntrySize: options.maximumFileSize)
            } catch {
                throw Self.wrap(error, layer: index, path: layer.path)
            }
            while true {
                let entry: TarEntry?
                do { entry = try reader.next() } catch { throw Self.wrap(error, layer: index, path: layer.path) }
                guard let entry else { break }
                report.entries += 1
                guard let inode = try tree.apply(entry, layer: index) else { continue }
                // Regular file data, chunk by chunk.
                let chunkSize = UInt64(options.chunkSize)
                let count = Int((inode.size + chunkSize - 1) / chunkSize)
                inode.chunks = [ChunkLocation](repeating: ChunkLocation(blob: -1, index: 0, uncompressedOffset: 0), count: count)
                var offset: UInt64 = 0
                for position in 0..<count {
                    let length = Int(min(chunkSize, inode.size - offset))
                    buffer = [UInt8](repeating: 0, count: length)
                    let storedAt = try indexed?.dataOffset(of: reader, path: entry.path)
                    try fill(&buffer, from: reader, layer: index, path: layer.path)
                    try pipeline.add(buffer, inode: inode, position: position, fileOffset: offset, storedAt: storedAt, blob: writer)
                    offset += UInt64(length)
                }
                fileBytes += inode.size
                report.bytes = fileBytes
                if report.entries % 4096 == 0 { progress?(report) }
            }
            try pipeline.flush(into: writer)
            if let indexed { indexes[index] = try indexed.finish() }
            writers.append(writer)
            logger?.debug("layer read", metadata: ["layer.index": "\(index)", "layer.chunks": "\(writer.chunkCount)"])
        }

        report.phase = .blob
        report.layer = layers.count
        progress?(report)
        var finished: [(summary: BlobSummary, writer: BlobWriter)] = []
        var built: [BuiltBlob] = []
        var tableIndex: [Int: UInt32] = [:]
        for writer in writers {
            let gzipIndex = indexes[writer.ordinal]
            guard
                let (summary, path) = try writer.finish(
                    directory: outputDirectory, sync: options.syncOutput, storedSize: gzipIndex?.uncompressedSize)
            else { continue }
            tableIndex[writer.ordinal] = UInt32(finished.count)
            finished.append((summary, writer))
            var blob = BuiltBlob(
                blobID: summary.blobID, path: path, layer: writer.ordinal, compressedSize: summary.compressedSize,
                uncompressedSize: summary.uncompressedSize, chunkCount: Int(summary.chunkCount))
            if let gzipIndex {
                blob.gzipIndexPath = try GzipIndexedLayer.write(gzipIndex, beside: path)
                blob.layerDigest = writer.storedElsewhere
                blob.metaStart = summary.metaOffset
            }
            built.append(blob)
        }

        report.phase = .bootstrap
        progress?(report)
        let bytes = try BootstrapWriter(options: options, logger: logger).encode(root: tree.root, blobs: finished, tableIndex: tableIndex)
        let bootstrapPath = outputDirectory + "/" + Self.bootstrapName
        do throws(SyscallError) {
            try FileSystem.writeFileAtomically(bootstrapPath, bytes)
        } catch {
            throw .io(path: bootstrapPath, error)
        }
        report.phase = .done
        progress?(report)
        logger?.info(
            "image built",
            metadata: [
                "image.blobs": "\(built.count)", "image.inodes": "\(tree.entryCount)", "image.deduped": "\(pipeline.dedupedChunks)",
            ])
        return BuildResult(
            bootstrapPath: bootstrapPath, blobs: built, inodeCount: tree.entryCount, dedupedChunks: pipeline.dedupedChunks,
            fileBytes: fileBytes)
    }

    private func fill(_ buffer: inout [UInt8], from reader: TarReader, layer: Int, path: String) throws(BuildError) {
        do {
            try buffer.withUnsafeMutableBytes { raw in
                var filled = 0
                while filled < raw.count {
                    let n = try reader.readData(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
                    guard n > 0 else { throw ArchiveError.truncated(detail: "the archive ends inside a file's data") }
                    filled += n
                }
            }
        } catch {
            throw Self.wrap(error, layer: layer, path: path)
        }
    }

    private static func wrap(_ error: any Error, layer: Int, path: String) -> BuildError {
        if let error = error as? BuildError { return error }
        if let error = error as? ArchiveError { return .layer(index: layer, path: path, error) }
        if let error = error as? SyscallError { return .io(path: path, error) }
        return .read(layer: layer, path: path, reason: "\(error)")
    }
}
