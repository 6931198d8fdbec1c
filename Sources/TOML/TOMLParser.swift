/// A TOML 1.0 parser: tables, arrays of tables, dotted and quoted keys, inline tables, arrays, all string
/// forms with escapes, integers (decimal, hex, octal, binary, underscores), floats, booleans; dates are kept
/// as text. Redefinitions are errors, as the spec requires.
public struct TOMLParser {
    private let bytes: [UInt8]
    private var index = 0
    private var line = 1
    private var lineStart = 0
    /// Tables defined by a `[header]` or by dotted keys, to refuse redefinition; arrays of tables are exempt.
    private var definedTables: Set<[String]> = []
    private var arrayTables: Set<[String]> = []

    public static func parse(_ text: String) throws(TOMLError) -> TOMLValue {
        var parser = TOMLParser(bytes: Array(text.utf8))
        return try parser.parseDocument()
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func error(_ message: String) -> TOMLError {
        TOMLError(line: line, column: index - lineStart + 1, message: message)
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private func peek(_ offset: Int) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }

    private mutating func advance() {
        if current == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        index += 1
    }

    private mutating func skipSpaces() {
        while let c = current, c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { advance() }
    }

    private mutating func skipComment() {
        if current == UInt8(ascii: "#") { while let c = current, c != UInt8(ascii: "\n") { advance() } }
    }

    /// Skips spaces, newlines and comments (inside arrays).
    private mutating func skipWhitespaceAndComments() {
        while let c = current {
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") {
                advance()
            } else if c == UInt8(ascii: "#") {
                skipComment()
            } else {
                return
            }
        }
    }

    private mutating func expectLineEnd() throws(TOMLError) {
        skipSpaces()
        skipComment()
        if current == UInt8(ascii: "\r") { advance() }
        guard current == nil || current == UInt8(ascii: "\n") else { throw error("expected the end of the line") }
        if current != nil { advance() }
    }

    private mutating func parseDocument() throws(TOMLError) -> TOMLValue {
        var root: [String: TOMLValue] = [:]
        var tablePath: [String] = []
        while true {
            skipWhitespaceAndComments()
            guard let c = current else { break }
            if c == UInt8(ascii: "[") {
                advance()
                let isArray = current == UInt8(ascii: "[")
                if isArray { advance() }
                skipSpaces()
                let path = try parseKey()
                skipSpaces()
                guard current == UInt8(ascii: "]") else { throw error("expected ] after the table name") }
                advance()
                if isArray {
                    guard current == UInt8(ascii: "]") else { throw error("expected ]] after the array-of-tables name") }
                    advance()
                    try appendArrayTable(&root, path)
                    arrayTables.insert(path)
                } else {
                    guard definedTables.insert(path).inserted else {
                        throw error("table [\(path.joined(separator: "."))] is defined twice")
                    }
                    try ensureTable(&root, path, fullPath: path)
                }
                tablePath = path
                try expectLineEnd()
            } else {
                let key = try parseKey()
                skipSpaces()
                guard current == UInt8(ascii: "=") else { throw error("expected = after the key") }
                advance()
                skipSpaces()
                let value = try parseValue()
                try insert(&root, tablePath, key, value)
                try expectLineEnd()
            }
        }
        return .table(root)
    }

    // MARK: - Keys

    private mutating func parseKey() throws(TOMLError) -> [String] {
        var parts: [String] = []
        while true {
            skipSpaces()
            guard let c = current else { throw error("expected a key") }
            if c == UInt8(ascii: "\"") {
                parts.append(try parseBasicString())
            } else if c == UInt8(ascii: "'") {
                parts.append(try parseLiteralString())
            } else {
                let start = index
                while let c = current, isBareKeyByte(c) { advance() }
                guard index > start else { throw error("expected a key") }
                parts.append(String(decoding: bytes[start..<index], as: UTF8.self))
            }
            skipSpaces()
            if current == UInt8(ascii: ".") { advance() } else { return parts }
        }
    }

