import Testing

/// Runs each test case of a suite on a thread of its own (a `ThreadTaskExecutor` the test's task prefers).
///
/// Swift Testing runs test bodies on the cooperative pool, which has two threads on our machines. Our tests
/// block: they wait for processes (snapctl, skopeo, containerd, registries, daemons) and read through mounts
/// whose reads wait on fetches. Two blocking tests held up every other test's tasks; a probe measured 137 s of
/// delay in 200 s of `make test`, and time-sensitive tests lost their races. On a thread of its own, a test that
/// blocks holds up only itself.
public struct OwnThreadTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        testCase == nil ? nil : self
    }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let executor = ThreadTaskExecutor(name: "test: \(test.name)")
        defer { executor.finish() }
        try await withTaskExecutorPreference(executor) { try await function() }
    }
}

extension Trait where Self == OwnThreadTrait {
    /// Each test case on a thread of its own: see `OwnThreadTrait`.
    public static var ownThread: Self { OwnThreadTrait() }
}
