import Digests

/// A content digest `<algorithm>:<hex>`. Only sha256 can be verified; other algorithms parse but are refused
/// where content must be checked.
public struct Digest: Sendable, Hashable, Codable, CustomStringConvertible {
    public static let sha256Algorithm = "sha256"

    public let algorithm: String
    public let encoded: String

    /// Parses `sha256:<64 lowercase hex>` (and other `alg:encoded` forms per the OCI grammar).
    public init(parsing text: String) throws(OCIError) {
        guard let colon = text.firstIndex(of: ":") else { throw .invalidDigest(text) }
        let algorithm = String(text[..<colon])
        let encoded = String(text[text.index(after: colon)...])
        let algOK = !algorithm.isEmpty && algorithm.allSatisfy { $0.isLowercase || $0.isNumber || "+._-".contains($0) }
        let encOK = !encoded.isEmpty && encoded.allSatisfy { $0.isLetter || $0.isNumber || "=_-".contains($0) }
        guard algOK, encOK, algorithm.allSatisfy(\.isASCII), encoded.allSatisfy(\.isASCII) else {
            throw .invalidDigest(text)
        }
        if algorithm == Digest.sha256Algorithm {
            guard encoded.count == SHA256.digestByteCount * 2, encoded.allSatisfy({ $0.isHexDigit && !$0.isUppercase })
            else { throw .invalidDigest(text) }
        }
        self.algorithm = algorithm
        self.encoded = encoded
    }

    /// The digest of a finished SHA-256 hash.
    public init(sha256 bytes: [UInt8]) {
        algorithm = Digest.sha256Algorithm
        encoded = Digest.hex(bytes)
    }

    /// Hashes `bytes` with SHA-256.
    public static func sha256(of bytes: some Collection<UInt8>) -> Digest { Digest(sha256: SHA256.hash(bytes)) }

    public var description: String { "\(algorithm):\(encoded)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try Digest(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
