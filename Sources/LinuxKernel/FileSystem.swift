import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Directory and file operations on absolute paths, all through the syscall funnel.
public enum FileSystem {
    /// Space and inode use of a tree, counted as `du` does: each inode once, `st_blocks * 512` bytes.
    public struct Usage: Equatable, Sendable {
        public var bytes: Int64
        public var inodes: Int64
        public init(bytes: Int64 = 0, inodes: Int64 = 0) {
            self.bytes = bytes
            self.inodes = inodes
        }
    }

    public static func lstat(_ path: String) throws(SyscallError) -> stat {
        var st = stat()
        try retryingSyscall("lstat", path) { Glibc.lstat(path, &st) }
        return st
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return Glibc.lstat(path, &st) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return Glibc.lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates one directory. Returns false if it already existed as a directory.
    @discardableResult
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(SyscallError) -> Bool {
        if Glibc.mkdir(path, mode) == 0 { return true }
        let code = errno
        if code == EEXIST && isDirectory(path) { return false }
        throw SyscallError(call: "mkdir", errno: code, subject: path)
    }

    /// Creates a directory and its missing parents (`mkdir -p`).
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(SyscallError) {
        if isDirectory(path) { return }
        let parent = parentPath(path)
        if parent != path && !parent.isEmpty { try makeDirectories(parent, mode: mode) }
        try makeDirectory(path, mode: mode)
    }

    public static func parentPath(_ path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        if slash == trimmed.startIndex { return "/" }
        return String(trimmed[..<slash])
    }

    public static func lastComponent(_ path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return String(trimmed) }
        return String(trimmed[trimmed.index(after: slash)...])
    }

    /// Joins path components with single slashes.
    public static func join(_ base: String, _ components: String...) -> String {
        var result = base
        for component in components where !component.isEmpty {
            if !result.hasSuffix("/") { result += "/" }
            result += component.hasPrefix("/") ? String(component.dropFirst()) : component
        }
        return result
    }

    /// Where a symlink points (for /proc links: a deleted file's path ends in " (deleted)"), or nil when it
    /// cannot be read.
    public static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Names in a directory, without `.` and `..`, sorted.
    public static func listDirectory(_ path: String) throws(SyscallError) -> [String] {
        let dir = try retryingSyscall("opendir", path, pointer: { opendir(path) })
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func rename(_ from: String, _ to: String) throws(SyscallError) {
        try retryingSyscall("rename", "\(from) -> \(to)") { Glibc.rename(from, to) }
    }

    public static func chmod(_ path: String, _ mode: mode_t) throws(SyscallError) {
        try retryingSyscall("chmod", path) { Glibc.chmod(path, mode) }
    }

    /// Removes a tree without following symlinks and without crossing into other filesystems:
    /// a mount point inside the tree makes the removal fail with EBUSY instead of emptying the mount.
    public static func removeTree(_ path: String) throws(SyscallError) {
        var st = stat()
        if Glibc.lstat(path, &st) != 0 {
            if errno == ENOENT { return }
            throw SyscallError(call: "lstat", errno: errno, subject: path)
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            try retryingSyscall("unlink", path) { unlink(path) }
            return
        }
        let fd = try retryingSyscall("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        try removeContents(of: fd, device: st.st_dev, path: path)
        close(fd)
        try retryingSyscall("rmdir", path) { rmdir(path) }
    }

    /// Empties the directory open at `fd`; the fd is consumed by fdopendir's stream only on return.
    private static func removeContents(of fd: Int32, device: dev_t, path: String) throws(SyscallError) {
        let dup = try retryingSyscall("dup", path) { Glibc.dup(fd) }
        guard let dir = fdopendir(dup) else {
            let code = errno
            close(dup)
            throw SyscallError(call: "fdopendir", errno: code, subject: path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        for name in names {
            let childPath = path + "/" + name
            var st = stat()
            try retryingSyscall("fstatat", childPath) { fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                if st.st_dev != device { throw SyscallError(call: "rmdir", errno: EBUSY, subject: childPath) }
                let child = try retryingSyscall("openat", childPath) {
                    openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                }
                defer { close(child) }
                try removeContents(of: child, device: device, path: childPath)
                try retryingSyscall("unlinkat", childPath) { unlinkat(fd, name, AT_REMOVEDIR) }
            } else {
                try retryingSyscall("unlinkat", childPath) { unlinkat(fd, name, 0) }
            }
        }
    }

    /// Disk usage of a tree (the root included), each inode counted once, not crossing filesystems.
    public static func usage(of path: String) throws(SyscallError) -> Usage {
        let root = try lstat(path)
        var seen = Set<UInt64>()
        var usage = Usage()
        func account(_ st: stat) {
            if seen.insert(UInt64(st.st_ino)).inserted {
                usage.inodes += 1
                usage.bytes += Int64(st.st_blocks) * 512
            }
        }
        account(root)
        guard (root.st_mode & S_IFMT) == S_IFDIR else { return usage }
        var stack = [path]
        while let dir = stack.popLast() {
            for name in try listDirectory(dir) {
                let child = dir + "/" + name
                let st = try lstat(child)
                guard st.st_dev == root.st_dev else { continue }
                account(st)
                if (st.st_mode & S_IFMT) == S_IFDIR { stack.append(child) }
            }
        }
        return usage
    }

    /// Reads a whole (small) file.
    public static func readFile(_ path: String) throws(SyscallError) -> [UInt8] {
        let fd = try retryingSyscall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try retryingSyscall("read", path) { buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } }
            if n == 0 { break }
            result.append(contentsOf: buffer[0..<n])
        }
        return result
    }

    /// Writes all of `bytes` at `offset` of an open file (pwrite until done); `path` names it in errors.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: UInt64, path: String) throws(SyscallError) {
        let failure = bytes.withUnsafeBytes { raw -> SyscallError? in
            do throws(SyscallError) {
                try writeAll(fd, raw, at: offset, path: path)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    /// `writeAll` from memory the caller owns (the fetch engine's reused chunk buffers).
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws(SyscallError) {
        var done = 0
        while done < bytes.count {
            done += try retryingSyscall("pwrite", path) {
                pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            }
        }
    }

    /// Frees the blocks under `[offset, offset + length)` of an open file (fallocate PUNCH_HOLE, size kept):
    /// the range reads as zeros and SEEK_HOLE finds it. `path` names the file in errors.
    public static func punchHole(_ fd: Int32, offset: UInt64, length: UInt64, path: String) throws(SyscallError) {
        try retryingSyscall("fallocate(PUNCH_HOLE)", path) { clinux_punch_hole(fd, Int64(offset), Int64(length)) }
    }

    /// Size and free space of the filesystem holding `path` (statvfs), in bytes.
    public static func capacity(of path: String) throws(SyscallError) -> (total: UInt64, available: UInt64) {
        var info = statvfs()
        try retryingSyscall("statvfs", path) { statvfs(path, &info) }
        let unit = UInt64(info.f_frsize)
        return (UInt64(info.f_blocks) * unit, UInt64(info.f_bavail) * unit)
    }

    /// Writes a file through a temp name, fsync and rename, so readers see the old or the new content.
    public static func writeFileAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(SyscallError) {
        let temp = path + ".tmp-\(getpid())"
        let fd = try retryingSyscall("open", temp) { open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode) }
        var offset = 0
        do {
            while offset < bytes.count {
                let n = try retryingSyscall("write", temp) {
                    bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
                }
                offset += n
            }
            try retryingSyscall("fsync", temp) { fsync(fd) }
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        close(fd)
        try rename(temp, path)
    }
}
