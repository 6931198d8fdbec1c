import Catalog
import LinuxKernel
import Logging
import SnapshotterAPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `snapctl mount`/`unmount`: the daemon performs a snapshot's mounts at a path and records them, so that
/// remove and commit can refuse a mounted snapshot and a restart can reconcile with mountinfo.
extension SnapshotService {
    /// Records the mount, then mounts, each in its own step so that no catalog transaction waits on mount(2).
    /// A crash between the two leaves a record whose mount is missing, which start-up drops (`Reconciler`);
    /// the kernel never holds one of our mounts the catalog does not know.
    func mount(key: String, target: String) throws -> [KernelMount] {
        let target = try Self.normalize(target: target)
        try claim(target)
        defer { release(target) }
        let planned = try catalog.write { tx in
            guard let record = try lookup(tx, key) else { throw SnapshotError.notFound(key: key) }
            let planned = try mounts(tx, for: record)
            if try tx.isMountRecorded(target: target) { throw SnapshotError.targetInUse(target: target) }
            if MountInfo.isMountPoint(target, in: try MountInfo.read()) { throw SnapshotError.targetInUse(target: target) }
            try tx.insertMount(target: target, snapshotID: record.id, nanoseconds: wallClockNanoseconds())
            return planned
        }
        CrashPoint.reach("mount.recorded")
        var done: [String] = []
        do {
            try FileSystem.makeDirectories(target)
            for mount in planned {
                try Mounter.mount(mount, at: target)
                done.append(target)
            }
        } catch {
            for mounted in done.reversed() { try? Mounter.unmount(mounted, detach: true) }
            try? catalog.deleteMount(target: target)
            throw error
        }
        CrashPoint.reach("mount.mounted")
        logger.info("snapshot mounted", metadata: ["snapshot.key": "\(key)", "mount.target": "\(target)"])
        return planned
    }

    /// Unmounts, then drops the record: a crash between the two leaves a record whose mount is gone, which
    /// start-up drops.
    func unmount(target: String) throws {
        let target = try Self.normalize(target: target)
        try claim(target)
        defer { release(target) }
        guard try catalog.isMountRecorded(target: target) else { throw SnapshotError.notMountedHere(target: target) }
        try unmountRecorded(target)
        CrashPoint.reach("unmount.unmounted")
        try catalog.deleteMount(target: target)
        logger.info("snapshot unmounted", metadata: ["mount.target": "\(target)"])
    }

    /// umount(2) of a recorded target; one that is not mounted any more (someone else unmounted it) is fine.
    /// Runs on the blocking pool: a busy target is waited for there (`Mounter.unmountWaitingOutBusy`).
    private func unmountRecorded(_ target: String) throws {
        do {
            try Mounter.unmountWaitingOutBusy(target) {
                logger.notice("mount busy, trying again", metadata: ["mount.target": "\(target)"])
            }
        } catch {
            guard case .unmountFailed(_, let cause) = error else { throw error }
            switch cause.errno {
            case EINVAL:
                logger.notice("mount was already gone", metadata: ["mount.target": "\(target)"])
            case EBUSY:
                let users = MountUsers.find(under: target)
                logger.warning("mount still busy", metadata: ["mount.target": "\(target)", "mount.users": "\(users.map(\.description))"])
                throw SnapshotError.targetBusy(target: target, users: users)
            default: throw error
            }
        }
    }

    private func claim(_ target: String) throws(SnapshotError) {
        guard targetsInProgress.withLock({ $0.insert(target).inserted }) else { throw .targetOperationInProgress(target: target) }
    }

    private func release(_ target: String) {
        _ = targetsInProgress.withLock { $0.remove(target) }
    }

    func activeMounts() throws -> [ActiveMount] {
        try catalog.mountsWithKeys().map { ActiveMount(target: $0.target, snapshot: $0.key) }
    }

    /// Mount targets must be absolute, free of `.`/`..` components and NUL, and not `/`.
    static func normalize(target: String) throws(SnapshotError) -> String {
        guard target.hasPrefix("/") else { throw .invalidTarget(target: target, reason: "must be an absolute path") }
        guard !target.contains("\0") else { throw .invalidTarget(target: target, reason: "must not contain NUL") }
        let parts = target.split(separator: "/")
        guard !parts.contains(where: { $0 == "." || $0 == ".." }) else {
            throw .invalidTarget(target: target, reason: "must not contain . or .. components")
        }
        guard !parts.isEmpty else { throw .invalidTarget(target: target, reason: "must not be /") }
        return "/" + parts.joined(separator: "/")
    }
}
