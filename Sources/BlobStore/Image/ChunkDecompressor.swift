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
        switch algorithm {
        case .none:
            guard input.count == expectedSize else {
                throw .decompressionFailed(context: context(), reason: "stored size \(input.count) differs from declared \(expectedSize)")
            }
            return input
        case .lz4Block:
            return try lz4Block(input, expectedSize: expectedSize, context: context())
        case .zstd:
            return try zstd(input, expectedSize: expectedSize, context: context())
        case .gzip:
            throw .unsupportedCompression(algorithm: algorithm.rawValue, context: context())
        }
    }

    private static func lz4Block(_ input: [UInt8], expectedSize: Int, context: String) throws(ImageFormatError) -> [UInt8] {
        // LZ4's API takes int sizes.
        guard input.count <= Int(Int32.max), expectedSize <= Int(Int32.max) else {
            throw .absurdSize(what: context, size: UInt64(max(input.count, expectedSize)), limit: UInt64(Int32.max))
        }
        if expectedSize == 0 { return [] }
        var output = [UInt8](repeating: 0, count: expectedSize)
        let produced = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                source.baseAddress.map { base in
                    base.withMemoryRebound(to: CChar.self, capacity: source.count) { src in
                        target.baseAddress.map { dst in
                            dst.withMemoryRebound(to: CChar.self, capacity: target.count) { out in
                                LZ4_decompress_safe(src, out, Int32(source.count), Int32(target.count))
                            }
                        }
                    }
                } ?? -1
            } ?? -1
        }
        guard produced >= 0 else {
            throw .decompressionFailed(context: context, reason: "lz4 block is malformed or expands beyond \(expectedSize) bytes")
        }
        guard Int(produced) == expectedSize else {
            throw .decompressionFailed(context: context, reason: "lz4 produced \(produced) bytes, expected \(expectedSize)")
        }
        return output
    }

    private static func zstd(_ input: [UInt8], expectedSize: Int, context: String) throws(ImageFormatError) -> [UInt8] {
        if expectedSize == 0 && input.isEmpty { return [] }
        var output = [UInt8](repeating: 0, count: max(expectedSize, 1))
        let result = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { target in
                ZSTD_decompress(target.baseAddress, expectedSize, source.baseAddress, source.count)
            }
        }
        if ZSTD_isError(result) != 0 {
            let name = ZSTD_getErrorName(result).map { String(cString: $0) } ?? "unknown zstd error"
            throw .decompressionFailed(context: context, reason: "zstd: \(name)")
        }
        guard result == expectedSize else {
            throw .decompressionFailed(context: context, reason: "zstd produced \(result) bytes, expected \(expectedSize)")
        }
        if output.count != expectedSize { output.removeAll() }
        return output
    }
}
