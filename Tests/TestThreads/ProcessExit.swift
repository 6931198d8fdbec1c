import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended: `status` is its exit code, or the number of the signal that killed it (as
/// `Process.terminationStatus` says).
public struct ProcessExit: Sendable, Equatable {
    public let status: Int32
    public let signaled: Bool

    public init(status: Int32, signaled: Bool) {
        self.status = status
        self.signaled = signaled
    }
}

extension Process {
    /// Waits for the child to end and says how, also when Foundation does not notice.
    ///
    /// Foundation learns of a child's exit when the child's end of a socket pair closes. Its manager thread then
    /// reaps the child. When another thread spawns a process at the same moment, that process can inherit the
    /// socket's end, because Foundation lists the descriptors to close before it spawns. The exit is then noticed
    /// only when the inheritor ends.
    ///
    /// CI saw this happen: a test's `gzip` of a fixture stayed unreaped for 90 s, until the cachefiles VM ended,
    /// and `waitUntilExit` waited all that time. So this function polls instead. It takes Foundation's answer
    /// when one comes. If the child has been a zombie for a second, it reaps the child here. Foundation's own
    /// `waitpid` later gets ECHILD, which Foundation tolerates.
    public func waitForExit() -> ProcessExit {
        let pid = processIdentifier
        var zombieSince: UInt64?
        while isRunning {
            if Self.isZombie(pid) {
                let now = DispatchTime.now().uptimeNanoseconds
                if let since = zombieSince, now - since > 1_000_000_000 {
                    var status: Int32 = 0
                    let reaped = waitpid(pid, &status, WNOHANG)
                    if reaped == pid {
                        let signal = status & 0x7f
                        return signal == 0
                            ? ProcessExit(status: (status >> 8) & 0xff, signaled: false) : ProcessExit(status: signal, signaled: true)
                    }
                    // ECHILD: Foundation reaped it meanwhile and will say so.
                } else if zombieSince == nil {
                    zombieSince = now
                }
            }
            usleep(5_000)
        }
        return ProcessExit(status: terminationStatus, signaled: terminationReason == .uncaughtSignal)
    }
    /// Whether `/proc/<pid>/stat` shows the process exited but not reaped (state `Z`).
    private static func isZombie(_ pid: Int32) -> Bool { processState(pid) == "Z" }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...), nil when there is no such process.
public func processState(_ pid: Int32) -> Character? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else {
        return nil
    }
    // The state letter follows the parenthesised command name.
    return text[close...].dropFirst(2).first
}
