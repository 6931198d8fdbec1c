/// A value bound to or read from a SQLite statement.
public enum SQLValue: Equatable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

extension SQLValue: ExpressibleByIntegerLiteral, ExpressibleByStringLiteral, ExpressibleByNilLiteral {
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(stringLiteral value: String) { self = .text(value) }
    public init(nilLiteral: ()) { self = .null }
}

extension SQLValue {
    public init(_ value: Int) { self = .integer(Int64(value)) }
    public init(_ value: Int64) { self = .integer(value) }
    public init(_ value: String) { self = .text(value) }
    public init(_ value: String?) { self = value.map(SQLValue.text) ?? .null }
    public init(_ value: Int64?) { self = value.map(SQLValue.integer) ?? .null }
}

/// One result row: values by column index, with typed accessors that report a schema mismatch clearly.
public struct SQLRow: Sendable {
    public let values: [SQLValue]

    public func int(_ index: Int) throws(CatalogError) -> Int64 {
        if case .integer(let v) = values[index] { return v }
        throw CatalogError.unexpectedValue(column: index, expected: "integer", found: values[index])
    }

    public func optionalInt(_ index: Int) throws(CatalogError) -> Int64? {
        if case .null = values[index] { return nil }
        return try int(index)
    }

    public func string(_ index: Int) throws(CatalogError) -> String {
        if case .text(let v) = values[index] { return v }
        throw CatalogError.unexpectedValue(column: index, expected: "text", found: values[index])
    }

    public func optionalString(_ index: Int) throws(CatalogError) -> String? {
        if case .null = values[index] { return nil }
        return try string(index)
    }

    public func blob(_ index: Int) throws(CatalogError) -> [UInt8] {
        switch values[index] {
        case .blob(let v): return v
        case .null: return []
        default: throw CatalogError.unexpectedValue(column: index, expected: "blob", found: values[index])
        }
    }
}
