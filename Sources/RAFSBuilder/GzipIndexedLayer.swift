import Archive
import LinuxKernel

/// One layer of a gzip-indexed build (`BuildOptions.gzipIndexSpan`): its tar is read through a gzip inflater
/// that records checkpoints, chunks are located by their offsets in the uncompressed tar, and the checkpoints
/// become the layer's `GzipIndex`. The image so built serves a plain OCI image lazily from its own gzip layers
/// (what SOCI and nydus's zran mode do): a chunk's bytes are inflated from the checkpoint before them and
/// checked against the chunk digest the bootstrap holds.
struct GzipIndexedLayer {
    let ordinal: Int
    let path: String
    let digest: String
    private let recorder: GzipIndexRecorder
    private var source: GzipByteSource?

    /// Refuses a layer that names no digest or is not gzip.
    init(_ layer: LayerInput, ordinal: Int, span: UInt64) throws(BuildError) {
        guard let digest = layer.digest else {
            throw .invalidOptions(reason: "layer \(ordinal) names no digest; a gzip index is built only for layers of a manifest")
        }
        self.ordinal = ordinal
        path = layer.path
        self.digest = digest
        recorder = GzipIndexRecorder(span: span)
        var magic = [UInt8](repeating: 0, count: 2)
        do {
            let file = try FileByteSource(path: layer.path)
            let n = try magic.withUnsafeMutableBytes { try file.readFully(into: $0) }
            guard n == 2, magic == [0x1f, 0x8b] else {
                throw BuildError.read(layer: ordinal, path: layer.path, reason: "not gzip-compressed; only gzip layers can be indexed")
            }
        } catch let error as BuildError {
            throw error
        } catch {
            throw .read(layer: ordinal, path: layer.path, reason: "\(error)")
        }
    }

    /// The layer's tar, read through the recording inflater.
    mutating func reader(maximumEntrySize: Int64) throws -> TarReader {
        let source = try GzipByteSource(FileByteSource(path: path), recording: recorder)
        self.source = source
        return TarReader(source, maximumEntrySize: maximumEntrySize)
    }

    /// Where the entry's next data bytes lie in the uncompressed tar; refuses a sparse entry, whose data is
    /// not one run of the tar.
    func dataOffset(of reader: TarReader, path entryPath: String) throws(BuildError) -> UInt64 {
        guard let offset = reader.dataOffset else {
            throw .unsafeEntry(
                layer: ordinal, path: entryPath,
                reason: "a sparse file cannot be served from a gzip index (its data is not one run of the tar); convert the image instead")
        }
        return UInt64(offset)
    }

    /// Reads the rest of the stream (the tar's end blocks and padding, the gzip trailer, checked by zlib) and
    /// returns the layer's index.
    func finish() throws(BuildError) -> GzipIndex {
        do {
            var scratch = [UInt8](repeating: 0, count: 64 << 10)
            while let source, try scratch.withUnsafeMutableBytes({ try source.read(into: $0) }) > 0 {}
            return try recorder.finish()
        } catch let error as ArchiveError {
            throw .layer(index: ordinal, path: path, error)
        } catch {
            throw .read(layer: ordinal, path: path, reason: "\(error)")
        }
    }

    /// Writes the encoded index as `<blob>.gzidx`; returns its path.
    static func write(_ index: GzipIndex, beside blob: String) throws(BuildError) -> String {
        let path = blob + ".gzidx"
        do throws(SyscallError) {
            try FileSystem.writeFileAtomically(path, index.encoded())
        } catch {
            throw .io(path: path, error)
        }
        return path
    }
}
