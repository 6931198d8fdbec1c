import Synchronization
import SystemSupport

/// Decodes a run of chunks that are contiguous in the stored blob while its bytes stream in: as soon as a
/// chunk's last stored byte has arrived it is decompressed, checked against its digest, written at its
/// uncompressed offset and reported to `chunkReady`. Readers of a long fetch's first chunks so wait for
/// those chunks only, not for the whole GET.
final class RunDecoder: StoredBytesConsumer {
    private struct State {
        /// Stored bytes received and not yet decoded (less than one chunk, between calls).
        var pending: [UInt8] = []
        /// Index into `chunks` of the next chunk to decode.
        var next = 0
        var received: UInt64 = 0
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

    /// `chunks` in stored order, each starting where the previous one ends.
    init(blob: LazyBlob, chunks: [BlobChunkInfo], chunkReady: @escaping @Sendable (BlobChunkInfo) -> Void) {
        self.blob = blob
        self.chunks = chunks
        self.chunkReady = chunkReady
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

    func receive(_ bytes: UnsafeRawBufferPointer) throws {
        let entered = monotonicNanoseconds()
        try state.withLock { state in
            defer { state.busy += monotonicNanoseconds() - entered }
            if state.firstByteAt == 0 { state.firstByteAt = entered }
            state.pending.append(contentsOf: bytes)
            state.received += UInt64(bytes.count)
            var consumed = 0
            while state.next < chunks.count {
                let chunk = chunks[state.next]
                let size = Int(chunk.compressedSize)
                guard state.pending.count - consumed >= size else { break }
                let data = try blob.rafs.decodeChunk(chunk, stored: Array(state.pending[consumed..<(consumed + size)]))
                let writeStart = monotonicNanoseconds()
                try blob.write(data, at: chunk.uncompressedOffset)
                state.writing += monotonicNanoseconds() - writeStart
                consumed += size
                state.next += 1
                chunkReady(chunk)
            }
            if consumed > 0 { state.pending.removeFirst(consumed) }
        }
    }
}
