import CLinux
import LinuxKernel

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Client side of `snapshotterd-fdholder` for any descriptor (here: /dev/cachefiles). While the holder keeps
/// the device open, the kernel keeps the cache bound and readers waiting when the daemon dies; a successor
/// takes a duplicate and carries on (`FanotifyGroupHolder` is the fanotify group's face of it). Wire protocol:
/// connect, receive the fd (SCM_RIGHTS), answer "K" (keep) or "R" (release: the holder closes it and exits).
public enum DescriptorHolder {
    /// The one adoption path of every front end whose kernel descriptor must outlive the daemon (the fanotify
    /// group, /dev/cachefiles, the seed devnode): adopt the descriptor a running holder keeps, or `open` a new
    /// one (set up and ready: a bound cache, ...) and hand it to a new holder. A new descriptor that cannot be
    /// handed over is `close`d: one the kernel would keep bound without a keeper must not linger.
    public static func adoptOrOpen<Handle>(
        socketPath: String, holderBinary: String, accept: (Int32) -> Bool, adopting: (Int32) -> Handle,
        open: () throws -> Handle, descriptor: (Handle) -> Int32, close: (Handle) -> Void
    ) throws -> (handle: Handle, adopted: Bool) {
        if let fd = try adopt(socketPath: socketPath, accept: accept) { return (adopting(fd), true) }
        guard FileSystem.exists(holderBinary) else { throw FrontEndError.missingBinary(holderBinary) }
        let handle = try open()
        do {
            unlink(socketPath)
            try spawn(binary: holderBinary, socketPath: socketPath, fd: descriptor(handle))
        } catch {
            close(handle)
            throw error
        }
        return (handle, false)
    }

    /// A duplicate of the descriptor a running holder keeps, or nil when no holder answers on `socketPath`.
    /// `accept` vets it (e.g. "is this /dev/cachefiles"); a refused descriptor is closed and reported.
    public static func adopt(socketPath: String, accept: (Int32) -> Bool) throws(FrontEndError) -> Int32? {
        guard let connection = connect(socketPath) else { return nil }
        defer { close(connection) }
        var tag: CChar = 0
        let fd = clinux_recv_fd(connection, &tag)
        guard fd >= 0 else { throw .badHandle(socket: socketPath, detail: String(cString: strerror(errno))) }
        guard accept(fd) else {
            close(fd)
            throw .badHandle(socket: socketPath, detail: "unexpected descriptor type")
        }
        var keep = UInt8(ascii: "K")
        _ = write(connection, &keep, 1)
        return fd
    }

    /// Starts a holder of `fd` and waits until it serves `socketPath`. Returns the holder's pid.
    @discardableResult
    public static func spawn(binary: String, socketPath: String, fd: Int32) throws(FrontEndError) -> pid_t {
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { throw .spawnFailed(binary: binary, errno: errno) }
        for end in pipeFDs { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        defer { close(pipeFDs[0]) }
        let spawned = Result { () throws(FrontEndError) in
            try run(binary, ["--socket", socketPath, "--fd", "3"], descriptors: [(fd, 3), (pipeFDs[1], 4)])
        }
        close(pipeFDs[1])
        let pid = try spawned.get()
        // The holder closes fd 4 once its socket listens; EOF here means ready (or dead).
        var byte: UInt8 = 0
        while read(pipeFDs[0], &byte, 1) > 0 {}
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { throw .notReady(socket: socketPath) }
        guard holderPID(socketPath: socketPath) != nil else { throw .notReady(socket: socketPath) }
        return pid
    }

    /// Runs the holder binary's cull mode (`--cull name --in directory`) with `fd` (/dev/cachefiles) as its fd
    /// 3 and waits for it. Returns 0, or the errno the kernel answered (ENOENT: not there yet; EBUSY: in use).
    public static func cull(binary: String, fd: Int32, directory: String, name: String) throws(FrontEndError) -> Int32 {
        let pid = try run(binary, ["--cull", name, "--in", directory, "--fd", "3"], descriptors: [(fd, 3)])
        var status: Int32 = 0
        do throws(SyscallError) {
            try retryingSyscall("waitpid", binary) { waitpid(pid, &status, 0) }
        } catch {
            throw .spawnFailed(binary: binary, errno: error.errno)
        }
        // Exited normally: its status is 0 or the errno; killed: EINTR stands for "did not finish".
        return status & 0x7f == 0 ? (status >> 8) & 0xff : EINTR
    }

    /// posix_spawn of the holder binary with `arguments`, `descriptors` duplicated in order (ours, its number
    /// there), and a minimal environment.
    private static func run(_ binary: String, _ arguments: [String], descriptors: [(Int32, Int32)]) throws(FrontEndError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (ours, theirs) in descriptors { posix_spawn_file_actions_adddup2(&actions, ours, theirs) }
        var argv: [UnsafeMutablePointer<CChar>?] = ([binary] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var environment: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nil]
        defer { for pointer in environment { free(pointer) } }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, binary, &actions, nil, &argv, &environment)
        guard code == 0 else { throw .spawnFailed(binary: binary, errno: code) }
        return pid
    }

    /// The pid of the holder serving `socketPath` (its peer credentials), or nil when none answers or it hands
    /// no descriptor over. The duplicate it hands over is closed and the holder told to keep its own.
    public static func holderPID(socketPath: String) -> pid_t? {
        guard let connection = connect(socketPath) else { return nil }
        defer { close(connection) }
        var credentials = clinux_peer_cred()
        guard clinux_peer_cred(connection, &credentials) == 0, credentials.pid > 0 else { return nil }
        var tag: CChar = 0
        let received = clinux_recv_fd(connection, &tag)
        if received >= 0 { close(received) }
        var keep = UInt8(ascii: "K")
        _ = write(connection, &keep, 1)
        return received >= 0 ? credentials.pid : nil
    }

    /// Tells the holder to close its descriptor and exit.
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
