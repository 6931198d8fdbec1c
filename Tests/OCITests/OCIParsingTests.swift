import TestThreads
import Testing

@testable import Digests
@testable import OCI

@Suite("OCI: digests, references, platforms", .ownThread)
struct OCIParsingTests {
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
        #expect(throws: OCIError.self) { try ImageReference(parsing: text) }
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
