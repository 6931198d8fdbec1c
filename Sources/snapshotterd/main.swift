import ArgumentParser
import Snapshotter

// snapshotterd: everything it does is in the Snapshotter library. Parsed and run here rather than through
// `main()`: top-level code picks the synchronous overloads of `main()` and `run()`, which refuse or skip an
// asynchronous command; the concrete type's own `run()` is the asynchronous one.
do {
    var command = try SnapshotterDaemon.parseAsRoot()
    if let daemon = command as? SnapshotterDaemon {
        try await daemon.run()
    } else {
        try command.run()
    }
} catch {
    SnapshotterDaemon.exit(withError: error)
}
