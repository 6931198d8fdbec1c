import BlobStore
import Logging
import MountManager
import SnapshotterAPI
import SystemSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `snapctl mount`/`unmount`: the daemon performs a snapshot's mounts at a path and records them, so that
/// remove and commit can refuse a mounted snapshot and a restart can reconcile with mountinfo.
extension SnapshotService {
    func mount(key: String, target: String) throws -> [KernelMount] {
        let target = try Self.normalize(target: target)
        return try database.write { conn in
            guard let record = try lookup(conn, key) else { throw SnapshotError.notFound(key: key) }
            let mounts = try mounts(conn, for: record)
            if try !conn.query("SELECT 1 FROM mounts WHERE target = ?", [.text(target)]).isEmpty {
                throw SnapshotError.targetInUse(target: target)
            }
            if MountInfo.isMountPoint(target, in: try MountInfo.read()) { throw SnapshotError.targetInUse(target: target) }
            try FileSystem.makeDirectories(target)
            var done: [String] = []
            do {
                for mount in mounts {
                    try Mounter.mount(mount, at: target)
                    done.append(target)
                }
                try conn.execute(
                    "INSERT INTO mounts (target, snapshot_id, created_ns) VALUES (?, ?, ?)",
                    [.text(target), .integer(record.id), .integer(wallClockNanoseconds())]
                )
            } catch {
                for mounted in done.reversed() { try? Mounter.unmount(mounted, detach: true) }
                throw error
            }
            logger.info("snapshot mounted", metadata: ["snapshot.key": "\(key)", "mount.target": "\(target)"])
            return mounts
        }
    }

    func unmount(target: String) throws {
        let target = try Self.normalize(target: target)
        try database.write { conn in
            guard try !conn.query("SELECT 1 FROM mounts WHERE target = ?", [.text(target)]).isEmpty else {
                throw SnapshotError.notMountedHere(target: target)
            }
            do {
                try Mounter.unmount(target)
            } catch MountError.unmountFailed(_, let error) where error.errno == EINVAL {
                // Not mounted any more (someone else unmounted it): the record is all that is left.
                logger.notice("mount was already gone", metadata: ["mount.target": "\(target)"])
            } catch MountError.unmountFailed(_, let error) where error.errno == EBUSY {
                throw SnapshotError.targetBusy(target: target)
            }
            try conn.execute("DELETE FROM mounts WHERE target = ?", [.text(target)])
        }
        logger.info("snapshot unmounted", metadata: ["mount.target": "\(target)"])
    }

    func activeMounts() throws -> [ActiveMount] {
        try database.read { conn in
            try conn.query("SELECT m.target, s.key FROM mounts m JOIN snapshots s ON s.id = m.snapshot_id ORDER BY m.target")
                .map { ActiveMount(target: try $0.string(0), snapshot: try $0.string(1)) }
        }
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
