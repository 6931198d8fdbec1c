import CLZ4
import CZstd

/// One-shot compression of chunks and blob meta. A compressor owns a zstd context, reused for every chunk it
/// compresses (creating one per chunk costs more than compressing a small file); use one per thread.
final class ChunkCompressor {
    let algorithm: ChunkCompression
    let level: Int32
    private let context: OpaquePointer?

    init(algorithm: ChunkCompression, level: Int) throws(BuildError) {
        self.algorithm = algorithm
        self.level = Int32(level)
        if algorithm == .zstd {
            guard let context = ZSTD_createCCtx() else { throw .compressionFailed(reason: "ZSTD_createCCtx failed (out of memory)") }
            self.context = context
        } else {
            context = nil
        }
    }

    deinit { if let context { ZSTD_freeCCtx(context) } }

    /// The compressed form of `input`, or nil when compression would not make it smaller (the chunk is then
    /// stored as is, as nydus does: a v1 chunk is "compressed" exactly when its two sizes differ).
    func compress(_ input: UnsafeRawBufferPointer) throws(BuildError) -> [UInt8]? {
        guard input.count > 0, let source = input.baseAddress else { return nil }
        switch algorithm {
        case .none:
            return nil
        case .zstd:
            let bound = ZSTD_compressBound(input.count)
            var output = [UInt8](repeating: 0, count: bound)
            let written = output.withUnsafeMutableBytes { target in
                ZSTD_compressCCtx(context, target.baseAddress, bound, source, input.count, level)
            }
            if ZSTD_isError(written) != 0 {
                throw .compressionFailed(reason: ZSTD_getErrorName(written).map { String(cString: $0) } ?? "zstd error")
            }
            guard written < input.count else { return nil }
            output.removeLast(bound - written)
            return output
        case .lz4:
            guard input.count <= Int(LZ4_MAX_INPUT_SIZE) else {
                throw .compressionFailed(reason: "\(input.count) bytes is over LZ4's limit")
            }
            let bound = Int(LZ4_compressBound(Int32(input.count)))
            var output = [UInt8](repeating: 0, count: bound)
            let written = output.withUnsafeMutableBytes { target in
                LZ4_compress_default(
                    source.assumingMemoryBound(to: CChar.self), target.baseAddress?.assumingMemoryBound(to: CChar.self),
                    Int32(input.count), Int32(bound))
            }
            guard written > 0 else { throw .compressionFailed(reason: "LZ4_compress_default returned \(written)") }
            guard Int(written) < input.count else { return nil }
            output.removeLast(bound - Int(written))
            return output
        }
    }
}
