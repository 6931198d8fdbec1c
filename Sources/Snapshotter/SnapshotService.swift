import Catalog
import LinuxKernel
import Logging
import OCI
import SnapshotterAPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Snapshots with containerd's semantics on overlayfs: the catalog is the truth, directories follow it.
///
/// Ordering makes every change crash-safe: directories are created before the catalog row commits
/// (a crash leaves an unknown directory, which cleanup removes) and deleted after the row is gone (same).
/// So every snapshot the catalog knows always has its directories.
///
/// All methods block (SQLite, file-system walks, mount(2)): call them from a thread pool.
final class SnapshotService: Sendable {
    let root: String
    let catalog: SnapshotCatalog
    let logger: Logger
    /// Mount targets with a mount or unmount under way: one operation per target at a time, since the
    /// catalog and the kernel are changed in separate steps.
    let targetsInProgress = Mutex<Set<String>>([])

    init(root: String, database: Database, logger: Logger) {
        self.root = root
        self.catalog = SnapshotCatalog(database: database)
        self.logger = logger
    }

    var snapshotsDirectory: String { FileSystem.join(root, "snapshots") }

    /// Where image `id`'s EROFS filesystem is mounted (shared by all its snapshots).
    func imageMountPoint(_ id: Int64) -> String { FileSystem.join(root, "mnt", String(id)) }

    func directory(of id: Int64) -> String { FileSystem.join(snapshotsDirectory, String(id)) }
    func upperDirectory(of id: Int64) -> String { FileSystem.join(directory(of: id), "fs") }
    func workDirectory(of id: Int64) -> String { FileSystem.join(directory(of: id), "work") }

    // MARK: - Create

    /// Prepare (active) or View (read-only): a new snapshot on top of an optional committed parent.
    /// With `image` (a pulled image's reference), the snapshot sits on that image's EROFS mount; children of
    /// its commits inherit the image.
    func create(kind: SnapshotKind, key: String, parent: String?, labels: [String: String], image: String? = nil) throws -> [KernelMount] {
        precondition(kind != .committed, "committed snapshots come only from commit")
        try SnapshotNames.validate(key: key)
        try SnapshotNames.validate(labels: labels)
        var createdDirectory: String?
        do {
            return try catalog.write { tx in
                if try lookup(tx, key) != nil { throw SnapshotError.alreadyExists(key: key) }
                var parentRecord: SnapshotRecord?
                if let parent, !parent.isEmpty {
                    guard let record = try lookup(tx, parent) else { throw SnapshotError.parentNotFound(parent: parent) }
                    guard record.kind == .committed else {
                        throw SnapshotError.parentNotCommitted(parent: parent, kind: record.kind.rawValue)
                    }
                    parentRecord = record
                }
                var imageID = parentRecord?.imageID
                if let image, !image.isEmpty {
                    guard parentRecord == nil else {
                        throw SnapshotError.invalidImage(image: image, reason: "give either a parent or an image, not both")
                    }
                    let name = (try? ImageReference(parsing: image).description) ?? image
                    guard let id = try tx.imageID(reference: name) else { throw SnapshotError.imageNotFound(image: image) }
                    imageID = id
                }
                let id = try tx.insertSnapshot(
                    key: key, kind: kind.rawValue, parentID: parentRecord?.id, labels: labels, nanoseconds: wallClockNanoseconds(),
                    imageID: imageID)
                let directory = directory(of: id)
                createdDirectory = directory
                try makeDirectories(id: id, kind: kind, parentID: parentRecord?.id)
                var record = try lookup(tx, key)!
                record.parentKey = parentRecord?.key
                return try mounts(tx, for: record)
            }
        } catch {
            // The row rolled back; its directories must not outlive it.
            if let createdDirectory { try? FileSystem.removeTree(createdDirectory) }
            throw error
        }
    }

