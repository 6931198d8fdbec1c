import Catalog
import SnapshotterAPI

/// A snapshot as the service sees it: a catalog row (`SnapshotRow`) with its kind checked.
struct SnapshotRecord: Equatable {
    var id: Int64
    var key: String
    var kind: SnapshotKind
    var parentID: Int64?
    var parentKey: String?
    var labels: [String: String]
    var createdNanoseconds: Int64
    var updatedNanoseconds: Int64
    var usage: SnapshotUsage?
    /// The pulled image this snapshot (or its bottom-most ancestor) sits on, if any.
    var imageID: Int64?

    init(_ row: SnapshotRow) throws(SnapshotError) {
        guard let kind = SnapshotKind(rawValue: row.kind) else {
            throw SnapshotError.storage("catalog holds an unknown snapshot kind \(row.kind) for \(row.key)")
        }
        id = row.id
        key = row.key
        self.kind = kind
        parentID = row.parentID
        parentKey = row.parentKey
        labels = row.labels
        createdNanoseconds = row.createdNanoseconds
        updatedNanoseconds = row.updatedNanoseconds
        usage = row.usage.map { SnapshotUsage(size: $0.bytes, inodes: $0.inodes) }
        imageID = row.imageID
    }

    var info: SnapshotInfo {
        SnapshotInfo(
            name: key,
            parent: parentKey ?? "",
            kind: kind,
            labels: labels,
            createdAt: RFC3339.format(nanoseconds: createdNanoseconds),
            updatedAt: RFC3339.format(nanoseconds: updatedNanoseconds)
        )
    }
}
