import LinuxKernel
import Logging
import RAFS
import Synchronization

extension BlobEngine {
    /// What streaming a run from the blob's sources did.
    struct RunOutcome {
        /// Chunks of the run written, from its start.
        var decoded = 0
        var received: UInt64 = 0
        var failure: (any Error)?
        /// Index (in the blob's source list) of the source that failed last.
        var failedSource = 0
        /// The last source's decoder: its timings are the fetch's.
        var decoder: RunDecoder
    }

    /// Streams `chunks` from `sources` (the blob's, in order of preference: its images' registries, or a local
    /// copy), each with one ranged GET: a source that fails (unreachable, or bytes that do not verify) hands what
    /// it did not deliver to the next one. A full disk stops at once: no source can help it.
    func stream(
        _ chunks: ArraySlice<BlobChunkInfo>, of blob: LazyBlob, from sources: ArraySlice<any BlobRangeSource>,
        priority: FetchScheduler.Priority, chunkReady: @escaping @Sendable (BlobChunkInfo) -> Void
    ) async -> RunOutcome {
        var outcome = RunOutcome(decoder: RunDecoder(blob: blob, chunks: Array(chunks), chunkReady: chunkReady))
        for index in sources.indices {
            let remaining = Array(chunks.dropFirst(outcome.decoded))
            if index > sources.startIndex { outcome.decoder = RunDecoder(blob: blob, chunks: remaining, chunkReady: chunkReady) }
            let decoder = outcome.decoder
            let offset = remaining[0].compressedOffset
            let bytes = remaining[remaining.count - 1].compressedEnd - offset
            do {
                try await sources[index].stream(offset: offset, length: bytes, background: priority == .background, into: decoder)
                if decoder.decoded < remaining.count {
                    throw BlobStoreError.shortRead(blob: blob.id, offset: offset, expected: bytes, got: Int(decoder.received))
                }
                outcome.failure = nil
            } catch {
                outcome.failure = error
                outcome.failedSource = index
            }
            outcome.decoded += decoder.decoded
            outcome.received += decoder.received
            guard let error = outcome.failure else {
                if index > 0 { blob.prefer(sources[index]) }
                break
            }
            if SyscallError.isNoSpace(error) { break }
            if index + 1 < sources.endIndex {
                logger.warning(
                    "fetch failed; trying the blob's next source",
                    metadata: ["blob.id": "\(blob.id)", "fetch.decoded": "\(outcome.decoded)", "error": "\(error)"])
            }
        }
        return outcome
    }
}

/// Resumes a continuation exactly once, whichever of several racers comes first.
final class ResumeOnce<Value: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Value, any Error>?>

    init(_ continuation: CheckedContinuation<Value, any Error>) {
        self.continuation = Mutex(continuation)
    }

    /// Whether this call resumed it (false: another racer came first).
    @discardableResult
    func resume(_ result: Result<Value, any Error>) -> Bool {
        let taken = continuation.withLock { value -> CheckedContinuation<Value, any Error>? in
            defer { value = nil }
            return value
        }
        taken?.resume(with: result)
        return taken != nil
    }
}
