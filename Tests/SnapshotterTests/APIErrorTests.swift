import Foundation
import LinuxKernel
import SnapshotterAPI
import Synchronization
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Bad input gets a clear error of the right kind and changes nothing.
@Suite("Bad input through the real socket", .ownThread)
struct APIErrorTests {
    struct BadCall: CustomTestStringConvertible, Sendable {
        let name: String
        let method: String
        let path: String
        let body: String?
        let status: Int
        let kind: ErrorKind
        let message: String
        var testDescription: String { name }
    }

    static let badCalls: [BadCall] = [
        BadCall(
            name: "malformed JSON", method: "POST", path: "/v1/snapshots/prepare", body: "{\"key\": ", status: 400, kind: .invalidArgument,
            message: "malformed JSON body"),
        BadCall(
            name: "wrong JSON type", method: "POST", path: "/v1/snapshots/prepare", body: "{\"key\": 5}", status: 400,
            kind: .invalidArgument, message: "field key must be String"),
        BadCall(
            name: "missing body", method: "POST", path: "/v1/snapshots/prepare", body: nil, status: 400, kind: .invalidArgument,
            message: "needs a JSON body"),
        BadCall(
            name: "unknown route", method: "GET", path: "/v1/nothing", body: nil, status: 404, kind: .notFound,
            message: "no route GET /v1/nothing"),
        BadCall(name: "unversioned route", method: "GET", path: "/status", body: nil, status: 404, kind: .notFound, message: "no route"),
        BadCall(
            name: "wrong method", method: "DELETE", path: "/v1/status", body: nil, status: 405, kind: .invalidArgument, message: "use GET"),
        BadCall(
            name: "empty key", method: "POST", path: "/v1/snapshots/prepare", body: "{\"key\": \"\"}", status: 400, kind: .invalidArgument,
            message: "must not be empty"),
        BadCall(
            name: "over-long key", method: "POST", path: "/v1/snapshots/prepare",
            body: "{\"key\": \"\(String(repeating: "k", count: 4097))\"}", status: 400, kind: .invalidArgument,
            message: "longer than 4096 bytes"),
        BadCall(
            name: "bad percent encoding", method: "GET", path: "/v1/snapshots/a%zz", body: nil, status: 400, kind: .invalidArgument,
            message: "bad percent-encoding"),
        BadCall(
            name: "control character", method: "POST", path: "/v1/snapshots/prepare", body: "{\"key\": \"a\\u0001\"}", status: 400,
            kind: .invalidArgument, message: "control characters"),
        BadCall(
            name: "duplicate key", method: "POST", path: "/v1/snapshots/prepare", body: "{\"key\": \"active\"}", status: 409,
            kind: .alreadyExists, message: "snapshot active already exists"),
        BadCall(
            name: "key taken by a committed name", method: "POST", path: "/v1/snapshots/view", body: "{\"key\": \"committed\"}",
            status: 409, kind: .alreadyExists, message: "already exists"),
        BadCall(
            name: "parent missing", method: "POST", path: "/v1/snapshots/prepare", body: "{\"key\": \"n\", \"parent\": \"ghost\"}",
            status: 404, kind: .notFound, message: "parent snapshot ghost does not exist"),
        BadCall(
            name: "parent not committed", method: "POST", path: "/v1/snapshots/prepare", body: "{\"key\": \"n\", \"parent\": \"active\"}",
            status: 400, kind: .invalidArgument, message: "parent active is active"),
        BadCall(
            name: "parent is a view", method: "POST", path: "/v1/snapshots/view", body: "{\"key\": \"n\", \"parent\": \"view\"}",
            status: 400, kind: .invalidArgument, message: "parent view is view"),
        BadCall(
            name: "remove with children", method: "DELETE", path: "/v1/snapshots/committed", body: nil, status: 412,
            kind: .failedPrecondition, message: "has children (active, view)"),
        BadCall(
            name: "remove missing", method: "DELETE", path: "/v1/snapshots/ghost", body: nil, status: 404, kind: .notFound,
            message: "snapshot ghost does not exist"),
        BadCall(
            name: "commit of a view", method: "POST", path: "/v1/snapshots/commit", body: "{\"name\": \"n\", \"key\": \"view\"}",
            status: 412, kind: .failedPrecondition, message: "view is view; only active snapshots can be committed"),
        BadCall(
            name: "commit of a committed", method: "POST", path: "/v1/snapshots/commit", body: "{\"name\": \"n\", \"key\": \"committed\"}",
            status: 412, kind: .failedPrecondition, message: "only active"),
        BadCall(
            name: "commit to a taken name", method: "POST", path: "/v1/snapshots/commit",
            body: "{\"name\": \"committed\", \"key\": \"active\"}", status: 409, kind: .alreadyExists,
            message: "snapshot committed already exists"),
        BadCall(
            name: "commit of a missing key", method: "POST", path: "/v1/snapshots/commit", body: "{\"name\": \"n\", \"key\": \"ghost\"}",
            status: 404, kind: .notFound, message: "ghost does not exist"),
        BadCall(
            name: "commit name with a control character", method: "POST", path: "/v1/snapshots/commit",
            body: "{\"name\": \"a\\u0007b\", \"key\": \"active\"}", status: 400, kind: .invalidArgument, message: "control characters"),
        BadCall(
            name: "mounts of committed", method: "GET", path: "/v1/snapshots/committed/mounts", body: nil, status: 412,
            kind: .failedPrecondition, message: "only active or view"),
        BadCall(
            name: "usage of missing", method: "GET", path: "/v1/snapshots/ghost/usage", body: nil, status: 404, kind: .notFound,
            message: "ghost"),
        BadCall(
            name: "label too long", method: "POST", path: "/v1/snapshots/prepare",
            body: "{\"key\": \"n\", \"labels\": {\"k\": \"\(String(repeating: "v", count: 4096))\"}}", status: 400, kind: .invalidArgument,
            message: "exceed 4096 bytes"),
        BadCall(
            name: "update immutable field", method: "PATCH", path: "/v1/snapshots/active",
            body: "{\"labels\": {}, \"fieldpaths\": [\"parent\"]}", status: 400, kind: .invalidArgument, message: "cannot update field"),
        BadCall(
            name: "relative mount target", method: "POST", path: "/v1/snapshots/active/mount", body: "{\"target\": \"rel/dir\"}",
            status: 400, kind: .invalidArgument, message: "must be an absolute path"),
        BadCall(
            name: "mount target with dot-dot", method: "POST", path: "/v1/snapshots/active/mount", body: "{\"target\": \"/tmp/../etc\"}",
            status: 400, kind: .invalidArgument, message: "must not contain . or .."),
        BadCall(
            name: "unmount of something not ours", method: "POST", path: "/v1/unmount", body: "{\"target\": \"/proc\"}", status: 404,
            kind: .notFound, message: "nothing mounted at /proc"),
        BadCall(
            name: "bad filter", method: "GET", path: "/v1/snapshots?filter=kind%3D%3D", body: nil, status: 400, kind: .invalidArgument,
            message: "invalid filter"),
        BadCall(
            name: "bad regex filter", method: "GET", path: "/v1/snapshots?filter=name~%3D(", body: nil, status: 400, kind: .invalidArgument,
            message: "bad regular expression"),
    ]

