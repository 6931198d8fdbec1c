import CRIClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LinuxKernel
import RAFSBuilder
import SnapshotterAPI
import TestSupport
import TestThreads
import Testing

/// Kubernetes' image pull secrets reach the snapshotter: kubelet talks to the daemon's CRI image-service
/// proxy, which keeps the credentials of each PullImage and forwards it to containerd 1.6's CRI plugin;
/// the daemon's own pull of the image (for remote snapshots) then authenticates with them.
@Suite(
    "CRI image-service proxy: credentials from Kubernetes pulls", .serialized, .timeLimit(.minutes(5)),
    .enabled(
        if: ContainerdHarness.available && BusyboxImage.available && RegistryTestSupport.haveTools,
        "needs root, containerd, runc, busybox-static, docker-registry and skopeo (make setup)"), .ownThread)
struct CRICredentialsTests {
    /// Messages as their encoded bytes: the test speaks CRI's PullImage with the auth field, which the
    /// generated test client leaves out.
    struct RawBytes: MessageSerializer, MessageDeserializer {
        typealias Message = [UInt8]
        func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
        func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
            serializedMessageBytes.withUnsafeBytes { Array($0) }
        }
    }

    /// `runtime.v1.PullImageRequest{image: {image: reference}, auth: {username, password}}`, protobuf-encoded.
    static func pullImageRequest(_ reference: String, username: String, password: String) -> [UInt8] {
        func field(_ number: UInt8, _ bytes: [UInt8]) -> [UInt8] {
            var length = bytes.count
            var varint: [UInt8] = []
            repeat {
                varint.append(UInt8(length & 0x7f) | (length >= 0x80 ? 0x80 : 0))
                length >>= 7
            } while length > 0
            return [number << 3 | 2] + varint + bytes
        }
        let spec = field(1, Array(reference.utf8))
        let auth = field(1, Array(username.utf8)) + field(2, Array(password.utf8))
        return field(1, spec) + field(2, auth)
    }

    /// A CRI PullImage with credentials through `socket`; returns the response's bytes.
    static func pull(_ reference: String, via socket: String, username: String, password: String) async throws -> [UInt8] {
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            try await client.unary(
                request: ClientRequest(message: pullImageRequest(reference, username: username, password: password)),
                descriptor: MethodDescriptor(fullyQualifiedService: "runtime.v1.ImageService", method: "PullImage"),
                serializer: RawBytes(), deserializer: RawBytes(), options: .defaults
            ) { try $0.message }
        }
    }

    @Test(
        "a pull with image pull secrets through the proxy gets remote snapshots from a registry that requires auth; straight to containerd it cannot"
    )
    func credentialsReachTheDaemon() async throws {
        let (user, password) = ("kube", "s3cret-pull")
        let registry = try TestRegistry(auth: .htpasswd(user: user, password: password))
        defer { registry.stop() }
        let work = try RegistryTestSupport.tempDirectory("cri-auth")
        defer { try? FileSystem.removeTree(work) }
        let image = try BusyboxImage(directory: work, extraFiles: ["data/big.bin": RegistryTestSupport.randomBytes(8 << 20, seed: 5)])
        let nydus = work + "/nydus"
        _ = try ImageConverter(options: .init(targetReference: image.tag)).convert(source: image.layout, destination: nydus)
        for tag in ["v1", "direct"] {
            try RegistryTestSupport.run(
                RegistryTestSupport.skopeoBinary,
                [
                    "--insecure-policy", "copy", "--format", "oci", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds",
                    "\(user):\(password)", "oci:\(nydus):\(image.tag)", "docker://\(registry.host)/secret/app:\(tag)",
                ])
        }

        // containerd dials the snapshotter lazily and the proxy dials containerd lazily: either may start first.
        let snapshotterSocket = work + "/ondemand.sock"
        let containerd = try ContainerdHarness(
            "cri-auth", proxySocket: snapshotterSocket, cri: true, plainHTTPRegistries: [registry.host])
        defer { containerd.tearDown() }
        let criProxy = work + "/cri-image.sock"
        let daemon = try DaemonHarness(
            "cri-auth",
            arguments: [
                "--containerd-socket", snapshotterSocket, "--cri-image-socket", criProxy, "--cri-upstream-socket", containerd.address,
            ])
        defer { daemon.tearDown() }
        try daemon.start()
        try containerd.start()
        try RegistryTestSupport.waitForPath(criProxy)

        // Straight to containerd: it has the credentials, the daemon does not, so its pull is refused and the
        // nydus layers cannot be unpacked by containerd either.
        do {
            _ = try await Self.pull("\(registry.host)/secret/app:direct", via: containerd.address, username: user, password: password)
            Issue.record("containerd unpacked a nydus image without the daemon")
        } catch {
            #expect("\(error)".contains("no processor") || "\(error)".contains("unpack"), "\(error)")
        }
        #expect(try daemon.client().images().isEmpty)

        // Through the proxy: the daemon learns the credentials and serves the image lazily.
        let response: [UInt8]
        do {
            response = try await Self.pull("\(registry.host)/secret/app:v1", via: criProxy, username: user, password: password)
        } catch {
            Issue.record("CRI pull through the proxy: \(error)\n\(daemon.log().suffix(4000))\n\(containerd.log().suffix(3000))")
            return
        }
        #expect(!response.isEmpty)
        #expect(daemon.log().contains("registry credentials from a CRI pull kept"))
        #expect(!daemon.log().contains(password), "the password reached the log")
        let images = try daemon.client().images()
        #expect(images.count == 1 && images.first?.format == "nydus", "\(images)")
        let snapshots = try daemon.client().list()
        #expect(!snapshots.isEmpty && snapshots.allSatisfy { $0.kind == .committed && $0.labels["containerd.io/snapshot.ref"] != nil })
        var output = ""
        for attempt in 1...3 where !output.contains(BusyboxImage.hello) {
            output = try containerd.ctrOK(
                [
                    "run", "--rm", "--snapshotter", ContainerdHarness.snapshotter, "\(registry.host)/secret/app:v1", "s\(attempt)",
                    "/bin/cat",
                    "/etc/hello.txt",
                ], namespace: "k8s.io")
        }
        #expect(output.contains(BusyboxImage.hello))
        // Other image-service calls pass through unchanged.
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: criProxy), transportSecurity: .plaintext)
        let listed = try await withGRPCClient(transport: transport) { client in
            try await client.unary(
                request: ClientRequest(message: [UInt8]()),
                descriptor: MethodDescriptor(fullyQualifiedService: "runtime.v1.ImageService", method: "ListImages"),
                serializer: RawBytes(), deserializer: RawBytes(), options: .defaults
            ) { try $0.message }
        }
        #expect(String(decoding: listed, as: UTF8.self).contains("secret/app"), "ListImages through the proxy")
    }
}
