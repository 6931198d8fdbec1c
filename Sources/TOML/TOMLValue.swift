/// A parsed TOML value. Dates and times are kept as their source text.
public enum TOMLValue: Equatable, Sendable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case boolean(Bool)
    case datetime(String)
    case array([TOMLValue])
    case table([String: TOMLValue])

    public var string: String? { if case .string(let v) = self { return v } else { return nil } }
    public var integer: Int64? { if case .integer(let v) = self { return v } else { return nil } }
    public var boolean: Bool? { if case .boolean(let v) = self { return v } else { return nil } }
    public var array: [TOMLValue]? { if case .array(let v) = self { return v } else { return nil } }
    public var table: [String: TOMLValue]? { if case .table(let v) = self { return v } else { return nil } }

    public var typeName: String {
        switch self {
        case .string: return "string"
        case .integer: return "integer"
        case .float: return "float"
        case .boolean: return "boolean"
        case .datetime: return "datetime"
        case .array: return "array"
        case .table: return "table"
        }
    }

    /// Looks up a dotted path of already-split keys.
    public subscript(path: String...) -> TOMLValue? {
        var current: TOMLValue? = self
        for key in path { current = current?.table?[key] }
        return current
    }
}

/// A syntax error with its 1-based position.
public struct TOMLError: Error, Equatable, Sendable, CustomStringConvertible {
    public let line: Int
    public let column: Int
    public let message: String

    public var description: String { "TOML line \(line), column \(column): \(message)" }
}