    /// A daemon with one snapshot of each kind: `committed`, and `active` and `view` on top of it.
    static func populatedDaemon(_ name: String) throws -> DaemonHarness {
        let daemon = try DaemonHarness(name)
        try daemon.start()
        let client = daemon.client()
        _ = try client.prepare(key: "base")
        try client.commit(name: "committed", key: "base")
        _ = try client.prepare(key: "active", parent: "committed")
        _ = try client.view(key: "view", parent: "committed")
        return daemon
    }

    @Test(arguments: badCalls)
    func refused(_ call: BadCall) throws {
        let daemon = try Self.populatedDaemon("bad")
        let client = daemon.client()
        let before = try client.list()
        let directories = try FileSystem.listDirectory(daemon.root + "/snapshots")
        let response = try client.send(method: call.method, path: call.path, body: call.body.map { Array($0.utf8) })
        #expect(response.status == call.status)
        let envelope = try JSONDecoder().decode(ErrorEnvelope.self, from: Data(response.body))
        #expect(envelope.error.kind == call.kind)
        #expect(envelope.error.message.contains(call.message), "message was: \(envelope.error.message)")
        #expect(try client.list() == before, "a refused call changed the catalog")
        #expect(try FileSystem.listDirectory(daemon.root + "/snapshots") == directories, "a refused call changed the disk")
    }

