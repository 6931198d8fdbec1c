import Foundation
import LinuxKernel

#if canImport(Glibc)
import Glibc
#endif

/// What tests and benchmarks use to leave nothing behind: mounts under their directory, and helper processes
/// (fd holders, registries) that outlive a daemon by design.
public enum TestCleanup {
    /// Mount points at or below `directory`, deepest first (parsed by `MountInfo`, read to the end).
    public static func mountPoints(under directory: String) -> [String] {
        ((try? MountInfo.read()) ?? []).map(\.mountPoint)
            .filter { $0 == directory || $0.hasPrefix(directory + "/") }
            .sorted { $0.count > $1.count }
    }

    /// Detaches every mount at or below `directory`.
    public static func unmountAll(under directory: String) {
        for point in mountPoints(under: directory) { umount2(point, Int32(MNT_DETACH)) }
    }

    /// SIGKILLs every process with `argument` among its command-line words.
    public static func killProcesses(withArgument argument: String) {
        for pid in ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init) {
            guard let words = try? FileSystem.readFile("/proc/\(pid)/cmdline") else { continue }
            if words.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == argument }) { kill(pid, SIGKILL) }
        }
    }
}
