import LinuxKernel

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Stored bytes of a blob kept whole on local disk (images converted here): the engine fills backing files
/// from it exactly as it would from a registry, chunk digests checked the same way.
public struct LocalBlobSource: BlobRangeSource {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public var identity: String { "file:" + path }

    public func read(offset: UInt64, length: UInt64) async throws -> [UInt8] {
        let path = path
        return try await runBlocking {
            let fd = try retryingSyscall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: Int(length))
            var done = 0
            while done < buffer.count {
                let n = try buffer.withUnsafeMutableBytes { raw in
                    try retryingSyscall("pread", path) { pread(fd, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done)) }
                }
                if n == 0 { break }
                done += n
            }
            return Array(buffer[0..<done])
        }
    }
}
