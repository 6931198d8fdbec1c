/// A parsed image reference `[registry/]repository[:tag][@digest]`, normalised the way docker and containerd
/// do: no registry means `docker.io`, single-component Docker Hub names get `library/`, no tag means `latest`.
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    public static let dockerHub = "docker.io"
    package static let dockerHubAPIHost = "registry-1.docker.io"
    static let defaultTag = "latest"
    static let maxTagLength = 128
    static let maxNameLength = 255

    public var registry: String
    public var repository: String
    public var tag: String?
    public var digest: Digest?

    public init(registry: String, repository: String, tag: String? = nil, digest: Digest? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// Parses a reference. Throws `OCIError.invalidReference` naming what is wrong.
    public init(parsing text: String) throws(OCIError) {
        var rest = Substring(text)
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            digest = try Digest(parsing: String(rest[rest.index(after: at)...]))
            rest = rest[..<at]
        }
        var registry = ImageReference.dockerHub
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" {
                registry = String(first)
                rest = rest[rest.index(after: slash)...]
            }
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
        }
        var repository = String(rest)
        if registry == ImageReference.dockerHub, !repository.contains("/") { repository = "library/" + repository }
        guard ImageReference.isValidName(repository), registry.count + 1 + repository.count <= ImageReference.maxNameLength
        else { throw .invalidReference(text, reason: "repository name \"\(repository)\" is not a valid OCI name") }
        if let tag, !ImageReference.isValidTag(tag) {
            throw .invalidReference(text, reason: "tag \"\(tag)\" must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
        }
        if tag == nil, digest == nil { tag = ImageReference.defaultTag }
        self.init(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    /// The manifest reference used in URLs: the digest when known, else the tag.
    public var reference: String { digest?.description ?? tag ?? ImageReference.defaultTag }

    /// The host that serves the API (Docker Hub's API host differs from its name).
    public var apiHost: String { registry == ImageReference.dockerHub ? ImageReference.dockerHubAPIHost : registry }

    public var description: String {
        var s = "\(registry)/\(repository)"
        if let tag { s += ":\(tag)" }
        if let digest { s += "@\(digest)" }
        return s
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
    static func isValidName(_ name: String) -> Bool {
        let components = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !components.isEmpty else { return false }
        for component in components {
            let chars = Array(component.utf8)
            guard let first = chars.first, let last = chars.last, isAlnum(first), isAlnum(last) else { return false }
            var i = 0
            while i < chars.count {
                if isAlnum(chars[i]) {
                    i += 1
                    continue
                }
                // A separator run: ".", "_", "__" or one or more "-".
                var j = i
                while j < chars.count, !isAlnum(chars[j]) { j += 1 }
                let sep = String(decoding: chars[i..<j], as: UTF8.self)
                guard sep == "." || sep == "_" || sep == "__" || sep.allSatisfy({ $0 == "-" }) else { return false }
                i = j
            }
        }
        return true
    }

    static func isValidTag(_ tag: String) -> Bool {
        let chars = Array(tag.utf8)
        guard let first = chars.first, chars.count <= maxTagLength, isWord(first) else { return false }
        return chars.allSatisfy { isWord($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }
    private static func isWord(_ c: UInt8) -> Bool {
        isAlnum(c) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || c == UInt8(ascii: "_")
    }
}
