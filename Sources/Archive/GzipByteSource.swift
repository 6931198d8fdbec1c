import CZlib

/// Inflates a gzip stream, including concatenated members, as `gzip -d` does (trailing zero padding after
/// the last member is ignored). A stream that ends inside a member is an error, never a short success.
public final class GzipByteSource: ByteSource {
    private let input: ByteSource
    private var stream = z_stream()
    /// Stable storage for compressed input: zlib keeps pointers into it between calls.
    private let inputBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 * 1024, alignment: 16)
    private var inputEnded = false
    private var betweenMembers = false
    private var finished = false
    /// Records checkpoints at deflate block boundaries when set (inflating then stops at each boundary).
    private let recorder: GzipIndexRecorder?

    public init(_ input: ByteSource, recording recorder: GzipIndexRecorder? = nil) throws(ArchiveError) {
        self.input = input
        self.recorder = recorder
        let code = czlib_inflate_init_gzip(&stream)
        guard code == Z_OK else {
            inputBuffer.deallocate()
            throw .decompression(format: "gzip", detail: "inflateInit2 failed (\(code))")
        }
    }

    deinit {
        inflateEnd(&stream)
        inputBuffer.deallocate()
    }

    public func read(into output: UnsafeMutableRawBufferPointer) throws -> Int {
        guard output.count > 0, let outputBase = output.baseAddress else { return 0 }
        while !finished {
            if stream.avail_in == 0 && !inputEnded {
                let n = try input.read(into: inputBuffer)
                if n == 0 {
                    inputEnded = true
                } else {
                    stream.next_in = inputBuffer.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    stream.avail_in = UInt32(n)
                }
            }
            if stream.avail_in == 0 && inputEnded {
                if betweenMembers {
                    finished = true
                    return 0
                }
                throw ArchiveError.truncated(detail: "the gzip stream ends inside a member")
            }
            if betweenMembers, let next = stream.next_in, next.pointee != 0x1f {
                // Not another gzip member: padding after the last one, as gzip -d tolerates.
                finished = true
                return 0
            }
            stream.next_out = outputBase.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = UInt32(output.count)
            let code = inflate(&stream, recorder == nil ? Z_NO_FLUSH : Z_BLOCK)
            let produced = output.count - Int(stream.avail_out)
            switch code {
            case Z_OK, Z_BUF_ERROR:
                betweenMembers = false
                record()
            case Z_STREAM_END:
                recorder?.memberEnded(compressed: UInt64(stream.total_in), uncompressed: UInt64(stream.total_out))
                betweenMembers = true
                inflateReset(&stream)
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "zlib code \(code)"
                throw ArchiveError.decompression(format: "gzip", detail: message)
            }
            if produced > 0 { return produced }
        }
        return 0
    }

    /// At a block boundary that is not the end of the last block (zlib sets bit 7 of `data_type` there, bit 6
    /// while in the last block, and the low bits to the unused bits of the last input byte), hands the
    /// recorder the position and, when it takes a checkpoint, the window.
    private func record() {
        guard let recorder, stream.data_type & 128 != 0, stream.data_type & 64 == 0 else { return }
        recorder.boundary(compressed: UInt64(stream.total_in), uncompressed: UInt64(stream.total_out), bits: UInt8(stream.data_type & 7)) {
            var window = [UInt8](repeating: 0, count: GzipIndex.windowSize)
            var length: UInt32 = 0
            let code = window.withUnsafeMutableBufferPointer { inflateGetDictionary(&stream, $0.baseAddress, &length) }
            return code == Z_OK ? Array(window[0..<Int(length)]) : []
        }
    }
}
