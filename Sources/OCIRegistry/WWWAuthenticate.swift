/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1, RFC 6750 §3):
/// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
public struct AuthChallenge: Sendable, Hashable {
    public enum Scheme: Sendable, Hashable {
        case basic, bearer
        case other(String)
    }

    public var scheme: Scheme
    /// Parameter names lowercased; values unquoted and unescaped.
    public var parameters: [String: String]

    public var realm: String? { parameters["realm"] }
    public var service: String? { parameters["service"] }
    /// The space-separated scopes of the `scope` parameter.
    public var scopes: [String] { parameters["scope"].map { $0.split(separator: " ").map(String.init) } ?? [] }

    /// Parses every challenge in the given header values. Unparseable parts are skipped, never fatal.
    public static func parse(_ headerValues: [String]) -> [AuthChallenge] {
        headerValues.flatMap(parse(header:))
    }

    /// Bearer over basic over anything else, like containerd.
    public static func preferred(_ challenges: [AuthChallenge]) -> AuthChallenge? {
        challenges.first { $0.scheme == .bearer } ?? challenges.first { $0.scheme == .basic } ?? challenges.first
    }

    static func parse(header: String) -> [AuthChallenge] {
        var scanner = Scanner(Array(header.utf8))
        var result: [AuthChallenge] = []
        while true {
            scanner.skip { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\t") }
            guard let scheme = scanner.token(), !scheme.isEmpty else { break }
            var challenge = AuthChallenge(scheme: Self.scheme(scheme), parameters: [:])
            // Parameters until the next bare token that is not followed by "=".
            while true {
                scanner.skip { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\t") }
                let mark = scanner.position
                guard let name = scanner.token(), !name.isEmpty else { break }
                scanner.skip { $0 == UInt8(ascii: " ") }
                guard scanner.peek == UInt8(ascii: "=") else {
                    scanner.position = mark
                    break
                }
                scanner.position += 1
                scanner.skip { $0 == UInt8(ascii: " ") }
                let value = scanner.peek == UInt8(ascii: "\"") ? scanner.quoted() : (scanner.token() ?? "")
                challenge.parameters[name.lowercased()] = value
            }
            result.append(challenge)
        }
        return result
    }

    private static func scheme(_ s: String) -> Scheme {
        switch s.lowercased() {
        case "basic": return .basic
        case "bearer": return .bearer
        default: return .other(s.lowercased())
        }
    }

    private struct Scanner {
        let bytes: [UInt8]
        var position = 0
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        var peek: UInt8? { position < bytes.count ? bytes[position] : nil }
        mutating func skip(while predicate: (UInt8) -> Bool) {
            while let c = peek, predicate(c) { position += 1 }
        }
        /// An RFC 9110 token (tchar run), allowing "/" for token68-ish values.
        mutating func token() -> String? {
            let start = position
            while let c = peek, c > 32, c < 127, !"\",;=\\ ".utf8.contains(c) { position += 1 }
            return position > start ? String(decoding: bytes[start..<position], as: UTF8.self) : nil
        }
        mutating func quoted() -> String {
            position += 1
            var out: [UInt8] = []
            while let c = peek {
                position += 1
                if c == UInt8(ascii: "\\"), let next = peek {
                    out.append(next)
                    position += 1
                    continue
                }
                if c == UInt8(ascii: "\"") { break }
                out.append(c)
            }
            return String(decoding: out, as: UTF8.self)
        }
    }
}
