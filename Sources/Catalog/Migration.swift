/// One numbered schema step. Versions start at 1 and are applied in order inside one transaction each;
/// `PRAGMA user_version` records the last one applied.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String
    /// The step rebuilds a table that others reference (SQLite's create-copy-drop-rename): it runs with
    /// foreign keys off, and `PRAGMA foreign_key_check` must find nothing before it commits.
    public let rebuildsTables: Bool

    public init(version: Int, name: String, sql: String, rebuildsTables: Bool = false) {
        self.version = version
        self.name = name
        self.sql = sql
        self.rebuildsTables = rebuildsTables
    }
}
