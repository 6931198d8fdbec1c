import ContainerdProxy
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import TestThreads
import Testing

/// The snapshots.v1 gRPC service of a real snapshotterd, driven by a gRPC client the way containerd's
/// proxy drives it: keys with slashes, every call, every error class, List in batches.
@Suite("containerd snapshots gRPC service", .serialized, .timeLimit(.minutes(3)), .ownThread)
struct ContainerdServiceTests {
    typealias Snapshots = Containerd_Services_Snapshots_V1_Snapshots.Client<HTTP2ClientTransport.Posix>

    /// Runs `body` with a client on the daemon's containerd socket.
    static func withSnapshots<T: Sendable>(_ daemon: DaemonHarness, _ body: (Snapshots) async throws -> T) async throws -> T {
        let transport = try HTTP2ClientTransport.Posix(
            target: .unixDomainSocket(path: daemon.containerdSocket), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            try await body(Snapshots(wrapping: client))
        }
    }

    /// The status code a call failed with (nil when it did not fail).
    static func code(_ body: () async throws -> Void) async -> RPCError.Code? {
        do {
            try await body()
            return nil
        } catch let error as RPCError {
            return error.code
        } catch {
            return .unknown
        }
    }

    @Test("all ten calls with containerd-style keys; kinds and times always set")
    func calls() async throws {
        let daemon = try DaemonHarness("grpc-calls")
        defer { daemon.tearDown() }
        try daemon.start()
        try await Self.withSnapshots(daemon) { snapshots in
            let key = "default/1/extract-1700000000-AbCd sha256:aaaa"
            let prepared = try await snapshots.prepare(
                .with {
                    $0.snapshotter = "ondemand"
                    $0.key = key
                    $0.labels = ["containerd.io/snapshot/x": "1"]
                })
            #expect(prepared.mounts.count == 1)
            #expect(prepared.mounts.first?.type == "bind")
            #expect(try await snapshots.mounts(.with { $0.key = key }).mounts == prepared.mounts)
            try await snapshots.commit(
                .with {
                    $0.name = "default/2/sha256:aaaa"
                    $0.key = key
                    $0.labels = ["containerd.io/snapshot.ref": "sha256:aaaa"]
                })
            let committed = try await snapshots.stat(.with { $0.key = "default/2/sha256:aaaa" }).info
            #expect(committed.kind == .committed)
            #expect(committed.createdAt.seconds > 1_600_000_000)
            #expect(committed.updatedAt.seconds > 1_600_000_000)
            #expect(committed.labels == ["containerd.io/snapshot.ref": "sha256:aaaa"])

            let active = try await snapshots.prepare(
                .with {
                    $0.key = "default/3/c1"
                    $0.parent = "default/2/sha256:aaaa"
                })
            #expect(active.mounts.first?.type == "overlay")
            let view = try await snapshots.view(
                .with {
                    $0.key = "default/4/v1"
                    $0.parent = "default/2/sha256:aaaa"
                })
            #expect(view.mounts.first?.options.contains("ro") == true)
            #expect(try await snapshots.stat(.with { $0.key = "default/3/c1" }).info.kind == .active)
            #expect(try await snapshots.stat(.with { $0.key = "default/4/v1" }).info.kind == .view)

            let updated = try await snapshots.update(
                .with {
                    $0.info.name = "default/3/c1"
                    $0.info.labels = ["containerd.io/snapshot/y": "2"]
                    $0.updateMask = Google_Protobuf_FieldMask(protoPaths: ["labels.containerd.io/snapshot/y"])
                }
            ).info
            #expect(updated.labels == ["containerd.io/snapshot/y": "2"])
            #expect(updated.parent == "default/2/sha256:aaaa")

            let usage = try await snapshots.usage(.with { $0.key = "default/2/sha256:aaaa" })
            #expect(usage.inodes >= 1)

            // The remote-snapshot query containerd's metadata layer makes after AlreadyExists.
            let filter = #"labels."containerd.io/snapshot.ref"==sha256:aaaa,parent=="""#
            let matched = try await snapshots.list(.with { $0.filters = [filter] }) { response in
                try await response.messages.reduce(into: [String]()) { $0 += $1.info.map(\.name) }
            }
            #expect(matched == ["default/2/sha256:aaaa"])

            try await snapshots.remove(.with { $0.key = "default/4/v1" })
            try await snapshots.remove(.with { $0.key = "default/3/c1" })
            try await snapshots.remove(.with { $0.key = "default/2/sha256:aaaa" })
            try await snapshots.cleanup(.with { $0.snapshotter = "ondemand" })
            let left = try await snapshots.list(.with { _ in }) { response in
                try await response.messages.reduce(into: 0) { $0 += $1.info.count }
            }
            #expect(left == 0)
        }
    }

