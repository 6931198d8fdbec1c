import Synchronization

/// Keeps the chunks of a range a reader was answered for on disk until `end()`: eviction never punches a
/// leased chunk. The engine's on-demand reads take one (`BlobEngine.hold`) before they look at what is present,
/// so a chunk found present stays while the rest of the range is fetched; a front end that copies the bytes
/// out itself (cachefiles, into the kernel's cache file) ends the lease after the copy, one whose kernel reads
/// them after the answer (fanotify) right after answering, and the eviction grace covers that read.
///
/// Ending is idempotent; a lease dropped without `end()` ends then.
public final class RangeLease: Sendable {
    private let ending: Mutex<(@Sendable () -> Void)?>

    /// A lease that runs `onEnd` when it ends; nil holds nothing (a file complete on disk needs no lease).
    public init(onEnd: (@Sendable () -> Void)? = nil) {
        ending = Mutex(onEnd)
    }

    public func end() {
        let action = ending.withLock { action in
            defer { action = nil }
            return action
        }
        action?()
    }

    deinit { end() }
}
