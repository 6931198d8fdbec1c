import Catalog
import LinuxKernel
import Logging
import SnapshotterAPI
import Synchronization

/// Start-up reconciliation of the catalog with the snapshot directories and /proc/self/mountinfo, and the
/// cleanup call that removes what the catalog does not know.
///
/// Rules: the catalog is never trimmed to match the disk (nothing it knows is lost); a catalog snapshot
/// whose directory vanished gets empty directories back and is reported; directories the catalog does not
/// know are reported and left for cleanup; mount records whose mount is gone are dropped.
final class Reconciler: Sendable {
    let service: SnapshotService
    let logger: Logger
    /// Findings of the start-up pass, shown by status until the next cleanup.
    private let findings = Mutex<[Leftover]>([])

    init(service: SnapshotService, logger: Logger) {
        self.service = service
        self.logger = logger
    }

    var startupFindings: [Leftover] { findings.withLock { $0 } }

    func reconcileAtStartup() throws {
        var report: [Leftover] = []
        try FileSystem.makeDirectories(service.snapshotsDirectory, mode: 0o700)
        let records = try service.allRecords()
        for record in records where !FileSystem.isDirectory(service.upperDirectory(of: record.id)) {
            try FileSystem.makeDirectories(service.upperDirectory(of: record.id))
            if record.kind == .active { try FileSystem.makeDirectories(service.workDirectory(of: record.id), mode: 0o711) }
            let path = service.directory(of: record.id)
            report.append(Leftover(path: path, reason: "snapshot \(record.key) had lost its directory; recreated empty"))
            logger.error("snapshot directory was missing", metadata: ["snapshot.key": "\(record.key)", "snapshot.directory": "\(path)"])
        }
        for path in try unknownDirectories(known: Set(records.map(\.id))) {
            report.append(Leftover(path: path, reason: "not in the catalog; removed by cleanup"))
            logger.notice("leftover snapshot directory", metadata: ["snapshot.directory": "\(path)"])
        }
        let mounted = Set(try MountInfo.read().map(\.mountPoint))
        for target in try service.catalog.mountTargets() where !mounted.contains(target) {
            try service.catalog.deleteMount(target: target)
            report.append(Leftover(path: target, reason: "recorded mount was gone at start-up; record dropped"))
            logger.notice("recorded mount was gone", metadata: ["mount.target": "\(target)"])
        }
        findings.withLock { $0 = report }
    }

    /// Directories under snapshots/ that no catalog snapshot owns.
    func unknownDirectories(known: Set<Int64>) throws -> [String] {
        try FileSystem.listDirectory(service.snapshotsDirectory).compactMap { name in
            if let id = Int64(name), known.contains(id), String(id) == name { return nil }
            return FileSystem.join(service.snapshotsDirectory, name)
        }
    }

    /// Removes every directory the catalog does not know. Directories with something mounted inside are
    /// skipped (removal never crosses into another filesystem) and logged.
    func cleanup() throws -> [String] {
        let known = try service.catalog.snapshotIDs()
        var removed: [String] = []
        for path in try unknownDirectories(known: known) {
            do {
                try FileSystem.removeTree(path)
                removed.append(path)
            } catch {
                logger.warning("cleanup could not remove", metadata: ["cleanup.path": "\(path)", "error": "\(error)"])
            }
        }
        findings.withLock { $0.removeAll { removed.contains($0.path) || !$0.reason.contains("cleanup") } }
        if !removed.isEmpty { logger.info("cleanup removed leftovers", metadata: ["cleanup.count": "\(removed.count)"]) }
        return removed
    }

    /// Current leftovers: directories the catalog does not know, plus the start-up findings.
    func leftovers() throws -> [Leftover] {
        let known = try service.catalog.snapshotIDs()
        var result = startupFindings.filter { !$0.reason.contains("cleanup") }
        for path in try unknownDirectories(known: known) {
            result.append(Leftover(path: path, reason: "not in the catalog; removed by cleanup"))
        }
        return result
    }
}
