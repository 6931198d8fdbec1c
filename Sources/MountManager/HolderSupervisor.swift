import CLinux
import LinuxKernel
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Watches the `snapshotterd-fdholder` that keeps a kernel descriptor for the daemon and starts another when
/// it dies, so the descriptor always has a keeper besides the daemon. Without one, a daemon crash would close
/// the descriptor's last copy; for a fanotify group the kernel then answers every waiting reader with ALLOW
/// and drops the mark, and readers see unfetched ranges as zeros. Watching is event-driven: a pidfd of the
/// holder polls readable when it exits.
final class HolderSupervisor: Sendable {
    private let socketPath: String
    private let respawn: @Sendable () throws -> Void
    private let logger: Logger
    private let thread = ReaderThread(label: "fdholder.watch")
    /// The holder being watched: its pid and a pidfd of it.
    private let watched = Mutex<(pid: pid_t, pidfd: Int32)?>(nil)

    /// `respawn` starts a new holder on `socketPath` with the daemon's copy of the descriptor.
    init(socketPath: String, logger: Logger, respawn: @escaping @Sendable () throws -> Void) {
        self.socketPath = socketPath
        self.logger = logger
        self.respawn = respawn
    }

    deinit { if let pidfd = watched.withLock({ $0 })?.pidfd { close(pidfd) } }

    /// Starts watching the holder now serving the socket.
    func start() {
        if !watchCurrentHolder() {
            logger.warning("no descriptor holder to watch; starting one", metadata: ["fdholder.socket": "\(socketPath)"])
        }
        thread.start { self.pass() }
    }

    /// Stops watching (call before releasing the holder on purpose).
    func stop() {
        thread.stop()
        if let pidfd = watched.withLock({ state -> Int32? in
            defer { state = nil }
            return state?.pidfd
        }) {
            close(pidfd)
        }
    }

    /// The pid of the holder on the socket, by its peer credentials, and a pidfd of it.
    private func watchCurrentHolder() -> Bool {
        guard let pid = DescriptorHolder.holderPID(socketPath: socketPath) else { return false }
        let pidfd = clinux_pidfd_open(pid)
        guard pidfd >= 0 else {
            logger.warning("cannot watch the descriptor holder", metadata: ["fdholder.pid": "\(pid)", "error": "errno \(errno)"])
            return false
        }
        _ = fcntl(pidfd, F_SETFD, FD_CLOEXEC)
        let previous = watched.withLock { state -> Int32? in
            defer { state = (pid, pidfd) }
            return state?.pidfd
        }
        if let previous { close(previous) }
        return true
    }

    /// One bounded wait for the holder's exit; a dead holder is replaced at once.
    private func pass() -> Bool {
        guard let current = watched.withLock({ $0 }) else {
            replace(exited: nil)
            return true
        }
        var entry = pollfd(fd: current.pidfd, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 200) > 0 else { return true }
        // Reap it if it was our child (a holder this daemon spawned).
        var status: Int32 = 0
        _ = waitpid(current.pid, &status, WNOHANG)
        replace(exited: current.pid)
        return true
    }

    private func replace(exited pid: pid_t?) {
        logger.error(
            "the descriptor holder is gone; starting another so that a daemon crash cannot release the descriptor",
            metadata: ["fdholder.socket": "\(socketPath)", "fdholder.pid": "\(pid.map(String.init) ?? "none")"])
        do {
            try respawn()
            if watchCurrentHolder() {
                logger.notice("descriptor holder restarted", metadata: ["fdholder.socket": "\(socketPath)"])
                return
            }
        } catch {
            logger.error("cannot start a descriptor holder", metadata: ["fdholder.socket": "\(socketPath)", "error": "\(error)"])
        }
        // Try again shortly rather than spin.
        usleep(500_000)
    }
}
