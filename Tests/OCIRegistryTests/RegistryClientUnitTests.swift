import TestThreads
import Testing

@testable import OCI
@testable import OCIRegistry

@Suite("Registry client: authentication, credentials and hosts parsing", .ownThread)
struct RegistryClientUnitTests {
    @Test("WWW-Authenticate challenges")
    func challenges() {
        let header =
            #"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull",error="invalid_token""#
        let parsed = AuthChallenge.parse([header, #"Basic realm="basic-realm""#])
        #expect(parsed.count == 2)
        let bearer = AuthChallenge.preferred(parsed)
        #expect(bearer?.scheme == .bearer)
        #expect(bearer?.realm == "https://auth.example/token")
        #expect(bearer?.service == "registry.example")
        #expect(bearer?.scopes == ["repository:a/b:pull,push", "repository:c:pull"])
        #expect(bearer?.parameters["error"] == "invalid_token")
        let escaped = AuthChallenge.parse([#"basic Realm="a \"quoted\" realm", charset=UTF-8"#])
        #expect(escaped.first?.scheme == .basic)
        #expect(escaped.first?.realm == #"a "quoted" realm"#)
        #expect(escaped.first?.parameters["charset"] == "UTF-8")
        #expect(AuthChallenge.parse(["Basic realm=\"x\", Bearer realm=\"y\""]).count == 2)
    }

    @Test("Docker config.json credentials")
    func dockerConfig() throws {
        let json = """
            {"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldDp3aXRoOmNvbG9ucw=="},
                      "127.0.0.1:5000":{"username":"u","password":"p"},
                      "http://legacy.example:8080/v1/":{"auth":"bGVnOnB3"}},
             "credHelpers":{"gcr.io":"gcloud"}}
            """
        let config = try DockerConfig.parse(Array(json.utf8))
        #expect(config.credentials(for: "docker.io") == RegistryCredentials(username: "hub", password: "secret:with:colons"))
        #expect(config.credentials(for: "127.0.0.1:5000")?.password == "p")
        #expect(config.credentials(for: "legacy.example:8080")?.username == "leg")
        #expect(config.credentialHelpers["gcr.io"] == "gcloud")
        #expect(throws: RegistryError.self) { try DockerConfig.parse(Array(#"{"auths":{"x":{"auth":"OnB3"}}}"#.utf8)) }
    }

    @Test("containerd hosts.toml: mirrors in file order, capabilities, CA, override_path")
    func hostsToml() throws {
        let text = """
            server = "https://registry.example"

            [host."https://zz-mirror.example"]
              capabilities = ["pull", "resolve"]
              ca = "mirror-ca.pem"
              skip_verify = false
              [host."https://zz-mirror.example".header]
                x-custom = "1"

            [host."http://127.0.0.1:5000/custom/path"]
              capabilities = ["pull"]
              override_path = true
              skip_verify = true
            """
        let config = try HostsConfig.parse(text, baseDirectory: "/etc/certs.d/registry.example")
        #expect(config.hosts.count == 2)
        #expect(config.hosts[0].baseURL == "https://zz-mirror.example")
        #expect(config.hosts[0].pathPrefix == "/v2")
        #expect(config.hosts[0].caFiles == ["/etc/certs.d/registry.example/mirror-ca.pem"])
        #expect(config.hosts[0].headers["x-custom"] == "1")
        #expect(config.hosts[0].capabilities == [.pull, .resolve])
        #expect(config.hosts[1].baseURL == "http://127.0.0.1:5000")
        #expect(config.hosts[1].pathPrefix == "/custom/path")
        #expect(config.hosts[1].skipVerify)
        #expect(config.hosts[1].capabilities == [.pull])
        #expect(config.server?.baseURL == "https://registry.example")
        #expect(config.server?.capabilities == .all)
    }
}