    private func isBareKeyByte(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    // MARK: - Tree building

    private func ensureTable(_ table: inout [String: TOMLValue], _ path: [String], fullPath: [String]) throws(TOMLError) {
        guard let first = path.first else { return }
        var child: [String: TOMLValue]
        switch table[first] {
        case nil: child = [:]
        case .table(let existing): child = existing
        case .array(var items) where !items.isEmpty && items.last?.table != nil:
            // A sub-table of the last element of an array of tables.
            guard case .table(var last) = items.removeLast() else { return }
            try ensureTable(&last, Array(path.dropFirst()), fullPath: fullPath)
            items.append(.table(last))
            table[first] = .array(items)
            return
        default:
            throw error("key \(first) is already a value, not a table")
        }
        try ensureTable(&child, Array(path.dropFirst()), fullPath: fullPath)
        table[first] = .table(child)
    }

    private func appendArrayTable(_ table: inout [String: TOMLValue], _ path: [String]) throws(TOMLError) {
        guard let first = path.first else { return }
        if path.count == 1 {
            switch table[first] {
            case nil: table[first] = .array([.table([:])])
            case .array(var items) where items.allSatisfy({ $0.table != nil }):
                items.append(.table([:]))
                table[first] = .array(items)
            default: throw error("key \(first) is not an array of tables")
            }
            return
        }
        switch table[first] {
        case nil:
            var child: [String: TOMLValue] = [:]
            try appendArrayTable(&child, Array(path.dropFirst()))
            table[first] = .table(child)
        case .table(var child):
            try appendArrayTable(&child, Array(path.dropFirst()))
            table[first] = .table(child)
        case .array(var items) where items.last?.table != nil:
            guard case .table(var last) = items.removeLast() else { return }
            try appendArrayTable(&last, Array(path.dropFirst()))
            items.append(.table(last))
            table[first] = .array(items)
        default:
            throw error("key \(first) is already a value, not a table")
        }
    }

    private func insert(
        _ root: inout [String: TOMLValue],
        _ tablePath: [String],
        _ key: [String],
        _ value: TOMLValue
    ) throws(TOMLError) {
        try modify(&root, tablePath) { (table: inout [String: TOMLValue]) throws(TOMLError) in
            try self.insertDotted(&table, key, value)
        }
    }

    /// Walks to the table at `path` (descending into the last element of arrays of tables) and edits it.
    private func modify(
        _ table: inout [String: TOMLValue],
        _ path: [String],
        _ body: (inout [String: TOMLValue]) throws(TOMLError) -> Void
    ) throws(TOMLError) {
        guard let first = path.first else {
            try body(&table)
            return
        }
        switch table[first] {
        case .table(var child):
            try modify(&child, Array(path.dropFirst()), body)
            table[first] = .table(child)
        case .array(var items):
            guard case .table(var last)? = items.popLast() else { throw error("key \(first) is not a table") }
            try modify(&last, Array(path.dropFirst()), body)
            items.append(.table(last))
            table[first] = .array(items)
        default:
            throw error("key \(first) is not a table")
        }
    }

    private func insertDotted(_ table: inout [String: TOMLValue], _ key: [String], _ value: TOMLValue) throws(TOMLError) {
        let first = key[0]
        if key.count == 1 {
            guard table[first] == nil else { throw error("key \(first) is defined twice") }
            table[first] = value
            return
        }
        var child: [String: TOMLValue]
        switch table[first] {
        case nil: child = [:]
        case .table(let existing): child = existing
        default: throw error("key \(first) is already a value, not a table")
        }
        try insertDotted(&child, Array(key.dropFirst()), value)
        table[first] = .table(child)
    }

    // MARK: - Values

    private mutating func parseValue() throws(TOMLError) -> TOMLValue {
        guard let c = current else { throw error("expected a value") }
        switch c {
        case UInt8(ascii: "\""):
            if peek(1) == UInt8(ascii: "\"") && peek(2) == UInt8(ascii: "\"") { return .string(try parseMultilineBasic()) }
            return .string(try parseBasicString())
        case UInt8(ascii: "'"):
            if peek(1) == UInt8(ascii: "'") && peek(2) == UInt8(ascii: "'") { return .string(try parseMultilineLiteral()) }
            return .string(try parseLiteralString())
        case UInt8(ascii: "["):
            return try parseArray()
        case UInt8(ascii: "{"):
            return try parseInlineTable()
        default:
            return try parseScalar()
        }
    }

    private mutating func parseArray() throws(TOMLError) -> TOMLValue {
        advance()
        var items: [TOMLValue] = []
        while true {
            skipWhitespaceAndComments()
            if current == UInt8(ascii: "]") {
                advance()
                return .array(items)
            }
            items.append(try parseValue())
            skipWhitespaceAndComments()
            if current == UInt8(ascii: ",") {
                advance()
            } else if current == UInt8(ascii: "]") {
                advance()
                return .array(items)
            } else {
                throw error("expected , or ] in the array")
            }
        }
    }

    private mutating func parseInlineTable() throws(TOMLError) -> TOMLValue {
        advance()
        var table: [String: TOMLValue] = [:]
        skipSpaces()
        if current == UInt8(ascii: "}") {
            advance()
            return .table(table)
        }
        while true {
            skipSpaces()
            let key = try parseKey()
            skipSpaces()
            guard current == UInt8(ascii: "=") else { throw error("expected = in the inline table") }
            advance()
            skipSpaces()
            let value = try parseValue()
            try insertDotted(&table, key, value)
            skipSpaces()
            if current == UInt8(ascii: ",") {
                advance()
            } else if current == UInt8(ascii: "}") {
                advance()
                return .table(table)
            } else {
                throw error("expected , or } in the inline table")
            }
        }
    }

    private mutating func parseScalar() throws(TOMLError) -> TOMLValue {
        let start = index
        while let c = current,
            c != UInt8(ascii: ",") && c != UInt8(ascii: "]") && c != UInt8(ascii: "}") && c != UInt8(ascii: "\n")
                && c != UInt8(ascii: "\r") && c != UInt8(ascii: "#")
        {
            // A space may only appear inside a date-time ("1979-05-27 07:32:00").
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") {
                let next = peek(1)
                let isDateSpace = index - start == 10 && next.map { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") } == true
                if !isDateSpace { break }
            }
            advance()
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        switch text {
        case "true": return .boolean(true)
        case "false": return .boolean(false)
        case "inf", "+inf": return .float(.infinity)
        case "-inf": return -.float(.infinity)
        case "nan", "+nan", "-nan": return .float(.nan)
        case "": throw error("expected a value")
        default: break
        }
        if let integer = parseInteger(text) { return .integer(integer) }
        if text.contains("-") && text.count >= 10, text.first?.isNumber == true, text.dropFirst(4).first == "-" {
            return .datetime(text)
        }
        if text.count >= 8, text.dropFirst(2).first == ":" { return .datetime(text) }
        if let float = parseFloat(text) { return .float(float) }
        throw error("cannot read the value \(text)")
    }

    private func parseInteger(_ text: String) -> Int64? {
        guard validUnderscores(text) else { return nil }
        let clean = text.replacingUnderscores()
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where clean.hasPrefix(prefix) {
            return Int64(clean.dropFirst(2), radix: radix)
        }
        let digits = clean.hasPrefix("+") || clean.hasPrefix("-") ? clean.dropFirst() : Substring(clean)
        if digits.count > 1 && digits.hasPrefix("0") { return nil }
        return Int64(clean)
    }

    private func parseFloat(_ text: String) -> Double? {
        guard validUnderscores(text), text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) else { return nil }
        return Double(text.replacingUnderscores())
    }

    private func validUnderscores(_ text: String) -> Bool {
        guard text.contains("_") else { return true }
        let chars = Array(text)
        for (i, c) in chars.enumerated() where c == "_" {
            guard i > 0, i < chars.count - 1, chars[i - 1].isHexDigit, chars[i + 1].isHexDigit else { return false }
        }
        return true
    }

    // MARK: - Strings

    private mutating func parseLiteralString() throws(TOMLError) -> String {
        advance()
        let start = index
        while let c = current, c != UInt8(ascii: "'") {
            if c == UInt8(ascii: "\n") { throw error("newline inside a literal string") }
            advance()
        }
        guard current == UInt8(ascii: "'") else { throw error("unterminated literal string") }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        advance()
        return text
    }

    private mutating func parseMultilineLiteral() throws(TOMLError) -> String {
        index += 3
        if current == UInt8(ascii: "\r") { advance() }
        if current == UInt8(ascii: "\n") { advance() }
        let start = index
        while index < bytes.count {
            if current == UInt8(ascii: "'") && peek(1) == UInt8(ascii: "'") && peek(2) == UInt8(ascii: "'") {
                var end = index
                while peek(3) == UInt8(ascii: "'") && end - index < 2 {
                    advance()
                    end = index
                }
                let text = String(decoding: bytes[start..<index], as: UTF8.self)
                index += 3
                return text
            }
            advance()
        }
        throw error("unterminated multi-line literal string")
    }

    private mutating func parseBasicString() throws(TOMLError) -> String {
        advance()
        var out: [UInt8] = []
        while let c = current {
            if c == UInt8(ascii: "\"") {
                advance()
                return String(decoding: out, as: UTF8.self)
            }
            if c == UInt8(ascii: "\n") { throw error("newline inside a basic string") }
            if c == UInt8(ascii: "\\") {
                try parseEscape(into: &out)
            } else {
                out.append(c)
                advance()
            }
        }
        throw error("unterminated string")
    }

    private mutating func parseMultilineBasic() throws(TOMLError) -> String {
        index += 3
        if current == UInt8(ascii: "\r") { advance() }
        if current == UInt8(ascii: "\n") { advance() }
        var out: [UInt8] = []
        while let c = current {
            if c == UInt8(ascii: "\"") && peek(1) == UInt8(ascii: "\"") && peek(2) == UInt8(ascii: "\"") {
                while peek(3) == UInt8(ascii: "\"") && out.count >= 0 {
                    out.append(c)
                    advance()
                }
                index += 3
                return String(decoding: out, as: UTF8.self)
            }
            if c == UInt8(ascii: "\\") {
                // A line-ending backslash trims the newline and the leading whitespace after it.
                var look = index + 1
                while look < bytes.count && (bytes[look] == UInt8(ascii: " ") || bytes[look] == UInt8(ascii: "\t")) {
                    look += 1
                }
                if look < bytes.count && (bytes[look] == UInt8(ascii: "\n") || bytes[look] == UInt8(ascii: "\r")) {
                    while index < look { advance() }
                    skipWhitespaceAndNewlines()
                    continue
                }
                try parseEscape(into: &out)
            } else {
                out.append(c)
                advance()
            }
        }
        throw error("unterminated multi-line string")
    }

    private mutating func skipWhitespaceAndNewlines() {
        while let c = current,
            c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r")
        {
            advance()
        }
    }

    private mutating func parseEscape(into out: inout [UInt8]) throws(TOMLError) {
        advance()
        guard let c = current else { throw error("unterminated escape") }
        advance()
        switch c {
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "\""): out.append(0x22)
        case UInt8(ascii: "\\"): out.append(0x5C)
        case UInt8(ascii: "u"), UInt8(ascii: "U"):
            let width = c == UInt8(ascii: "u") ? 4 : 8
            guard index + width <= bytes.count,
                let code = UInt32(String(decoding: bytes[index..<(index + width)], as: UTF8.self), radix: 16),
                let scalar = Unicode.Scalar(code)
            else { throw error("bad unicode escape") }
            index += width
            out += Array(String(Character(scalar)).utf8)
        default:
            throw error("unknown escape \\\(Character(Unicode.Scalar(c)))")
        }
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}

extension TOMLValue {
    fileprivate static prefix func - (value: TOMLValue) -> TOMLValue {
        if case .float(let f) = value { return .float(-f) }
        return value
    }
}
