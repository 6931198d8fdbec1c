import LinuxKernel
import Logging
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Tokens and auth schemes learned per endpoint host; shared by all requests of a client.
final class AuthCache: Sendable {
    struct Token: Sendable {
        var value: String
        var expiresAtNanos: UInt64?
        /// From then on a request still uses the token but starts fetching its successor in the background, so
        /// that no request ever waits on a token fetch for expiry (nil: never expires).
        var refreshAtNanos: UInt64?
    }
    struct State {
        /// The challenge each host answered with (bearer realm/service, or basic).
        var challenges: [String: AuthChallenge] = [:]
        /// Bearer tokens keyed by host + sorted scopes (containerd's key).
        var tokens: [String: Token] = [:]
        /// Token fetches under way, by key: requests needing the same token share one fetch.
        var fetches: [String: Task<Token, any Error>] = [:]
        /// Requests that had to wait for a token (none valid): the first of each scope, and any after a refresh
        /// came too late (debug figure, and what the tests check).
        var tokenWaits = 0
    }
    let state = Mutex(State())

    static func key(host: String, scopes: [String]) -> String { host + " " + scopes.sorted().joined(separator: " ") }
}

extension RegistryClient {
    /// Seconds subtracted from a token's lifetime so it is not used right at its expiry.
    static let tokenExpiryMarginSeconds = 10
    /// distribution's token spec: `expires_in` defaults to 60 s when omitted.
    static let defaultTokenLifetimeSeconds = 60

    /// The Authorization header for a request, from what the host asked for before: a cached (or freshly
    /// fetched) bearer token for the scope, or basic credentials. Nil for hosts not known to need auth.
    func authorization(registry: String, endpoint: RegistryEndpoint, scope: String?) async throws(RegistryError) -> String? {
        let host = endpoint.host
        guard let challenge = auth.state.withLock({ $0.challenges[host] }) else { return nil }
        let creds = configuration.credentials(for: registry, endpointHost: host)
        switch challenge.scheme {
        case .basic: return creds?.basicAuthorization
        case .bearer:
            if let token = creds?.registryToken { return "Bearer \(token)" }
            let scopes = Self.scopes(challenge: challenge, requested: scope)
            let key = AuthCache.key(host: host, scopes: scopes)
            let now = monotonicNanoseconds()
            if let token = auth.state.withLock({ $0.tokens[key] }), token.expiresAtNanos.map({ $0 > now }) ?? true {
                if let refreshAt = token.refreshAtNanos, refreshAt <= now {
                    // Near its expiry: the successor is fetched meanwhile; this request goes on with the token.
                    _ = tokenFetch(key: key, challenge: challenge, scopes: scopes, credentials: creds, registry: registry, host: host)
                }
                return "Bearer \(token.value)"
            }
            let fetch = tokenFetch(key: key, challenge: challenge, scopes: scopes, credentials: creds, registry: registry, host: host)
            auth.state.withLock { $0.tokenWaits += 1 }
            do {
                return "Bearer \(try await fetch.value.value)"
            } catch let error as RegistryError {
                throw error
            } catch {
                throw .tokenFetchFailed(realm: challenge.realm ?? "", status: 0, reason: "\(error)")
            }
        case .other: return nil
        }
    }

    /// The fetch of the token for `key` under way, or a new one: it stores the token when it arrives and is
    /// forgotten either way, so concurrent requests share one fetch and a failed one is retried by the next.
    private func tokenFetch(
        key: String, challenge: AuthChallenge, scopes: [String], credentials: RegistryCredentials?, registry: String, host: String
    ) -> Task<AuthCache.Token, any Error> {
        auth.state.withLock { state in
            if let running = state.fetches[key] { return running }
            let auth = self.auth
            let task = Task {
                defer { auth.state.withLock { _ = $0.fetches.removeValue(forKey: key) } }
                let token = try await self.fetchToken(
                    challenge: challenge, scopes: scopes, credentials: credentials, registry: registry, host: host)
                auth.state.withLock { $0.tokens[key] = token }
                return token
            }
            state.fetches[key] = task
            return task
        }
    }

    /// Handles a 401: remembers the challenge and says whether a retry can succeed.
    func authenticate(
        _ challenges: [AuthChallenge], registry: String, endpoint: RegistryEndpoint, scope: String?
    )
        async throws(RegistryError) -> Bool
    {
        guard let challenge = AuthChallenge.preferred(challenges) else { return false }
        let host = endpoint.host
        let creds = configuration.credentials(for: registry, endpointHost: host)
        switch challenge.scheme {
        case .basic:
            guard creds != nil else { return false }
        case .bearer:
            guard challenge.realm != nil else { return false }
            // A 401 with a token in hand means that token is no good any more (expired or insufficient scope).
            let key = AuthCache.key(host: host, scopes: Self.scopes(challenge: challenge, requested: scope))
            auth.state.withLock { _ = $0.tokens.removeValue(forKey: key) }
        case .other:
            return false
        }
        auth.state.withLock { $0.challenges[host] = challenge }
        logger.debug("registry asked for authentication", metadata: ["registry.host": "\(host)", "auth.scheme": "\(challenge.scheme)"])
        return true
    }

