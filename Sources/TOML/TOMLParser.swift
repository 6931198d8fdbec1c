import TOMLKit

/// Parses TOML 1.0 documents with toml++ (through TOMLKit, a maintained library) into `TOMLValue`, the
/// plain value tree the config readers walk. Dates and times are kept as their TOML text.
public enum TOMLParser {
    /// The document as a table, or the first syntax error with its position.
    public static func parse(_ text: String) throws(TOMLError) -> TOMLValue {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw TOMLError(line: error.source.begin.line, column: error.source.begin.column, message: error.description)
        } catch {
            throw TOMLError(line: 1, column: 1, message: "\(error)")
        }
        return value(of: table)
    }

    private static func value(of table: TOMLTable) -> TOMLValue {
        var entries: [String: TOMLValue] = [:]
        for key in table.keys {
            if let element = table[key] { entries[key] = value(of: element.tomlValue) }
        }
        return .table(entries)
    }

    private static func value(of node: TOMLKit.TOMLValue) -> TOMLValue {
        switch node.type {
        case .table: return node.table.map(value(of:)) ?? .table([:])
        case .array: return .array(node.array.map { $0.map { value(of: $0.tomlValue) } } ?? [])
        case .string: return .string(node.string ?? "")
        case .int: return .integer(Int64(node.int ?? 0))
        case .double: return .float(node.double ?? 0)
        case .bool: return .boolean(node.bool ?? false)
        case .date, .time, .dateTime: return .datetime(node.debugDescription)
        }
    }
}
