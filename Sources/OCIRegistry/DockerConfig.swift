import LinuxKernel
import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Credentials for one registry.
public struct RegistryCredentials: Sendable, Hashable {
    public var username: String
    public var password: String
    /// An OAuth refresh token (`identitytoken`), used as a password in the token flow when set.
    public var identityToken: String?
    /// A bearer token sent as is (`registrytoken`).
    public var registryToken: String?

    public init(username: String, password: String, identityToken: String? = nil, registryToken: String? = nil) {
        self.username = username
        self.password = password
        self.identityToken = identityToken
        self.registryToken = registryToken
    }

    var basicAuthorization: String {
        "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
    }
}

/// Secrets never reach a log line, an error or a status through string interpolation.
extension RegistryCredentials: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String {
        let kinds = [
            password.isEmpty ? nil : "password", identityToken == nil ? nil : "identity token",
            registryToken == nil ? nil : "registry token",
        ].compactMap { $0 }
        return "credentials of \(username.isEmpty ? "(no user)" : username) (\(kinds.joined(separator: ", ")) redacted)"
    }

    public var debugDescription: String { description }
}

/// The `auths` part of Docker's `config.json` (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`).
/// Credential helpers (`credsStore`, `credHelpers`) are recorded but not run.
public struct DockerConfig: Sendable {
    public static let dockerHubKey = "https://index.docker.io/v1/"

    public var auths: [String: RegistryCredentials] = [:]
    public var credentialHelpers: [String: String] = [:]
    public var credentialsStore: String?

    public init() {}

    /// The default location: `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`.
    public static func defaultPath(environment: [String: String]) -> String? {
        if let dir = environment["DOCKER_CONFIG"], !dir.isEmpty { return dir + "/config.json" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.docker/config.json" }
        return nil
    }

    /// Loads a config.json; a missing file is an empty config.
    public static func load(path: String) throws(RegistryError) -> DockerConfig {
        guard FileSystem.exists(path) else { return DockerConfig() }
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(path) } catch { throw .io(path: path, reason: error.description) }
        return try parse(bytes, path: path)
    }

    public static func parse(_ bytes: [UInt8], path: String = "config.json") throws(RegistryError) -> DockerConfig {
        struct Entry: Decodable {
            var auth: String?
            var username: String?
            var password: String?
            var identitytoken: String?
            var registrytoken: String?
        }
        struct File: Decodable {
            var auths: [String: Entry]?
            var credsStore: String?
            var credHelpers: [String: String]?
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: Data(bytes)) } catch {
            throw .invalidConfiguration(path: path, reason: "not a Docker config.json: \(error)")
        }
        var config = DockerConfig()
        config.credentialsStore = file.credsStore
        config.credentialHelpers = file.credHelpers ?? [:]
        for (key, entry) in file.auths ?? [:] {
            var username = entry.username ?? ""
            var password = entry.password ?? ""
            if let auth = entry.auth, !auth.isEmpty {
                guard let decoded = Data(base64Encoded: auth), let text = String(data: decoded, encoding: .utf8),
                    let colon = text.firstIndex(of: ":")
                else { throw .invalidConfiguration(path: path, reason: "auths[\"\(key)\"].auth is not base64(user:password)") }
                username = String(text[..<colon])
                password = String(text[text.index(after: colon)...])
                while password.hasSuffix("\u{0}") { password.removeLast() }
                guard !username.isEmpty else {
                    throw .invalidConfiguration(path: path, reason: "auths[\"\(key)\"].auth has an empty username")
                }
            }
            let creds = RegistryCredentials(
                username: username, password: password,
                identityToken: entry.identitytoken, registryToken: entry.registrytoken)
            config.auths[normalizedKey(key)] = creds
        }
        return config
    }

    /// Credentials for a registry name (`host[:port]`, `docker.io` for Docker Hub).
    public func credentials(for registry: String) -> RegistryCredentials? {
        if registry == ImageReference.dockerHub || registry == ImageReference.dockerHubAPIHost {
            return auths[Self.normalizedKey(Self.dockerHubKey)] ?? auths["docker.io"]
        }
        return auths[registry]
    }

    /// Strips a scheme and a path from legacy keys (docker/cli ConvertToHostname); Docker Hub's keys map to `docker.io`.
    static func normalizedKey(_ key: String) -> String {
        var s = Substring(key)
        if let range = s.firstRange(of: "://") { s = s[range.upperBound...] }
        if let slash = s.firstIndex(of: "/") { s = s[..<slash] }
        let host = String(s)
        return host == "index.docker.io" || host == ImageReference.dockerHubAPIHost ? "docker.io" : host
    }
}
