import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The page-cache readahead of a mounted filesystem, set through its backing device info in sysfs
/// (`/sys/class/bdi/<name>/read_ahead_kb`; EROFS mounts without a block device get their own, named like
/// their superblock's sysfs directory). The default 128 KiB window turns a sequential read of an on-demand
/// image into one front-end round trip per 128 KiB; a window as large as a chunk makes it one per chunk.
public enum KernelReadahead {
    /// The sysfs file holding the readahead of the filesystem mounted at `mountPoint`.
    public static func controlFile(mountPoint: String) throws(SyscallError) -> String {
        let fd = try retryingSyscall("open", mountPoint) { open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        var buffer = [CChar](repeating: 0, count: 160)
        try retryingSyscall("ioctl(FS_IOC_GETFSSYSFSPATH)", mountPoint) { clinux_fs_sysfs_path(fd, &buffer, Int32(buffer.count)) }
        let name = FileSystem.lastComponent(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        return "/sys/class/bdi/\(name)/read_ahead_kb"
    }

    /// Sets the readahead window of the filesystem mounted at `mountPoint`.
    public static func set(mountPoint: String, kilobytes: Int) throws(SyscallError) {
        let path = try controlFile(mountPoint: mountPoint)
        let fd = try retryingSyscall("open", path) { open(path, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        try FileSystem.writeAll(fd, Array("\(kilobytes)\n".utf8), at: 0, path: path)
    }

    /// The readahead window of the filesystem mounted at `mountPoint`, in KiB.
    public static func get(mountPoint: String) throws(SyscallError) -> Int? {
        Int(String(decoding: try FileSystem.readFile(try controlFile(mountPoint: mountPoint)), as: UTF8.self).filter(\.isNumber))
    }
}
