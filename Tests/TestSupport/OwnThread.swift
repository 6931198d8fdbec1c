import Foundation

/// Runs blocking work (a read through a mount or the emulated devnode, which waits on fetches; snapctl; a
/// process) on a thread of its own. The cooperative pool has two threads on our machines: a test that blocks
/// one of them holds up every other suite's tasks, including the ones that would release its read.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
