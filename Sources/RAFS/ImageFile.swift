import LinuxKernel

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One read-only file (a bootstrap or a blob) read with pread(2) through a single descriptor. Every read is
/// checked against the size the file had when opened, so a corrupt offset yields `outOfBounds`, never a
/// short read taken for data.
///
/// Sendable without `@unchecked`: all state is immutable, and pread does not move a shared file position.
public final class ImageFile: Sendable {
    public let path: String
    public let size: UInt64
    private let descriptor: Int32

    /// The largest single read this type performs: no structure in an image needs more, so a larger request
    /// comes from a corrupt size field.
    public static let maximumRead: UInt64 = 256 << 20

    public init(path: String) throws(ImageFormatError) {
        self.path = path
        do throws(SyscallError) {
            let fd = try retryingSyscall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
            var st = stat()
            do throws(SyscallError) {
                try retryingSyscall("fstat", path) { fstat(fd, &st) }
            } catch {
                close(fd)
                throw error
            }
            descriptor = fd
            size = UInt64(max(0, st.st_size))
        } catch {
            throw .io(path: path, error)
        }
    }

    deinit { close(descriptor) }

    /// Reads exactly `count` bytes at `offset`, or throws if they are not all inside the file.
    public func read(at offset: UInt64, count: Int, what: @autoclosure () -> String) throws(ImageFormatError) -> [UInt8] {
        guard count >= 0 else { throw .outOfBounds(what: what(), offset: offset, length: 0, size: size) }
        let length = UInt64(count)
        guard length <= Self.maximumRead else {
            throw .absurdSize(what: what(), size: length, limit: Self.maximumRead)
        }
        guard offset <= size, length <= size - offset else {
            throw .outOfBounds(what: "\(what()) in \(path)", offset: offset, length: length, size: size)
        }
        if count == 0 { return [] }
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got: Int
            do throws(SyscallError) {
                let remaining = count - done
                let position = off_t(offset) + off_t(done)
                got = try retryingSyscall("pread", path) {
                    buffer.withUnsafeMutableBytes { raw in
                        pread(descriptor, raw.baseAddress.map { $0 + done }, remaining, position)
                    }
                }
            } catch {
                throw .io(path: path, error)
            }
            // The file shrank under us: report it as truncation rather than loop forever.
            if got == 0 {
                throw .truncated(what: "\(what()) in \(path)", needed: offset + length, available: offset + UInt64(done))
            }
            done += got
        }
        return buffer
    }

    /// Reads and wraps a structure of `count` bytes for decoding.
    public func bytes(at offset: UInt64, count: Int, what: String) throws(ImageFormatError) -> LittleEndianBytes {
        LittleEndianBytes(try read(at: offset, count: count, what: what), what: what)
    }
}
