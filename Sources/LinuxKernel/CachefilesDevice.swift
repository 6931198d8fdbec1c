import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An open /dev/cachefiles (on-demand mode) or a device speaking its text protocol: text commands written,
/// one message per read, POLLIN while requests wait. Holds only the descriptor number; `close()` is explicit
/// because the descriptor may be shared with the fd holder, which keeps the cache bound across restarts.
public struct CachefilesDevice: Sendable {
    public static let defaultPath = "/dev/cachefiles"

    public let fd: Int32

    /// Opens the device read-write (only one process may have it open at a time; EBUSY otherwise).
    ///
    /// The emulation seam: when `path` is a Unix socket rather than a character device, a SOCK_SEQPACKET
    /// socket is connected to it instead. A seqpacket connection keeps the device's framing (one message per
    /// read, one command per write, POLLIN while a message waits, POLLHUP once the other side is gone), so a
    /// test process can stand in for a device no kernel has (the seed's `/dev/cachefiles_ondemand`).
    public init(path: String = defaultPath) throws(SyscallError) {
        var st = stat()
        if stat(path, &st) == 0, st.st_mode & mode_t(S_IFMT) == mode_t(S_IFSOCK) {
            fd = try Self.connectSeqpacket(path)
        } else {
            fd = try retryingSyscall("open", path) { open(path, O_RDWR | O_CLOEXEC) }
        }
    }

    private static func connectSeqpacket(_ path: String) throws(SyscallError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SyscallError(call: "connect", errno: ENAMETOOLONG, subject: path)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = try retryingSyscall("socket", path) { socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        do {
            try retryingSyscall("connect", path) {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// Uses a descriptor inherited from a holder or a predecessor.
    public init(adopting fd: Int32) {
        self.fd = fd
    }

    /// `dir <cacheDirectory>`, `tag <tag>`, `bind ondemand`: the cache must sit on a disk filesystem with
    /// xattrs (tmpfs is refused with EOPNOTSUPP).
    public func bind(cacheDirectory: String, tag: String) throws(SyscallError) {
        try send("dir \(cacheDirectory)")
        try send("tag \(tag)")
        try send("bind ondemand")
    }

    /// Answers an OPEN: `copen <id>,<size>`; a negative size is an errno the mount fails with.
    public func completeOpen(messageID: UInt32, size: Int64) throws(SyscallError) {
        try send("copen \(messageID),\(size)")
    }

    /// `restore` (Linux 6.8+): marks every request the kernel still holds as new again, so a successor
    /// reading the inherited device sees the requests its predecessor took but never completed (OPENs of
    /// objects whose anonymous fds died are reissued by the kernel before their READs).
    public func restore() throws(SyscallError) {
        try send("restore")
    }

    /// Writes one text command.
    public func send(_ command: String) throws(SyscallError) {
        let bytes = Array(command.utf8)
        let written = try retryingSyscall("write", "/dev/cachefiles: \(command)") {
            bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
        guard written == bytes.count else { throw SyscallError(call: "write", errno: EIO, subject: command) }
    }

    /// Waits up to `timeoutMilliseconds` for a message and reads it; nil when none came (or the request
    /// vanished between poll and read, which the kernel reports as a 0-byte read).
    public func readMessage(timeoutMilliseconds: Int32) throws(SyscallError) -> [UInt8]? {
        var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = try retryingSyscall("poll", "/dev/cachefiles") { poll(&pollFD, 1, timeoutMilliseconds) }
        guard ready > 0, pollFD.revents & Int16(POLLIN) != 0 else {
            if ready > 0, pollFD.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
                throw SyscallError(call: "poll", errno: EBADF, subject: "/dev/cachefiles")
            }
            return nil
        }
        var buffer = [UInt8](repeating: 0, count: CachefilesMessage.maximumSize)
        let count = try retryingSyscall("read", "/dev/cachefiles") {
            buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        }
        guard count > 0 else { return nil }
        return Array(buffer[0..<count])
    }

    /// `ioctl(anonFD, CACHEFILES_IOC_READ_COMPLETE, messageID)`: releases the reader of that READ.
    public static func completeRead(anonFD: Int32, messageID: UInt32) throws(SyscallError) {
        try retryingSyscall("ioctl(CACHEFILES_IOC_READ_COMPLETE)", "msg \(messageID)") {
            clinux_cachefiles_read_complete(anonFD, messageID)
        }
    }

    /// True when `fd` is /dev/cachefiles (checked before adopting a descriptor from a holder).
    public static func isCachefilesDevice(_ fd: Int32) -> Bool {
        FileSystem.readLink("/proc/self/fd/\(fd)") == defaultPath
    }

    /// True when `fd` is the character device at `path`, or a Unix socket (a connection to an emulation of
    /// it, see `init(path:)`): checked before adopting a descriptor from a holder.
    public static func isDevice(_ fd: Int32, path: String) -> Bool {
        guard let target = FileSystem.readLink("/proc/self/fd/\(fd)") else { return false }
        return target == path || target.hasPrefix("socket:[")
    }

    public func close() {
        _ = Glibc.close(fd)
    }
}
