import Logging
import NIOPosix
import ServiceLifecycle
import SnapshotterAPI

/// Collects the image store's garbage on a timer (`cache.gc_interval_seconds`): the sweep `snapctl gc` runs.
/// A round that finds a pull running is skipped (the next one comes); a round never blocks a pull for long,
/// since pulls arriving while it sweeps are refused with "pull again" only for the sweep's duration.
struct GarbageCollectorService: Service {
    let images: ImageService
    let interval: Duration
    let threadPool: NIOThreadPool
    let logger: Logger

    func run() async throws {
        logger.info("garbage collection on a timer", metadata: ["gc.interval_s": "\(interval.components.seconds)"])
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            // The wait ends at once on graceful shutdown: an hour's interval must not hold up a SIGTERM.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            guard !Task.isShuttingDownGracefully && !Task.isCancelled else { return }
            do {
                let removed = try await threadPool.runIfActive { try images.collectGarbage() }
                if !removed.isEmpty {
                    logger.notice("garbage collected", metadata: ["gc.removed": "\(removed.count)"])
                }
            } catch let error as APIError where error.kind == .failedPrecondition {
                logger.debug("garbage collection skipped: a pull is running", metadata: ["error": "\(error)"])
            } catch {
                logger.warning("garbage collection failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