    /// The scopes to ask for: the challenge's plus the one this request needs.
    static func scopes(challenge: AuthChallenge, requested: String?) -> [String] {
        var scopes = challenge.scopes
        if let requested, !scopes.contains(requested) { scopes.append(requested) }
        return scopes.sorted()
    }

    /// `GET <realm>?service=…&scope=…` with basic credentials if any (token.md), or the OAuth2 refresh-token POST
    /// for an identity token (oauth.md).
    func fetchToken(
        challenge: AuthChallenge, scopes: [String], credentials endpointCredentials: RegistryCredentials?, registry: String, host: String
    )
        async throws(RegistryError) -> AuthCache.Token
    {
        let realm = challenge.realm ?? ""
        var request = HTTPRequest(url: realm)
        request.proxy = configuration.proxy
        request.timeouts = configuration.timeouts
        request.totalTimeoutSeconds = configuration.timeouts.requestSeconds
        let realmHost = RegistryEndpoint(baseURL: realm).host
        let credentials = configuration.realmCredentials(endpointCredentials, registry: registry, endpointHost: host, realmHost: realmHost)
        if endpointCredentials != nil, credentials == nil {
            logger.notice(
                "credentials withheld from a token service on another host; configure credentials for that host to send them",
                metadata: ["registry.host": "\(host)", "auth.realm_host": "\(realmHost)"])
        }
        if let settings = configuration.hosts[realmHost] {
            request.tls = try tlsOptions(configuration.defaultEndpoint(for: realmHost))
            _ = settings
        }
        var query: [(String, String)] = []
        if let service = challenge.service { query.append(("service", service)) }
        if let identity = credentials?.identityToken, !identity.isEmpty {
            query += [("grant_type", "refresh_token"), ("refresh_token", identity), ("client_id", configuration.userAgent)]
            query += [("scope", scopes.joined(separator: " "))]
            request.method = "POST"
            request.headers = [("Content-Type", "application/x-www-form-urlencoded")]
            request.body = .bytes(Array(Self.formEncode(query).utf8))
        } else {
            query += scopes.map { ("scope", $0) }
            request.url = realm + (realm.contains("?") ? "&" : "?") + Self.formEncode(query)
            if let credentials { request.headers = [("Authorization", credentials.basicAuthorization)] }
        }
        let response = try await transport.perform(request)
        guard response.status == 200 else {
            if response.status == 401 || response.status == 403 {
                throw .unauthorized(host: host, scope: scopes.joined(separator: " "), status: response.status, errors: [])
            }
            throw .tokenFetchFailed(
                realm: realm, status: response.status, reason: String(decoding: response.body.prefix(512), as: UTF8.self))
        }
        struct Body: Decodable {
            var token: String?
            var access_token: String?
            var expires_in: Int?
        }
        guard let body = try? JSONDecoder().decode(Body.self, from: Data(response.body)),
            let value = body.access_token ?? body.token, !value.isEmpty
        else { throw .tokenFetchFailed(realm: realm, status: response.status, reason: "no token in the response") }
        let lifetime = body.expires_in ?? Self.defaultTokenLifetimeSeconds
        var expiry: UInt64?
        var refresh: UInt64?
        if lifetime > 0 {
            let usable = max(lifetime - min(Self.tokenExpiryMarginSeconds, lifetime / 2), 1)
            let issued = monotonicNanoseconds()
            expiry = issued + UInt64(usable) * 1_000_000_000
            // The last quarter of its usable life (at least the last 5 s of it) goes to fetching the next one.
            let ahead = min(max(usable / 4, 5), usable)
            refresh = issued + UInt64(usable - ahead) * 1_000_000_000
        }
        logger.debug(
            "fetched a registry token",
            metadata: ["registry.host": "\(host)", "auth.scopes": "\(scopes)", "auth.expires_in": "\(lifetime)"])
        return AuthCache.Token(value: value, expiresAtNanos: expiry, refreshAtNanos: refresh)
    }

    static func formEncode(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(percentEncode($0.0))=\(percentEncode($0.1))" }.joined(separator: "&")
    }

    /// RFC 3986 unreserved characters pass; everything else is %XX.
    static func percentEncode(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(Character(Unicode.Scalar(byte)))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
