#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A fault injector for crash-consistency tests: when `SNAPSHOTTERD_CRASH_AT` names a point, the process
/// kills itself with SIGKILL on reaching it, exactly as `kill -9` between two steps would. Unset (always, in
/// production) it costs one comparison.
public enum CrashPoint {
    /// The point named by the environment, read once.
    private static let armed: String? = getenv("SNAPSHOTTERD_CRASH_AT").map { String(cString: $0) }

    /// Dies here if `name` is the armed point.
    public static func reach(_ name: String) {
        guard let armed, armed == name else { return }
        kill(getpid(), SIGKILL)
        // SIGKILL cannot be caught; wait for it rather than run one more step.
        while true { pause() }
    }
}
