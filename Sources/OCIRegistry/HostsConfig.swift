import LinuxKernel
import TOML

/// A containerd `hosts.toml` (docs/hosts.md): `server`, and `[host."<url>"]` tables with `capabilities`, `ca`,
/// `client`, `skip_verify`, `header` and `override_path`, tried in file order before the server.
public struct HostsConfig: Sendable, Hashable {
    public var server: RegistryEndpoint?
    public var hosts: [RegistryEndpoint] = []

    /// Reads `<directory>/<registry>/hosts.toml`, falling back to `<directory>/_default/hosts.toml`.
    /// Returns nil when neither exists.
    public static func load(directory: String, registry: String) throws(RegistryError) -> HostsConfig? {
        let candidates = [registry, registry.replacingColon(), "_default"]
        for name in candidates {
            let path = "\(directory)/\(name)/hosts.toml"
            guard FileSystem.exists(path) else { continue }
            let bytes: [UInt8]
            do { bytes = try FileSystem.readFile(path) } catch { throw .io(path: path, reason: error.description) }
            return try parse(String(decoding: bytes, as: UTF8.self), path: path, baseDirectory: "\(directory)/\(name)")
        }
        return nil
    }

    public static func parse(_ text: String, path: String = "hosts.toml", baseDirectory: String = ".") throws(RegistryError) -> HostsConfig
    {
        let root: TOMLValue
        do { root = try TOMLParser.parse(text) } catch { throw .invalidConfiguration(path: path, reason: error.description) }
        var config = HostsConfig()
        if let server = root["server"]?.string {
            var endpoint = try endpoint(url: server, table: root.table ?? [:], path: path, base: baseDirectory)
            if root["capabilities"] == nil { endpoint.capabilities = .all }
            config.server = endpoint
        }
        guard let hostTable = root["host"]?.table else { return config }
        // The parser's tables are unordered; containerd tries hosts in file order, so order by first appearance.
        let ordered = hostTable.keys.sorted { a, b in
            (text.firstRange(of: "\"\(a)\"")?.lowerBound ?? text.endIndex) < (text.firstRange(of: "\"\(b)\"")?.lowerBound ?? text.endIndex)
        }
        for url in ordered {
            var endpoint = try endpoint(url: url, table: hostTable[url]?.table ?? [:], path: path, base: baseDirectory)
            if hostTable[url]?["capabilities"] == nil { endpoint.capabilities = [.pull, .resolve] }
            config.hosts.append(endpoint)
        }
        return config
    }

    /// Mirrors in order, then the server (or the default endpoint when `server` is absent).
    func endpoints(defaultServer: RegistryEndpoint) -> [RegistryEndpoint] {
        hosts + [server ?? defaultServer]
    }

    private static func endpoint(
        url raw: String, table: [String: TOMLValue], path: String, base: String
    ) throws(RegistryError) -> RegistryEndpoint {
        var url = raw
        if !url.contains("://") { url = "https://" + url }
        guard let schemeEnd = url.firstRange(of: "://") else { throw .invalidConfiguration(path: path, reason: "bad host URL \(raw)") }
        let afterScheme = url[schemeEnd.upperBound...]
        let hostEnd = afterScheme.firstIndex(of: "/") ?? afterScheme.endIndex
        let baseURL = String(url[..<hostEnd])
        var pathPart = String(afterScheme[hostEnd...])
        while pathPart.hasSuffix("/") { pathPart.removeLast() }
        let override = table["override_path"]?.boolean ?? false
        if !override, !pathPart.hasSuffix("/v2") { pathPart += "/v2" }
        var endpoint = RegistryEndpoint(baseURL: baseURL, pathPrefix: pathPart)
        if let caps = table["capabilities"]?.array {
            var set: RegistryCapabilities = []
            for cap in caps.compactMap(\.string) {
                switch cap {
                case "pull": set.insert(.pull)
                case "resolve": set.insert(.resolve)
                case "push": set.insert(.push)
                default: throw .invalidConfiguration(path: path, reason: "unknown capability \"\(cap)\"")
                }
            }
            endpoint.capabilities = set
        }
        func absolute(_ p: String) -> String { p.hasPrefix("/") ? p : "\(base)/\(p)" }
        switch table["ca"] {
        case .string(let s)?: endpoint.caFiles = [absolute(s)]
        case .array(let a)?: endpoint.caFiles = a.compactMap(\.string).map(absolute)
        default: break
        }
        switch table["client"] {
        case .string(let s)?: endpoint.clientCertificate = absolute(s)
        case .array(let a)?:
            // Either ["cert", "key"] or [["cert", "key"], ...]: the first pair is used.
            let pair = a.first?.array ?? a
            endpoint.clientCertificate = pair.first?.string.map(absolute)
            if pair.count > 1 { endpoint.clientKey = pair[1].string.map(absolute) }
        default: break
        }
        endpoint.skipVerify = table["skip_verify"]?.boolean ?? false
        for (name, value) in table["header"]?.table ?? [:] {
            endpoint.headers[name] = value.string ?? value.array?.compactMap(\.string).joined(separator: ", ")
        }
        return endpoint
    }
}

extension String {
    /// `host:port` → `host_port_`, the alternative directory name containerd accepts.
    fileprivate func replacingColon() -> String {
        guard let colon = lastIndex(of: ":") else { return self }
        return self[..<colon] + "_" + self[index(after: colon)...] + "_"
    }
}
