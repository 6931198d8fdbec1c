import SnapshotterAPI

/// containerd's filter language for snapshots: `<fieldpath>[<op><value>]`, selectors joined by `,` (AND);
/// several filters are OR-ed by the caller. Fields: `name`, `parent`, `kind`, `labels.<key>` (quote keys
/// with dots or slashes: `labels."containerd.io/snapshot.ref"`). Operators: `==`, `!=`, `~=` (a POSIX extended
/// regular expression, matched in linear time: `LinearRegex`).
struct SnapshotFilter {
    enum Operator {
        case present
        case equal(String)
        case notEqual(String)
        case matches(LinearRegex)
    }

    struct Selector {
        var fieldpath: [String]
        var op: Operator
    }

    let selectors: [Selector]

    init(parsing text: String) throws(SnapshotError) {
        var scanner = Scanner(characters: Array(text), source: text)
        var selectors: [Selector] = []
        repeat {
            selectors.append(try scanner.selector())
        } while scanner.consume(",")
        guard scanner.atEnd else { throw scanner.failure("unexpected text after the last selector") }
        self.selectors = selectors
    }

    func matches(_ info: SnapshotInfo) -> Bool {
        selectors.allSatisfy { selector in
            let (value, present) = Self.field(selector.fieldpath, of: info)
            switch selector.op {
            case .present: return present
            case .equal(let expected): return present && value == expected
            case .notEqual(let expected): return value != expected
            case .matches(let regex): return present && regex.matches(value)
            }
        }
    }

    private static func field(_ path: [String], of info: SnapshotInfo) -> (String, Bool) {
        switch path.first {
        case "name": return (info.name, !info.name.isEmpty)
        case "parent": return (info.parent, !info.parent.isEmpty)
        case "kind": return (info.kind.rawValue, true)
        case "labels" where path.count > 1:
            let key = path.dropFirst().joined(separator: ".")
            if let value = info.labels[key] { return (value, true) }
            return ("", false)
        default: return ("", false)
        }
    }

    private struct Scanner {
        let characters: [Character]
        let source: String
        var index = 0

        var atEnd: Bool {
            mutating get {
                skipSpaces()
                return index >= characters.count
            }
        }

        func failure(_ reason: String) -> SnapshotError {
            .invalidFilter(filter: source, reason: "\(reason) at offset \(index)")
        }

        mutating func skipSpaces() {
            while index < characters.count && characters[index] == " " { index += 1 }
        }

        mutating func consume(_ text: String) -> Bool {
            skipSpaces()
            let expected = Array(text)
            guard index + expected.count <= characters.count, Array(characters[index..<(index + expected.count)]) == expected
            else { return false }
            index += expected.count
            return true
        }

        mutating func selector() throws(SnapshotError) -> Selector {
            var path: [String] = []
            repeat {
                path.append(try fieldName())
            } while consume(".")
            skipSpaces()
            if index >= characters.count || characters[index] == "," { return Selector(fieldpath: path, op: .present) }
            if consume("==") { return Selector(fieldpath: path, op: .equal(try value())) }
            if consume("!=") { return Selector(fieldpath: path, op: .notEqual(try value())) }
            if consume("~=") {
                let pattern = try value()
                do throws(LinearRegex.Refusal) {
                    return Selector(fieldpath: path, op: .matches(try LinearRegex(pattern)))
                } catch {
                    throw failure("bad regular expression \(pattern.debugDescription): \(error)")
                }
            }
            throw failure("expected ==, != or ~=")
        }

        mutating func fieldName() throws(SnapshotError) -> String {
            skipSpaces()
            if index < characters.count && characters[index] == "\"" { return try quoted() }
            let start = index
            while index < characters.count,
                characters[index].isLetter || characters[index].isNumber || characters[index] == "_" || characters[index] == "-"
            {
                index += 1
            }
            guard index > start else { throw failure("expected a field name") }
            return String(characters[start..<index])
        }

        mutating func value() throws(SnapshotError) -> String {
            skipSpaces()
            if index < characters.count && characters[index] == "\"" { return try quoted() }
            let start = index
            while index < characters.count && characters[index] != "," { index += 1 }
            let text = String(characters[start..<index]).trimmingSpaces()
            guard !text.isEmpty else { throw failure("expected a value") }
            return text
        }

        mutating func quoted() throws(SnapshotError) -> String {
            index += 1
            var out = ""
            while index < characters.count {
                let c = characters[index]
                index += 1
                if c == "\"" { return out }
                if c == "\\" {
                    guard index < characters.count else { break }
                    let escaped = characters[index]
                    index += 1
                    switch escaped {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    default: out.append(escaped)
                    }
                } else {
                    out.append(c)
                }
            }
            throw failure("unterminated quoted string")
        }
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
