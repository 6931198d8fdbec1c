import CLinux
import SystemSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Keeps the fanotify group alive outside the daemon (see `snapshotterd-fdholder`): a daemon that dies,
/// cleanly or not, never releases the group while EROFS mounts depend on it.
public enum FanotifyGroupHolder {
    public enum HolderError: Error, Equatable, Sendable, CustomStringConvertible {
        case spawnFailed(binary: String, errno: Int32)
        case notReady(socket: String)
        case badHandle(socket: String, detail: String)

        public var description: String {
            switch self {
            case .spawnFailed(let binary, let code):
                return "cannot start the fanotify group holder \(binary): \(String(cString: strerror(code)))"
            case .notReady(let socket): return "the fanotify group holder did not come up on \(socket)"
            case .badHandle(let socket, let detail): return "the holder on \(socket) handed over a bad descriptor: \(detail)"
            }
        }
    }

    /// Adopts the group a running holder keeps, or returns nil when no holder answers on `socketPath`.
    public static func adopt(socketPath: String) throws -> FanotifyGroup? {
        guard let connection = connect(socketPath) else { return nil }
        defer { close(connection) }
        var tag: CChar = 0
        let fd = clinux_recv_fd(connection, &tag)
        guard fd >= 0 else { throw HolderError.badHandle(socket: socketPath, detail: String(cString: strerror(errno))) }
        guard isFanotify(fd) else {
            close(fd)
            throw HolderError.badHandle(socket: socketPath, detail: "not a fanotify group")
        }
        var keep = UInt8(ascii: "K")
        _ = write(connection, &keep, 1)
        return FanotifyGroup(adopting: fd)
    }

    /// Starts a holder for `group` and waits until it serves `socketPath`.
    public static func spawn(binary: String, socketPath: String, group: FanotifyGroup) throws {
        var pipeFDs: [Int32] = [-1, -1]
        try retryingSyscall("pipe") { pipe(&pipeFDs) }
        for fd in pipeFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        defer { close(pipeFDs[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, group.fd, 3)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 4)
        let arguments = [binary, "--socket", socketPath, "--fd", "3"]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var environment: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nil]
        defer { for pointer in environment { free(pointer) } }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, binary, &actions, nil, &argv, &environment)
        close(pipeFDs[1])
        guard code == 0 else { throw HolderError.spawnFailed(binary: binary, errno: code) }
        // The holder closes fd 4 once its socket listens; EOF on our end means ready (or dead).
        var byte: UInt8 = 0
        while read(pipeFDs[0], &byte, 1) > 0 {}
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { throw HolderError.notReady(socket: socketPath) }
        guard connectable(socketPath) else { throw HolderError.notReady(socket: socketPath) }
    }

    /// Tells the holder to close its group and exit (clean stop with nothing left depending on it).
    public static func release(socketPath: String) {
        guard let connection = connect(socketPath) else { return }
        defer { close(connection) }
        var tag: CChar = 0
        let fd = clinux_recv_fd(connection, &tag)
        if fd >= 0 { close(fd) }
        var release = UInt8(ascii: "R")
        _ = write(connection, &release, 1)
        var byte: UInt8 = 0
        _ = read(connection, &byte, 1)  // EOF once the holder has closed it
    }

    static func isFanotify(_ fd: Int32) -> Bool {
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0 else { return false }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "anon_inode:[fanotify]"
    }

    private static func connectable(_ path: String) -> Bool {
        guard let fd = connect(path) else { return false }
        var tag: CChar = 0
        let received = clinux_recv_fd(fd, &tag)
        if received >= 0 { close(received) }
        var keep = UInt8(ascii: "K")
        _ = write(fd, &keep, 1)
        close(fd)
        return received >= 0
    }

    private static func connect(_ path: String) -> Int32? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if result != 0 {
            close(fd)
            return nil
        }
        return fd
    }
}
