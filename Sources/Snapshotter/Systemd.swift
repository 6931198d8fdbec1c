import CSystemd
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// systemd glue through libsystemd: readiness and status (sd_notify), the watchdog, socket activation.
/// Every call is a no-op outside systemd (no NOTIFY_SOCKET, no LISTEN_FDS).
enum Systemd {
    /// Sends newline-separated `KEY=value` assignments to the service manager, if there is one.
    static func notify(_ assignments: String) {
        _ = sd_notify(0, assignments)
    }

    /// Half the watchdog timeout when systemd asked for pings (WATCHDOG_USEC for this pid), else nil.
    static func watchdogPingInterval() -> Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(usec / 2))
    }

    /// The listening socket systemd passed (LISTEN_FDS/LISTEN_PID), if any. Unsets the variables so children
    /// do not inherit them.
    static func activatedSocket() throws -> ListenerSource? {
        let names = getenv("LISTEN_FDNAMES").map { String(cString: $0) } ?? "snapshotterd.socket"
        let count = sd_listen_fds(1)
        guard count > 0 else { return nil }
        guard count == 1 else { throw DaemonError.tooMany(count) }
        let fd = csystemd_listen_fds_start()
        guard sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
            throw DaemonError.notAStreamUnixSocket(fd: fd)
        }
        return .inherited(fd: fd, name: names.split(separator: ":").first.map(String.init) ?? names)
    }
}

/// Pings the systemd watchdog at half its timeout until shutdown.
struct WatchdogService: Service {
    let interval: Duration
    let logger: Logger

    func run() async throws {
        logger.info(
            "watchdog enabled",
            metadata: [
                "watchdog.interval_ms": "\(interval.components.seconds * 1000 + interval.components.attoseconds / 1_000_000_000_000_000)"
            ])
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            Systemd.notify("WATCHDOG=1")
            try? await Task.sleep(for: interval)
        }
    }
}
