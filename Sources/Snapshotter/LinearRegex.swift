#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A list filter's `~=` pattern: a POSIX extended regular expression matched by the C library without
/// backtracking (`REG_NOSUB`: no submatches, so glibc runs its automaton, linear in the value's length), so a
/// pattern from a request such as `(a|a)*$` cannot make the daemon spin. containerd's own matcher (Go's RE2)
/// is linear too; patterns use POSIX syntax (no `\d`, no `(?i)`). Back-references, which no automaton can
/// match, and large repetition counts, which blow up the automaton, are refused.
final class LinearRegex {
    /// Longest pattern accepted.
    static let maximumPatternLength = 256
    /// Largest `{n}` / `{n,m}` bound accepted.
    static let maximumRepetition = 32

    enum Refusal: Error, CustomStringConvertible {
        case tooLong(length: Int)
        case backReference
        case repetition(bound: Int)
        case invalid(reason: String)

        var description: String {
            switch self {
            case .tooLong(let length): return "pattern of \(length) bytes (at most \(LinearRegex.maximumPatternLength))"
            case .backReference: return "back-references are not supported"
            case .repetition(let bound): return "repetition count \(bound) (at most \(LinearRegex.maximumRepetition))"
            case .invalid(let reason): return reason
            }
        }
    }

    /// Compiled once, used by one request at a time (a filter belongs to one call).
    private var compiled = regex_t()

    init(_ pattern: String) throws(Refusal) {
        let bytes = Array(pattern.utf8)
        guard bytes.count <= Self.maximumPatternLength else { throw .tooLong(length: bytes.count) }
        var index = 0
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\\") where index + 1 < bytes.count:
                if (UInt8(ascii: "1")...UInt8(ascii: "9")).contains(bytes[index + 1]) { throw .backReference }
                index += 1
            case UInt8(ascii: "{"):
                var number = 0
                var cursor = index + 1
                while cursor < bytes.count, bytes[cursor] != UInt8(ascii: "}") {
                    if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[cursor]) {
                        number = min(number * 10 + Int(bytes[cursor] - UInt8(ascii: "0")), 1 << 20)
                        if number > Self.maximumRepetition { throw .repetition(bound: number) }
                    } else {
                        number = 0
                    }
                    cursor += 1
                }
            default: break
            }
            index += 1
        }
        let code = regcomp(&compiled, pattern, REG_EXTENDED | REG_NOSUB)
        guard code == 0 else {
            var message = [CChar](repeating: 0, count: 256)
            regerror(code, &compiled, &message, message.count)
            let text = message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            throw .invalid(reason: String(decoding: text, as: UTF8.self))
        }
    }

    deinit { regfree(&compiled) }

    /// Whether the pattern matches somewhere in `value` (like Go's `MatchString`).
    func matches(_ value: String) -> Bool {
        regexec(&compiled, value, 0, nil, 0) == 0
    }
}
