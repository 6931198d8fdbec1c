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
