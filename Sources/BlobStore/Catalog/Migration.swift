/// One numbered schema step. Versions start at 1 and are applied in order inside one transaction each;
/// `PRAGMA user_version` records the last one applied.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}