    /// containerd's metadata layer names snapshots `<namespace>/<seq>/<key>`: such keys are accepted and
    /// travel percent-encoded in URL paths.
    @Test("a containerd-style key with slashes round-trips through the JSON API")
    func slashKeys() throws {
        let daemon = try DaemonHarness("slashkeys")
        defer { daemon.tearDown() }
        try daemon.start()
        let client = daemon.client()
        let key = "default/7/extract-123456789-AbCd sha256:0123abcd"
        _ = try client.prepare(key: key)
        #expect(try client.stat(key: key).name == key)
        try client.commit(name: "default/8/sha256:0123abcd", key: key)
        _ = try client.view(key: "default/9/v..1", parent: "default/8/sha256:0123abcd")
        #expect(try client.list().map(\.name).sorted() == ["default/8/sha256:0123abcd", "default/9/v..1"])
        try client.remove(key: "default/9/v..1")
        try client.remove(key: "default/8/sha256:0123abcd")
        #expect(try client.list().isEmpty)
    }

    @Test("a body over the limit gets 413 without being read, and the daemon keeps serving")
    func oversizedBody() throws {
        let daemon = try DaemonHarness("oversize", arguments: ["--max-body-bytes", "4096"])
        try daemon.start()
        let client = daemon.client()
        let big = Array("{\"key\": \"\(String(repeating: "k", count: 10_000))\"}".utf8)
        let response = try client.send(method: "POST", path: "/v1/snapshots/prepare", body: big)
        #expect(response.status == 413)
        let envelope = try JSONDecoder().decode(ErrorEnvelope.self, from: Data(response.body))
        #expect(envelope.error.kind == .invalidArgument && envelope.error.message.contains("exceeds 4096 bytes"))
        #expect(try daemon.client().list().isEmpty)
        _ = try daemon.client().prepare(key: "after")
    }

    @Test("a peer whose uid is not allowed is refused; the socket is 0600")
    func peerCredentials() throws {
        let daemon = try DaemonHarness("peer", arguments: ["--allowed-uid", "4242"])
        try daemon.start(waitReady: false)
        var response: HTTPResponse?
        for _ in 0..<500 where response == nil {
            response = try? daemon.client().send(method: "GET", path: "/v1/status")
            if response == nil { usleep(20_000) }
        }
        let answer = try #require(response)
        #expect(answer.status == 403)
        let envelope = try JSONDecoder().decode(ErrorEnvelope.self, from: Data(answer.body))
        #expect(envelope.error.kind == .permissionDenied && envelope.error.message.contains("uid \(geteuid()) is not allowed"))
        var st = stat()
        #expect(lstat(daemon.socket, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(!FileManager.default.fileExists(atPath: daemon.root + "/snapshots/1"))
    }

    @Test("a second daemon on the same root or socket refuses to start")
    func singleInstance() throws {
        let daemon = try DaemonHarness("single")
        try daemon.start()
        let (status, output) = try runCommand(DaemonHarness.binaryPath, daemon.arguments)
        #expect(status != 0)
        #expect(output.contains("another snapshotterd"))
        #expect(try daemon.client().status().pid == daemon.process?.processIdentifier)
    }

    @Test(
        "a containerd socket that cannot be bound stops the daemon with that error, never a crash, while clients connect",
        .timeLimit(.minutes(2)))
    func unbindableContainerdSocket() throws {
        let daemon = try DaemonHarness("ro-socket")
        defer { daemon.tearDown() }
        // A read-only directory: the containerd service fails at bind(2), after the API is already listening.
        let readOnly = daemon.directory + "/ro"
        try FileManager.default.createDirectory(atPath: readOnly, withIntermediateDirectories: true)
        try Mounter.mount(KernelMount(type: "none", source: readOnly, options: ["bind", "ro"]), at: readOnly)
        defer { try? Mounter.unmount(readOnly, detach: true) }
        var arguments = daemon.arguments
        let slot = try #require(arguments.firstIndex(of: "--containerd-socket")) + 1
        arguments[slot] = readOnly + "/containerd.sock"
        // Clients keep connecting, so some connection is accepted while the API server stops.
        let stop = Atomic<Bool>(false)
        let socketPath = daemon.socket
        let client = Thread {
            while !stop.load(ordering: .relaxed) {
                if (try? SnapshotterClient(socketPath: socketPath).send(method: "GET", path: "/v1/status")) == nil { usleep(1000) }
            }
        }
        client.start()
        defer { stop.store(true, ordering: .relaxed) }
        for _ in 0..<3 {
            let (status, output) = try runCommand(DaemonHarness.binaryPath, arguments)
            #expect(status == 1, "snapshotterd ended with \(status): \(output.suffix(400))")
            #expect(output.contains("Read-only file system"), "\(output.suffix(400))")
        }
    }
}
