import Catalog
import ContainerdProxy
import LinuxKernel
import SnapshotterAPI

/// What containerd's service needs beyond the JSON API: infos with times as numbers, and committed
/// snapshots that stand for layers served lazily from a pulled image (remote snapshots).
extension SnapshotService {
    func proxyInfo(key: String) throws -> ProxySnapshotInfo {
        guard let record = try catalog.snapshot(key: key).map(SnapshotRecord.init) else { throw SnapshotError.notFound(key: key) }
        return record.proxyInfo
    }

    /// Every snapshot matching any filter (all when none), oldest first: garbage collection builds its
    /// tree from this, so nothing may be left out.
    ///
    /// containerd's remote-snapshot query for a bottom layer is `labels."containerd.io/snapshot.ref"==X,parent==""`,
    /// and in containerd's filter language `parent==""` matches nothing (an empty field is absent). The
    /// selector is dropped: containerd re-checks label and parent of what we return, so a superset is safe.
    func proxyList(filters: [String]) throws -> [ProxySnapshotInfo] {
        let parsed = try filters.map { filter throws(SnapshotError) in
            try SnapshotFilter(parsing: filter.replacing(#",parent=="""#, with: ""))
        }
        let records = try allRecords()
        return records.filter { record in parsed.isEmpty || parsed.contains { $0.matches(record.info) } }.map(\.proxyInfo)
    }

    /// A committed snapshot `name` on `parent`, sitting on pulled image `imageID`'s EROFS, with an empty
    /// layer of its own: the image's file system already holds the layer's files.
    ///
    /// The only way a committed snapshot is made without Commit; the directories are made inside the
    /// transaction, so a failure leaves at most an unknown directory, which cleanup removes.
    func commitRemote(name: String, parent: String?, labels: [String: String], imageID: Int64) throws {
        try SnapshotNames.validate(key: name)
        try SnapshotNames.validate(labels: labels)
        try catalog.write { tx in
            if try lookup(tx, name) != nil { throw SnapshotError.alreadyExists(key: name) }
            var parentID: Int64?
            if let parent, !parent.isEmpty {
                guard let record = try lookup(tx, parent) else { throw SnapshotError.parentNotFound(parent: parent) }
                guard record.kind == .committed else {
                    throw SnapshotError.parentNotCommitted(parent: parent, kind: record.kind.rawValue)
                }
                parentID = record.id
            }
            let id = try tx.insertSnapshot(
                key: name, kind: SnapshotKind.committed.rawValue, parentID: parentID, labels: labels,
                nanoseconds: wallClockNanoseconds(), imageID: imageID, usage: (0, 0))
            if FileSystem.exists(directory(of: id)) { try FileSystem.removeTree(directory(of: id)) }
            try FileSystem.makeDirectories(directory(of: id), mode: 0o700)
            try FileSystem.makeDirectory(upperDirectory(of: id), mode: 0o755)
        }
    }
}

extension SnapshotRecord {
    var proxyInfo: ProxySnapshotInfo {
        let kind: ProxySnapshotKind
        switch self.kind {
        case .active: kind = .active
        case .view: kind = .view
        case .committed: kind = .committed
        }
        return ProxySnapshotInfo(
            name: key, parent: parentKey ?? "", kind: kind, labels: labels, createdNanoseconds: createdNanoseconds,
            updatedNanoseconds: updatedNanoseconds)
    }
}
