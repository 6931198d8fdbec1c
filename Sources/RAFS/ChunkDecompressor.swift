import CLZ4
import CZstd

/// One-shot decompression of nydus chunks and blob meta. The output buffer is exactly the size the
/// metadata declares, and a result of any other size is an error: a compression bomb can never grow
/// past the declared size, and short output is never taken for data.
public enum ChunkDecompressor {
    /// Decompresses `input` that must expand to exactly `expectedSize` bytes.
    public static func decompress(
        _ input: [UInt8], algorithm: RafsBlobEntry.Compression, expectedSize: Int,
        context: @autoclosure () -> String
    ) throws(ImageFormatError) -> [UInt8] {
        guard expectedSize >= 0, UInt64(expectedSize) <= ImageFile.maximumRead else {
            throw .absurdSize(what: context(), size: UInt64(max(0, expectedSize)), limit: ImageFile.maximumRead)
        }
        if algorithm == .none {
            try checkUncompressed(storedCount: input.count, expectedSize: expectedSize, context: context())
            return input
        }
        var output = [UInt8](repeating: 0, count: expectedSize)
        let failure = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { target -> ImageFormatError? in
                do throws(ImageFormatError) {
                    try decompress(source, algorithm: algorithm, into: target, context: context())
                    return nil
                } catch {
                    return error
                }
            }
        }
        if let failure { throw failure }
        return output
    }

    /// Decompresses `input` into `output`, which it must fill exactly (`output.count` is the declared size):
    /// the form the fetch engine uses, with buffers it reuses from chunk to chunk.
    public static func decompress(
        _ input: UnsafeRawBufferPointer, algorithm: RafsBlobEntry.Compression, into output: UnsafeMutableRawBufferPointer,
        context: @autoclosure () -> String
    ) throws(ImageFormatError) {
        let expectedSize = output.count
        guard UInt64(expectedSize) <= ImageFile.maximumRead else {
            throw .absurdSize(what: context(), size: UInt64(expectedSize), limit: ImageFile.maximumRead)
        }
        switch algorithm {
        case .none:
            try checkUncompressed(storedCount: input.count, expectedSize: expectedSize, context: context())
            if expectedSize > 0 { output.copyMemory(from: input) }
        case .lz4Block:
            try lz4Block(input, into: output, context: context())
        case .zstd:
            try zstd(input, into: output, context: context())
        case .gzip:
            throw .unsupportedCompression(algorithm: algorithm.rawValue, context: context())
        }
    }

    /// Uncompressed stored bytes are the data itself: there must be exactly the declared size of them.
    static func checkUncompressed(storedCount: Int, expectedSize: Int, context: @autoclosure () -> String) throws(ImageFormatError) {
        guard storedCount == expectedSize else {
            throw .decompressionFailed(context: context(), reason: "stored size \(storedCount) differs from declared \(expectedSize)")
        }
    }

    private static func lz4Block(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, context: String
    ) throws(ImageFormatError) {
        let expectedSize = output.count
        // LZ4's API takes int sizes.
        guard input.count <= Int(Int32.max), expectedSize <= Int(Int32.max) else {
            throw .absurdSize(what: context, size: UInt64(max(input.count, expectedSize)), limit: UInt64(Int32.max))
        }
        if expectedSize == 0 { return }
        guard let source = input.baseAddress, let target = output.baseAddress else {
            throw .decompressionFailed(context: context, reason: "lz4 block is empty, expected \(expectedSize) bytes")
        }
        let produced = LZ4_decompress_safe(
            source.assumingMemoryBound(to: CChar.self), target.assumingMemoryBound(to: CChar.self), Int32(input.count),
            Int32(expectedSize))
        guard produced >= 0 else {
            throw .decompressionFailed(context: context, reason: "lz4 block is malformed or expands beyond \(expectedSize) bytes")
        }
        guard Int(produced) == expectedSize else {
            throw .decompressionFailed(context: context, reason: "lz4 produced \(produced) bytes, expected \(expectedSize)")
        }
    }

    private static func zstd(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, context: String
    ) throws(ImageFormatError) {
        let expectedSize = output.count
        if expectedSize == 0 && input.isEmpty { return }
        // zstd wants a destination address even for an empty frame (with no room in it).
        var spare: UInt8 = 0
        let result = withUnsafeMutableBytes(of: &spare) { spareBytes in
            ZSTD_decompress(output.baseAddress ?? spareBytes.baseAddress, expectedSize, input.baseAddress, input.count)
        }
        if ZSTD_isError(result) != 0 {
            let name = ZSTD_getErrorName(result).map { String(cString: $0) } ?? "unknown zstd error"
            throw .decompressionFailed(context: context, reason: "zstd: \(name)")
        }
        guard result == expectedSize else {
            throw .decompressionFailed(context: context, reason: "zstd produced \(result) bytes, expected \(expectedSize)")
        }
    }
}