    private func makeDirectories(id: Int64, kind: SnapshotKind, parentID: Int64?) throws {
        let directory = directory(of: id)
        // An id the catalog does not know can only have a directory left by a crash: it is garbage.
        if FileSystem.exists(directory) { try FileSystem.removeTree(directory) }
        try FileSystem.makeDirectories(snapshotsDirectory, mode: 0o700)
        try FileSystem.makeDirectory(directory, mode: 0o700)
        let upper = upperDirectory(of: id)
        try FileSystem.makeDirectory(upper, mode: 0o755)
        if kind == .active { try FileSystem.makeDirectory(workDirectory(of: id), mode: 0o711) }
        // As containerd's overlay snapshotter: the new layer's root takes its parent's owner, so a
        // container's root directory keeps the image's ownership.
        if let parentID {
            let parentRoot = try FileSystem.lstat(upperDirectory(of: parentID))
            try retryingSyscall("lchown", upper) { lchown(upper, parentRoot.st_uid, parentRoot.st_gid) }
        }
    }

    // MARK: - Read

    func stat(key: String) throws -> SnapshotInfo {
        try catalog.read { tx in
            guard let record = try lookup(tx, key) else { throw SnapshotError.notFound(key: key) }
            return record.info
        }
    }

    func mounts(key: String) throws -> [KernelMount] {
        try catalog.read { tx in
            guard let record = try lookup(tx, key) else { throw SnapshotError.notFound(key: key) }
            return try mounts(tx, for: record)
        }
    }

    func list(filters: [String]) throws -> [SnapshotInfo] {
        let parsed = try filters.map { filter throws(SnapshotError) in try SnapshotFilter(parsing: filter) }
        let records = try allRecords()
        return records.map(\.info).filter { info in parsed.isEmpty || parsed.contains { $0.matches(info) } }
    }

    /// Bytes and inodes of the snapshot's own layer: stored at commit for committed snapshots (they never
    /// change), walked now for active ones.
    func usage(key: String) throws -> SnapshotUsage {
        guard let record = try catalog.snapshot(key: key).map(SnapshotRecord.init) else { throw SnapshotError.notFound(key: key) }
        if let usage = record.usage { return usage }
        let usage = try FileSystem.usage(of: upperDirectory(of: record.id))
        return SnapshotUsage(size: usage.bytes, inodes: usage.inodes)
    }

    /// The image and labels of a committed snapshot that stands for a layer of a pulled image (a remote
    /// snapshot: its files are the image's, stored in the image's blobs); nil for every other snapshot.
    func imageLayer(key: String) throws -> (imageID: Int64, labels: [String: String])? {
        guard let record = try catalog.snapshot(key: key).map(SnapshotRecord.init) else { throw SnapshotError.notFound(key: key) }
        guard record.kind == .committed, let imageID = record.imageID else { return nil }
        return (imageID, record.labels)
    }

    // MARK: - Change

    func commit(name: String, key: String, labels: [String: String]) throws {
        try SnapshotNames.validate(key: name)
        try SnapshotNames.validate(labels: labels)
        try catalog.write { tx in
            guard let record = try lookup(tx, key) else { throw SnapshotError.notFound(key: key) }
            guard record.kind == .active else { throw SnapshotError.notActive(key: key, kind: record.kind.rawValue) }
            if try lookup(tx, name) != nil { throw SnapshotError.alreadyExists(key: name) }
            if let target = try tx.mountTarget(of: record.id) { throw SnapshotError.mounted(key: key, target: target) }
            let usage = try FileSystem.usage(of: upperDirectory(of: record.id))
            try tx.commit(
                id: record.id, name: name, labels: labels, nanoseconds: wallClockNanoseconds(), usage: (usage.bytes, usage.inodes))
        }
        logger.info("snapshot committed", metadata: ["snapshot.key": "\(key)", "snapshot.name": "\(name)"])
    }

