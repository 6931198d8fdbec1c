import LinuxKernel
import RAFS
import Synchronization

/// Decodes a run of chunks that are contiguous in the stored blob while its bytes stream in: as soon as a
/// chunk's last stored byte has arrived it is decompressed, checked against its digest, written at its
/// uncompressed offset and reported to `chunkReady`. Readers of a long fetch's first chunks so wait for
/// those chunks only, not for the whole GET.
final class RunDecoder: StoredBytesConsumer {
    private struct State {
        /// The stored bytes of the chunk being received, when it spans pieces (`filled` of them so far).
        var stored: [UInt8] = []
        var filled = 0
        /// Where compressed chunks are decompressed to; reused from chunk to chunk.
        var scratch: [UInt8] = []
        /// Index into `chunks` of the next chunk to decode.
        var next = 0
        var received: UInt64 = 0
        /// Stored offset of the next byte to arrive.
        var position: UInt64 = 0
        /// When the first stored byte arrived (monotonic ns), 0 before.
        var firstByteAt: UInt64 = 0
        /// Nanoseconds spent taking pieces in (copying, decompressing, verifying, writing), and writing alone.
        var busy: UInt64 = 0
        var writing: UInt64 = 0
    }

    private let blob: LazyBlob
    let chunks: [BlobChunkInfo]
    private let chunkReady: @Sendable (BlobChunkInfo) -> Void
    private let state = Mutex(State())
    /// Buffer sizes: the run's largest stored chunk, and its largest compressed chunk once decompressed.
    private let storedCapacity: Int
    private let scratchCapacity: Int

    /// `chunks` in stored order, each starting at or after the end of the previous one (bytes between them are
    /// dropped); the bytes to come start at the first chunk's stored offset.
    init(blob: LazyBlob, chunks: [BlobChunkInfo], chunkReady: @escaping @Sendable (BlobChunkInfo) -> Void) {
        self.blob = blob
        self.chunks = chunks
        self.chunkReady = chunkReady
        state.withLock { $0.position = chunks.first?.compressedOffset ?? 0 }
        storedCapacity = chunks.map { Int($0.compressedSize) }.max() ?? 0
        scratchCapacity = chunks.filter(\.isCompressed).map { Int($0.uncompressedSize) }.max() ?? 0
    }

    /// Chunks decoded and written so far.
    var decoded: Int { state.withLock { $0.next } }
    /// Stored bytes received so far.
    var received: UInt64 { state.withLock { $0.received } }
    /// When the first stored byte arrived (monotonic nanoseconds), 0 if none did.
    var firstByteAt: UInt64 { state.withLock { $0.firstByteAt } }
    /// Nanoseconds the transfer thread spent in `receive`, and in writing chunks alone (debug figures: on
    /// these machines the page-cache write of a fresh chunk costs more than its digest).
    var busyTime: (total: UInt64, writing: UInt64) { state.withLock { ($0.busy, $0.writing) } }

    /// Takes the next piece: a chunk that lies whole inside it is decoded where it lies; one that spans pieces
    /// is gathered first (one copy). Bytes past the run's last chunk are counted and dropped.
    func receive(_ bytes: UnsafeRawBufferPointer) throws {
        let entered = monotonicNanoseconds()
        try state.withLock { state in
            defer { state.busy += monotonicNanoseconds() - entered }
            if state.firstByteAt == 0 { state.firstByteAt = entered }
            state.received += UInt64(bytes.count)
            // The buffers leave the state while in use (arrays: moved, not copied) and go back afterwards.
            var stored = state.stored
            var scratch = state.scratch
            var filled = state.filled
            state.stored = []
            state.scratch = []
            defer {
                state.stored = stored
                state.scratch = scratch
                state.filled = filled
            }
            var rest = bytes
            while state.next < chunks.count {
                let chunk = chunks[state.next]
                let size = Int(chunk.compressedSize)
                // Bytes before the chunk (a gap the run steps over) are dropped.
                if filled == 0, chunk.compressedOffset > state.position {
                    let skip = Int(min(chunk.compressedOffset - state.position, UInt64(rest.count)))
                    rest = UnsafeRawBufferPointer(rebasing: rest[skip...])
                    state.position += UInt64(skip)
                    if chunk.compressedOffset > state.position { break }
                }
                if chunk.isCompressed, scratch.isEmpty { scratch = [UInt8](repeating: 0, count: scratchCapacity) }
                if filled == 0, rest.count >= size {
                    let piece = UnsafeRawBufferPointer(rebasing: rest[0..<size])
                    state.writing += try scratch.withUnsafeMutableBytes { try decode(chunk, stored: piece, scratch: $0) }
                    state.next += 1
                    state.position += UInt64(size)
                    rest = UnsafeRawBufferPointer(rebasing: rest[size...])
                    continue
                }
                guard !rest.isEmpty else { break }
                if stored.isEmpty { stored = [UInt8](repeating: 0, count: storedCapacity) }
                let take = min(size - filled, rest.count)
                stored.withUnsafeMutableBytes { buffer in
                    UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + take)])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: rest[0..<take]))
                }
                filled += take
                state.position += UInt64(take)
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                if filled == size {
                    filled = 0
                    state.writing += try stored.withUnsafeBytes { gathered in
                        try scratch.withUnsafeMutableBytes {
                            try decode(chunk, stored: UnsafeRawBufferPointer(rebasing: gathered[0..<size]), scratch: $0)
                        }
                    }
                    state.next += 1
                }
            }
        }
    }

    /// Decompresses and verifies a chunk, writes it at its uncompressed offset and reports it; returns the
    /// nanoseconds the write took.
    private func decode(_ chunk: BlobChunkInfo, stored: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer) throws -> UInt64 {
        let writing = try blob.rafs.withDecodedChunk(chunk, stored: stored, scratch: scratch) { data in
            let writeStart = monotonicNanoseconds()
            try blob.write(data, at: chunk.uncompressedOffset)
            return monotonicNanoseconds() - writeStart
        }
        chunkReady(chunk)
        return writing
    }
}