    @Test("refusals carry containerd's status codes")
    func errors() async throws {
        let daemon = try DaemonHarness("grpc-errors")
        defer { daemon.tearDown() }
        try daemon.start()
        try await Self.withSnapshots(daemon) { snapshots in
            _ = try await snapshots.prepare(.with { $0.key = "ns/1/a" })
            try await snapshots.commit(
                .with {
                    $0.name = "ns/2/c"
                    $0.key = "ns/1/a"
                })
            _ = try await snapshots.view(
                .with {
                    $0.key = "ns/3/v"
                    $0.parent = "ns/2/c"
                })
            _ = try await snapshots.prepare(
                .with {
                    $0.key = "ns/4/b"
                    $0.parent = "ns/2/c"
                })
            #expect(await Self.code { _ = try await snapshots.prepare(.with { $0.key = "ns/4/b" }) } == .alreadyExists)
            #expect(
                await Self.code {
                    _ = try await snapshots.prepare(
                        .with {
                            $0.key = "ns/5/x"
                            $0.parent = "ns/9/ghost"
                        })
                } == .notFound)
            #expect(
                await Self.code {
                    _ = try await snapshots.prepare(
                        .with {
                            $0.key = "ns/5/x"
                            $0.parent = "ns/4/b"
                        })
                } == .invalidArgument)
            #expect(await Self.code { _ = try await snapshots.stat(.with { $0.key = "ns/9/ghost" }) } == .notFound)
            #expect(await Self.code { _ = try await snapshots.usage(.with { $0.key = "ns/9/ghost" }) } == .notFound)
            #expect(await Self.code { _ = try await snapshots.mounts(.with { $0.key = "ns/2/c" }) } == .failedPrecondition)
            #expect(
                await Self.code {
                    try await snapshots.commit(
                        .with {
                            $0.name = "ns/6/c2"
                            $0.key = "ns/3/v"
                        })
                } == .failedPrecondition)
            #expect(
                await Self.code {
                    try await snapshots.commit(
                        .with {
                            $0.name = "ns/2/c"
                            $0.key = "ns/4/b"
                        })
                } == .alreadyExists)
            #expect(await Self.code { try await snapshots.remove(.with { $0.key = "ns/2/c" }) } == .failedPrecondition)
            #expect(await Self.code { try await snapshots.remove(.with { $0.key = "ns/9/ghost" }) } == .notFound)
            #expect(
                await Self.code {
                    _ = try await snapshots.update(
                        .with {
                            $0.info.name = "ns/4/b"
                            $0.updateMask = Google_Protobuf_FieldMask(protoPaths: ["parent"])
                        })
                } == .invalidArgument)
            #expect(
                await Self.code {
                    try await snapshots.commit(
                        .with {
                            $0.name = "ns/7/c3"
                            $0.key = "ns/4/b"
                            $0.parent = "ns/9/other"
                        })
                } == .invalidArgument)
            #expect(await Self.code { _ = try await snapshots.prepare(.with { $0.key = "" }) } == .invalidArgument)
        }
    }

    @Test("List streams every snapshot, in batches")
    func listEverything() async throws {
        let daemon = try DaemonHarness("grpc-list")
        defer { daemon.tearDown() }
        try daemon.start()
        let count = SnapshotsService.listBatchSize * 2 + 17
        try await Self.withSnapshots(daemon) { snapshots in
            for i in 0..<count { _ = try await snapshots.prepare(.with { $0.key = "default/\(i)/k\(i)" }) }
            let batches = try await snapshots.list(.with { _ in }) { response in
                try await response.messages.reduce(into: [[String]]()) { $0.append($1.info.map(\.name)) }
            }
            #expect(batches.count == 3)
            #expect(Set(batches.joined()) == Set((0..<count).map { "default/\($0)/k\($0)" }))
        }
    }
}