    func remove(key: String) throws {
        let id = try catalog.write { tx in
            guard let record = try lookup(tx, key) else { throw SnapshotError.notFound(key: key) }
            let children = try tx.childKeys(of: record.id)
            if !children.isEmpty { throw SnapshotError.hasChildren(key: key, children: children) }
            if let target = try tx.mountTarget(of: record.id) { throw SnapshotError.mounted(key: key, target: target) }
            try tx.deleteSnapshot(id: record.id)
            return record.id
        }
        // The row is gone; a failure here leaves a directory that cleanup removes later.
        do {
            try FileSystem.removeTree(directory(of: id))
        } catch {
            logger.warning(
                "snapshot directory left for cleanup",
                metadata: ["snapshot.key": "\(key)", "snapshot.directory": "\(directory(of: id))", "error": "\(error)"])
        }
    }

    /// Labels are the only mutable field. Field paths: `labels` (replace all) or `labels.<key>` (set that
    /// one, or delete it when the given value is missing or empty); none means `labels`.
    func update(key: String, labels: [String: String], fieldpaths: [String]) throws -> SnapshotInfo {
        try SnapshotNames.validate(labels: labels)
        for path in fieldpaths where path != "labels" && !path.hasPrefix("labels.") {
            throw SnapshotError.invalidFieldPath(path)
        }
        return try catalog.write { tx in
            guard var record = try lookup(tx, key) else { throw SnapshotError.notFound(key: key) }
            if fieldpaths.isEmpty || fieldpaths.contains("labels") {
                record.labels = labels.filter { !$0.value.isEmpty }
            }
            for path in fieldpaths where path.hasPrefix("labels.") {
                let label = String(path.dropFirst("labels.".count))
                if let value = labels[label], !value.isEmpty { record.labels[label] = value } else { record.labels[label] = nil }
            }
            try SnapshotNames.validate(labels: record.labels)
            record.updatedNanoseconds = wallClockNanoseconds()
            try tx.updateLabels(id: record.id, labels: record.labels, nanoseconds: record.updatedNanoseconds)
            return record.info
        }
    }

    // MARK: - Helpers shared with mounting and reconciliation

    func lookup(_ tx: SnapshotTransaction, _ key: String) throws -> SnapshotRecord? {
        try tx.snapshot(key: key).map(SnapshotRecord.init)
    }

    /// Every snapshot, oldest first.
    func allRecords() throws -> [SnapshotRecord] {
        try catalog.allSnapshots().map(SnapshotRecord.init)
    }

    /// The mounts containerd's overlay snapshotter returns for the same snapshot (see docs/api.md).
    func mounts(_ tx: SnapshotTransaction, for record: SnapshotRecord) throws -> [KernelMount] {
        guard record.kind != .committed else { throw SnapshotError.notMountable(key: record.key) }
        let parents = try tx.ancestorIDs(of: record.id)
        if let imageID = record.imageID {
            // The image's EROFS mount is the bottom layer, below every committed parent.
            let lowers = parents.map(upperDirectory(of:)) + [imageMountPoint(imageID)]
            if record.kind == .view && lowers.count == 1 {
                return [KernelMount(type: "bind", source: lowers[0], options: ["ro", "rbind"])]
            }
            var options: [String] = []
            if OverlayFeatures.hasIndex { options.append("index=off") }
            if record.kind == .active {
                options.append("workdir=\(workDirectory(of: record.id))")
                options.append("upperdir=\(upperDirectory(of: record.id))")
            }
            options.append("lowerdir=" + lowers.joined(separator: ":"))
            return [KernelMount(type: "overlay", source: "overlay", options: options)]
        }
        if parents.isEmpty {
            return [
                KernelMount(type: "bind", source: upperDirectory(of: record.id), options: [record.kind == .view ? "ro" : "rw", "rbind"])
            ]
        }
        var options: [String] = []
        if OverlayFeatures.hasIndex { options.append("index=off") }
        if record.kind == .active {
            options.append("workdir=\(workDirectory(of: record.id))")
            options.append("upperdir=\(upperDirectory(of: record.id))")
        } else if parents.count == 1 {
            return [KernelMount(type: "bind", source: upperDirectory(of: parents[0]), options: ["ro", "rbind"])]
        }
        options.append("lowerdir=" + parents.map(upperDirectory(of:)).joined(separator: ":"))
        return [KernelMount(type: "overlay", source: "overlay", options: options)]
    }
}
