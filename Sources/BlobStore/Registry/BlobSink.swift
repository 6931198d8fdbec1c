import CLinux
import SystemSupport

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
    let fd: Int32
    /// The digest is computed on another core, reading back what was written, and writeback is started there
    /// as the file grows, so the final fsync has little left to wait for.
    private let hasher: FileFollowingHasher
    private(set) var written: Int64 = 0
    var skipRemaining: Int64 = 0
    let expectedSize: Int64?
    private(set) var failure: RegistryError?

    init(path: String, expectedSize: Int64?) throws(RegistryError) {
        self.path = path
        self.expectedSize = expectedSize
        do {
            fd = try retryingSyscall("open", path) { open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        } catch { throw .io(path: path, reason: error.description) }
        hasher = FileFollowingHasher(fd: fd, path: path)
    }

    deinit { close(fd) }

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
        var done = 0
        while done < data.count {
            let n = pwrite(fd, data.baseAddress! + done, data.count - done, off_t(written) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                failure = .io(path: path, reason: SyscallError(call: "pwrite", errno: errno).description)
                return false
            }
            done += n
        }
        written += Int64(data.count)
        hasher.advance(to: written)
        return true
    }

    /// Flushes the file to disk and returns the digest of everything written.
    func finish() throws(RegistryError) -> Digest {
        hasher.flush(to: written)
        do { try retryingSyscall("fsync", path) { fsync(fd) } } catch { throw .io(path: path, reason: error.description) }
        do {
            return Digest(sha256: try hasher.finish(at: written))
        } catch {
            throw .io(path: path, reason: error.description)
        }
    }
}
