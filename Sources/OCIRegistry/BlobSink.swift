import CLinux
import LinuxKernel
import OCI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Receives a blob body: writes it to a file at the running offset, hashes it, and counts it.
///
/// Survives retries: a resumed transfer asks for `Range: bytes=<written>-` and appends; a server that ignores
/// the range and answers 200 has its first `written` bytes discarded (`skipRemaining`).
///
/// `@unchecked Sendable`: one sink is used by one transfer thread at a time. The downloading task creates it,
/// hands it to a transfer thread, and only touches it again after awaiting that transfer's completion, which
/// orders every access (the continuation resume is the synchronisation point).
final class BlobSink: BodySink, @unchecked Sendable {
    let path: String
    /// Hashing and writing happen on other threads (`PipelinedBlobWriter`): the transfer thread only copies.
    private let writer: PipelinedBlobWriter
    private(set) var written: Int64 = 0
    var skipRemaining: Int64 = 0
    let expectedSize: Int64?
    private(set) var failure: RegistryError?

    init(path: String, expectedSize: Int64?) throws(RegistryError) {
        self.path = path
        self.expectedSize = expectedSize
        do { writer = try PipelinedBlobWriter(path: path, expectedSize: expectedSize) } catch {
            throw .writing(path, error)
        }
    }

    var delivered: Int64 { written }

    /// A resumed attempt asks for the rest of the blob.
    var rangeHeader: String? { written > 0 ? "bytes=\(written)-" : nil }

    /// Called with the status and `Content-Range` of an attempt before its first body byte. A resumed attempt
    /// (`written > 0`) needs a 206 starting at `written`, or a 200 whose first `written` bytes are skipped.
    func start(status: Int, contentRange: String?) -> Bool {
        skipRemaining = 0
        guard written > 0 else { return true }
        if status == 200 {
            skipRemaining = written
            return true
        }
        let start = contentRange.flatMap { range -> Int64? in
            guard range.hasPrefix("bytes ") else { return nil }
            return Int64(range.dropFirst("bytes ".count).prefix { $0.isNumber })
        }
        guard status == 206, start == written else {
            failure = .unexpectedStatus(url: path, method: "GET", status: status, errors: [])
            return false
        }
        return true
    }

    /// Consumes one chunk from the write callback; returns false to abort the transfer.
    func consume(_ chunk: UnsafeRawBufferPointer) -> Bool {
        var data = chunk
        if skipRemaining > 0 {
            let skip = Int(min(Int64(data.count), skipRemaining))
            skipRemaining -= Int64(skip)
            data = UnsafeRawBufferPointer(rebasing: data[skip...])
            if data.isEmpty { return true }
        }
        if let expectedSize, written + Int64(data.count) > expectedSize {
            failure = .sizeMismatch(url: path, expected: expectedSize, found: written + Int64(data.count))
            return false
        }
        do { try writer.append(data) } catch {
            failure = .writing(path, error)
            return false
        }
        written += Int64(data.count)
        return true
    }

    /// Flushes the file to disk and returns the digest of everything written.
    func finish() throws(RegistryError) -> Digest {
        do { return Digest(sha256: try writer.finish()) } catch { throw .writing(path, error) }
    }
}
