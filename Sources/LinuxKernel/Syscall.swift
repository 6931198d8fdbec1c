import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A failed system call: the call's name, the errno it set, and the path or object it was about.
public struct SyscallError: Error, Equatable, Sendable, CustomStringConvertible {
    public let call: String
    public let errno: Int32
    public let subject: String?

    public init(call: String, errno: Int32, subject: String? = nil) {
        self.call = call
        self.errno = errno
        self.subject = subject
    }

    public var description: String {
        let reason = String(cString: strerror(errno))
        if let subject { return "\(call) \(subject): \(reason) (errno \(errno))" }
        return "\(call): \(reason) (errno \(errno))"
    }
}

extension SyscallError {
    /// The file system had no room (ENOSPC), or the caller's quota none (EDQUOT).
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    /// Whether `error` is a `SyscallError` that `isNoSpace`.
    public static func isNoSpace(_ error: any Error) -> Bool { (error as? SyscallError)?.isNoSpace ?? false }
}

/// Runs a libc call that returns -1 and sets errno on failure: retries EINTR, throws every other errno
/// tagged with the call's name. The one syscall funnel of the project.
@discardableResult
@inline(__always)
public func retryingSyscall<T: FixedWidthInteger>(
    _ call: String,
    _ subject: @autoclosure () -> String? = nil,
    _ body: () -> T
) throws(SyscallError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = errno
        if code == EINTR { continue }
        throw SyscallError(call: call, errno: code, subject: subject())
    }
}

/// The same funnel for calls that return a pointer and NULL on failure.
@inline(__always)
public func retryingSyscall<T>(
    _ call: String,
    _ subject: @autoclosure () -> String? = nil,
    pointer body: () -> T?
) throws(SyscallError) -> T {
    while true {
        if let result = body() { return result }
        let code = errno
        if code == EINTR { continue }
        throw SyscallError(call: call, errno: code, subject: subject())
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch.
public func wallClockNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Monotonic time in nanoseconds, for durations.
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Process-wide resource limits.
public enum ProcessLimits {
    /// The limit on open files in force (the soft one): no descriptor number of this process reaches it.
    public static func openFiles() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return UInt64(limit.rlim_cur)
    }

    /// Raises the limit on open files as far as the process may: soft and hard to the kernel's `nr_open` when
    /// privileged (as systemd's `LimitNOFILE=` would), else the soft limit to the hard one. Each served blob
    /// keeps its files open, so a host with thousands of blobs needs far more than the usual 1,024.
    /// Returns the limit now in force.
    @discardableResult
    public static func raiseOpenFiles() -> UInt64 {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0 else { return 0 }
        let text = (try? FileSystem.readFile("/proc/sys/fs/nr_open")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        if let ceiling = rlim_t(text.trimmingWhitespace()), ceiling > limit.rlim_max {
            var raised = rlimit(rlim_cur: ceiling, rlim_max: ceiling)
            if setrlimit(resource, &raised) == 0 { return UInt64(ceiling) }
        }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        String(self.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}

extension ProcessLimits {
    /// Gives memory freed by start-up (meta files read and dropped for thousands of blobs) back to the
    /// kernel; glibc keeps freed pages in its arenas otherwise.
    public static func releaseFreedMemory() {
        _ = clinux_malloc_trim(0)
    }
}
