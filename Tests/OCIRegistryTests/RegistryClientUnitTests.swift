import Testing
@testable import Digests
@testable import OCI
@testable import OCIRegistry

@Suite("Registry client: parsing and hashing")
struct RegistryClientUnitTests {
    @Test(
        "SHA-256 NIST vectors, fed in uneven pieces",
        arguments: [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
            ),
            (
                "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
                "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
            ),
        ])
    func nist(message: String, expected: String) {
        #expect(Digest.sha256(of: Array(message.utf8)).encoded == expected)
        var hasher = SHA256()
        var rest = Array(message.utf8)[...]
        var step = 1
        while !rest.isEmpty {
            hasher.update(rest.prefix(step))
            rest = rest.dropFirst(step)
            step = step * 3 % 67 + 1
        }
        #expect(Digest(sha256: hasher.finalize()).encoded == expected)
    }

    @Test("SHA-256 of one million 'a' (NIST long message)")
    func millionA() {
        var hasher = SHA256()
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        for _ in 0..<1000 { hasher.update(chunk) }
        #expect(Digest(sha256: hasher.finalize()).encoded == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test(
        "digests",
        arguments: [
            ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", true),
            ("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", false),
            ("sha256:abc", false),
            ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", false),
            ("sha512:abcdef", true),
        ])
    func digests(text: String, valid: Bool) {
        #expect(((try? Digest(parsing: text)) != nil) == valid, Comment(rawValue: text))
    }

    @Test(
        "references",
        arguments: [
            ("alpine", "docker.io", "library/alpine", "latest"),
            ("127.0.0.1:5000/test/app:v1", "127.0.0.1:5000", "test/app", "v1"),
            ("localhost/a/b", "localhost", "a/b", "latest"),
            (
                "ghcr.io/o/r@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "ghcr.io", "o/r",
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
        ])
    func references(text: String, registry: String, repository: String, reference: String) throws {
        let ref = try ImageReference(parsing: text)
        #expect(ref.registry == registry)
        #expect(ref.repository == repository)
        #expect(ref.reference == reference)
    }

    @Test(
        "bad references are refused", arguments: ["Upper/case", "a//b", "x:bad tag", "-a/b", "a/b:" + String(repeating: "t", count: 129)])
    func badReferences(text: String) {
        #expect(throws: RegistryError.self) { try ImageReference(parsing: text) }
    }

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

    @Test(
        "platform matching with containerd's normalisation",
        arguments: [
            (Platform(architecture: "x86_64"), Platform(architecture: "amd64"), true),
            (Platform(architecture: "aarch64"), Platform(architecture: "arm64", variant: "v8"), true),
            (Platform(architecture: "armhf"), Platform(architecture: "arm", variant: "v7"), true),
            (Platform(architecture: "arm", variant: "v6"), Platform(architecture: "arm", variant: "v7"), false),
            (Platform(architecture: "amd64"), Platform(os: "windows", architecture: "amd64"), false),
        ])
    func platforms(wanted: Platform, entry: Platform, matches: Bool) {
        #expect(wanted.matches(entry) == matches)
    }

    @Test("index selection takes the first matching manifest")
    func indexSelection() throws {
        let d = { (n: Int, p: Platform) in
            Descriptor(mediaType: MediaType.ociManifest, digest: Digest.sha256(of: [UInt8(n)]), size: 10, platform: p)
        }
        let index = ImageIndex(manifests: [
            d(1, Platform(architecture: "arm64")), d(2, Platform(architecture: "amd64")), d(3, Platform(architecture: "amd64")),
        ])
        #expect(index.select(Platform(architecture: "amd64"))?.digest == Digest.sha256(of: [2]))
        #expect(index.select(Platform(architecture: "s390x")) == nil)
    }
}
