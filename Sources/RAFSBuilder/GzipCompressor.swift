import CZlib

/// One-shot gzip of an in-memory buffer (the bootstrap layer). zlib writes a zero mtime and no name in the
/// gzip header, so the same input always gives the same bytes.
enum GzipCompressor {
    static func compress(_ input: [UInt8], level: Int32 = 6) throws(BuildError) -> [UInt8] {
        var stream = z_stream()
        guard czlib_deflate_init_gzip(&stream, level) == Z_OK else { throw .compressionFailed(reason: "deflateInit2 failed") }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, uLong(input.count))) + 64
        var output = [UInt8](repeating: 0, count: bound)
        var input = input
        let code = input.withUnsafeMutableBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                stream.next_in = source.baseAddress
                stream.avail_in = uInt(source.count)
                stream.next_out = target.baseAddress
                stream.avail_out = uInt(target.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard code == Z_STREAM_END else { throw .compressionFailed(reason: "deflate returned \(code)") }
        output.removeLast(bound - Int(stream.total_out))
        return output
    }
}
