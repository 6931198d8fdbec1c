import CZstd

/// Decompresses a zstd stream, including concatenated frames and skippable frames, as `zstd -d` does. A
/// stream that ends inside a frame is an error, never a short success.
public final class ZstdByteSource: ByteSource {
    private let input: ByteSource
    private let stream: OpaquePointer
    /// Stable storage for compressed input: zstd reads from it between calls.
    private let inputBuffer: UnsafeMutableRawBufferPointer
    private var inputPosition = 0
    private var inputCount = 0
    private var inputEnded = false
    /// True between frames (at the start and after a frame's last byte): the only place the stream may end.
    private var frameComplete = true
    private var finished = false

    public init(_ input: ByteSource) throws(ArchiveError) {
        self.input = input
        guard let stream = ZSTD_createDStream() else {
            throw .decompression(format: "zstd", detail: "ZSTD_createDStream failed (out of memory)")
        }
        let initialized = ZSTD_initDStream(stream)
        guard ZSTD_isError(initialized) == 0 else {
            ZSTD_freeDStream(stream)
            throw .decompression(format: "zstd", detail: Self.errorName(initialized))
        }
        self.stream = stream
        inputBuffer = .allocate(byteCount: max(ZSTD_DStreamInSize(), 64 * 1024), alignment: 16)
    }

    deinit {
        ZSTD_freeDStream(stream)
        inputBuffer.deallocate()
    }

    static func errorName(_ code: Int) -> String {
        ZSTD_getErrorName(code).map { String(cString: $0) } ?? "zstd error \(code)"
    }

    public func read(into output: UnsafeMutableRawBufferPointer) throws -> Int {
        guard output.count > 0, !finished else { return 0 }
        while true {
            if inputPosition == inputCount && !inputEnded {
                let n = try input.read(into: inputBuffer)
                if n == 0 {
                    inputEnded = true
                } else {
                    inputPosition = 0
                    inputCount = n
                }
            }
            if inputPosition == inputCount && inputEnded {
                guard frameComplete else { throw ArchiveError.truncated(detail: "the zstd stream ends inside a frame") }
                finished = true
                return 0
            }
            var source = ZSTD_inBuffer(src: inputBuffer.baseAddress, size: inputCount, pos: inputPosition)
            var target = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
            let hint = ZSTD_decompressStream(stream, &target, &source)
            guard ZSTD_isError(hint) == 0 else {
                throw ArchiveError.decompression(format: "zstd", detail: Self.errorName(hint))
            }
            inputPosition = source.pos
            // 0 means a frame was fully decoded and flushed; anything else means more input is needed.
            frameComplete = hint == 0
            if target.pos > 0 { return target.pos }
        }
    }
}
