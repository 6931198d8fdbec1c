#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A process holding something under a mount point: what makes umount(2) fail with EBUSY.
public struct MountUser: Equatable, Sendable, CustomStringConvertible {
    public var pid: Int32
    /// Its command name (`/proc/<pid>/comm`).
    public var command: String
    /// What it holds there: `cwd`, `root`, `exe` or `fd N (path)`.
    public var holds: String

    public var description: String { "pid \(pid) (\(command)): \(holds)" }
}

/// Finds the processes that keep a mount busy, for an error a user can act on ("pid 812 (bash): cwd").
public enum MountUsers {
    /// Processes visible in /proc whose working directory, root, executable or open files lie at or under
    /// `target`, at most `limit` of them. Best effort: a process that exits meanwhile, or whose links cannot be
    /// read, is skipped. Processes in other mount namespaces name paths as they see them, so one that holds the
    /// mount through another path (a container's root) is not found; nor are mounts stacked under the target.
    public static func find(under target: String, limit: Int = 8) -> [MountUser] {
        let prefix = target.hasSuffix("/") ? target : target + "/"
        func isUnder(_ path: String) -> Bool { path == target || path.hasPrefix(prefix) }
        var users: [MountUser] = []
        let pids = ((try? FileSystem.listDirectory("/proc")) ?? []).compactMap(Int32.init).sorted()
        for pid in pids where users.count < limit {
            let base = "/proc/\(pid)"
            var holds: [String] = []
            for link in ["cwd", "root", "exe"] {
                if let path = FileSystem.readLink(base + "/" + link), isUnder(path) { holds.append(link) }
            }
            for name in ((try? FileSystem.listDirectory(base + "/fd")) ?? []).compactMap(Int.init).sorted() {
                if let path = FileSystem.readLink(base + "/fd/\(name)"), isUnder(path) { holds.append("fd \(name) (\(path))") }
            }
            guard !holds.isEmpty else { continue }
            users.append(MountUser(pid: pid, command: command(of: pid), holds: holds.joined(separator: ", ")))
        }
        return users
    }

    static func command(of pid: Int32) -> String {
        guard let bytes = try? FileSystem.readFile("/proc/\(pid)/comm") else { return "?" }
        return String(decoding: bytes, as: UTF8.self).trimmingSuffix("\n")
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
