import CLinux
import Dispatch
import SystemSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Hashes a file that is being written, on a serial queue of its own: the writer reports how far the file is
/// written (`advance(to:)`) and the hasher reads each new stretch back (from the page cache) and hashes it.
/// The digest so costs the download no time on a machine with a core to spare, where hashing inline in the
/// receive callback would slow every transfer by the hash's own speed. Each hashed stretch is also handed to
/// writeback (`sync_file_range`, not waiting), off the receive path too: disk writes overlap the download and
/// the final fsync finds little left to do.
///
/// `@unchecked Sendable`: `hasher`, `hashed`, `writebackStart` and `failure` are touched only by blocks on `queue` (serial) and
/// by `finish()` after `queue.sync`, which orders every access; `requested` only by the single writer.
final class FileFollowingHasher: @unchecked Sendable {
    /// Stretches are handed to the queue once this many new bytes are written.
    static let stepBytes: Int64 = 4 << 20
    private static let readBytes = 1 << 20

    private let fd: Int32
    private let path: String
    private let queue = DispatchQueue(label: "blob.hasher", qos: .userInitiated)
    private var hasher = SHA256()
    private var hashed: Int64 = 0
    private var writebackStart: Int64 = 0
    private var requested: Int64 = 0
    private var failure: SyscallError?

    /// `fd` must stay open, and readable, until `finish()` returns.
    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// The file now holds valid bytes up to `end`.
    func advance(to end: Int64) {
        guard end - requested >= Self.stepBytes else { return }
        requested = end
        queue.async { self.hash(upTo: end) }
    }

    /// Hashes what is left up to `end` and returns the digest of `[0, end)`.
    func finish(at end: Int64) throws(SyscallError) -> [UInt8] {
        queue.sync { hash(upTo: end) }
        if let failure { throw failure }
        return hasher.finalize()
    }

    /// Starts hashing whatever is written up to `end` without waiting (e.g. while the writer fsyncs).
    func flush(to end: Int64) {
        guard end > requested else { return }
        requested = end
        queue.async { self.hash(upTo: end) }
    }

    private func hash(upTo end: Int64) {
        guard failure == nil else { return }
        var buffer = [UInt8](repeating: 0, count: Self.readBytes)
        while hashed < end {
            let want = Int(min(Int64(buffer.count), end - hashed))
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(hashed)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                failure = SyscallError(call: "pread", errno: n < 0 ? errno : EIO, subject: path)
                return
            }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            hashed += Int64(n)
        }
        _ = clinux_start_writeback(fd, writebackStart, hashed - writebackStart)
        writebackStart = hashed
    }
}
