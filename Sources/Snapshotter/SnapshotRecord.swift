import Catalog
import SnapshotterAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A row of the `snapshots` table, with its parent's key resolved.
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

    static let selectColumns = """
        SELECT s.id, s.key, s.kind, s.parent_id, p.key, s.labels, s.created_ns, s.updated_ns,
               s.usage_bytes, s.usage_inodes, s.image_id
        FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
        """

    init(row: SQLRow) throws {
        id = try row.int(0)
        key = try row.string(1)
        let kindText = try row.string(2)
        guard let kind = SnapshotKind(rawValue: kindText) else {
            throw SnapshotError.storage("catalog holds an unknown snapshot kind \(kindText) for \(key)")
        }
        self.kind = kind
        parentID = try row.optionalInt(3)
        parentKey = try row.optionalString(4)
        labels = try Self.decodeLabels(try row.string(5))
        createdNanoseconds = try row.int(6)
        updatedNanoseconds = try row.int(7)
        if let bytes = try row.optionalInt(8), let inodes = try row.optionalInt(9) {
            usage = SnapshotUsage(size: bytes, inodes: inodes)
        }
        imageID = try row.optionalInt(10)
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

    static func encodeLabels(_ labels: [String: String]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(labels), as: UTF8.self)
    }

    static func decodeLabels(_ text: String) throws -> [String: String] {
        try JSONDecoder().decode([String: String].self, from: Data(text.utf8))
    }
}
