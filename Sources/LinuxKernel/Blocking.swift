import Dispatch

/// Runs blocking work (SQLite, pread/pwrite, fsync, decompression of big buffers) on a shared dispatch queue
/// instead of a thread of Swift's cooperative pool, which must never wait on the kernel.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        blockingQueue.async { continuation.resume(with: Result { try body() }) }
    }
}

private let blockingQueue = DispatchQueue(label: "ondemand.blocking", attributes: .concurrent)
