import GRPCCore
import Logging
import SwiftProtobuf

/// containerd's `containerd.services.snapshots.v1.Snapshots` over a ``SnapshotBackend``.
///
/// Translation only: keys, parents and labels pass through untouched (containerd's metadata layer owns
/// their meaning), every Info carries a kind and both times (containerd reads a missing kind as
/// committed and a missing time as the epoch), and refusals become the status codes containerd maps
/// back to its error classes.
public struct SnapshotsService: Containerd_Services_Snapshots_V1_Snapshots.SimpleServiceProtocol {
    /// List answers in messages of at most this many snapshots, so a large store never makes one huge
    /// message (gRPC's default receive limit is 4 MiB; labels can be up to 4 KiB each).
    public static let listBatchSize = 100

    let backend: any SnapshotBackend
    let logger: Logger

    public init(backend: any SnapshotBackend, logger: Logger) {
        self.backend = backend
        self.logger = logger
    }

    public func prepare(
        request: Containerd_Services_Snapshots_V1_PrepareSnapshotRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_PrepareSnapshotResponse {
        let mounts = try await call("prepare", request.key) {
            try await backend.prepare(key: request.key, parent: request.parent, labels: request.labels)
        }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    public func view(
        request: Containerd_Services_Snapshots_V1_ViewSnapshotRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_ViewSnapshotResponse {
        let mounts = try await call("view", request.key) {
            try await backend.view(key: request.key, parent: request.parent, labels: request.labels)
        }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    public func mounts(
        request: Containerd_Services_Snapshots_V1_MountsRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_MountsResponse {
        let mounts = try await call("mounts", request.key) { try await backend.mounts(key: request.key) }
        return .with { $0.mounts = mounts.map(Self.message) }
    }

    public func commit(
        request: Containerd_Services_Snapshots_V1_CommitSnapshotRequest, context: ServerContext
    ) async throws -> Google_Protobuf_Empty {
        try await call("commit", request.key) {
            try await backend.commit(name: request.name, key: request.key, labels: request.labels, parent: request.parent)
        }
        return Google_Protobuf_Empty()
    }

    public func remove(
        request: Containerd_Services_Snapshots_V1_RemoveSnapshotRequest, context: ServerContext
    ) async throws -> Google_Protobuf_Empty {
        try await call("remove", request.key) { try await backend.remove(key: request.key) }
        return Google_Protobuf_Empty()
    }

    public func stat(
        request: Containerd_Services_Snapshots_V1_StatSnapshotRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_StatSnapshotResponse {
        let info = try await call("stat", request.key) { try await backend.stat(key: request.key) }
        return .with { $0.info = Self.message(info) }
    }

    public func update(
        request: Containerd_Services_Snapshots_V1_UpdateSnapshotRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_UpdateSnapshotResponse {
        let paths = request.hasUpdateMask ? request.updateMask.paths : []
        let info = try await call("update", request.info.name) {
            try await backend.update(key: request.info.name, labels: request.info.labels, fieldPaths: paths)
        }
        return .with { $0.info = Self.message(info) }
    }

    public func list(
        request: Containerd_Services_Snapshots_V1_ListSnapshotsRequest,
        response: RPCWriter<Containerd_Services_Snapshots_V1_ListSnapshotsResponse>,
        context: ServerContext
    ) async throws {
        let infos = try await call("list", request.filters.joined(separator: " | ")) {
            try await backend.list(filters: request.filters)
        }
        var start = infos.startIndex
        while start < infos.endIndex {
            let end = min(start + Self.listBatchSize, infos.endIndex)
            try await response.write(.with { $0.info = infos[start..<end].map(Self.message) })
            start = end
        }
    }

    public func usage(
        request: Containerd_Services_Snapshots_V1_UsageRequest, context: ServerContext
    ) async throws -> Containerd_Services_Snapshots_V1_UsageResponse {
        let usage = try await call("usage", request.key) { try await backend.usage(key: request.key) }
        return .with {
            $0.size = usage.size
            $0.inodes = usage.inodes
        }
    }

    public func cleanup(
        request: Containerd_Services_Snapshots_V1_CleanupRequest, context: ServerContext
    ) async throws -> Google_Protobuf_Empty {
        try await call("cleanup", "") { try await backend.cleanup() }
        return Google_Protobuf_Empty()
    }

    // MARK: - Translation

    /// Runs one backend call; a refusal becomes an `RPCError` with the matching status code.
    private func call<T>(_ method: String, _ subject: String, _ body: () async throws -> T) async throws(RPCError) -> T {
        do {
            let result = try await body()
            logger.trace("containerd call", metadata: ["grpc.method": "\(method)", "snapshot.key": "\(subject)"])
            return result
        } catch {
            let error = error as? SnapshotBackendError ?? SnapshotBackendError(.internal, "\(error)")
            logger.debug(
                "containerd call refused",
                metadata: ["grpc.method": "\(method)", "snapshot.key": "\(subject)", "error": "\(error)"])
            throw Self.rpcError(error)
        }
    }

    /// containerd's errdefs <-> gRPC table: NotFound, AlreadyExists, FailedPrecondition,
    /// InvalidArgument, Unimplemented; a full disk is ResourceExhausted; the rest is Internal.
    public static func rpcError(_ error: SnapshotBackendError) -> RPCError {
        let code: RPCError.Code
        switch error.kind {
        case .notFound: code = .notFound
        case .alreadyExists: code = .alreadyExists
        case .failedPrecondition: code = .failedPrecondition
        case .invalidArgument: code = .invalidArgument
        case .unimplemented: code = .unimplemented
        case .resourceExhausted: code = .resourceExhausted
        case .internal: code = .internalError
        }
        return RPCError(code: code, message: error.message)
    }

    static func message(_ mount: ProxyMount) -> Containerd_Types_Mount {
        .with {
            $0.type = mount.type
            $0.source = mount.source
            $0.target = mount.target
            $0.options = mount.options
        }
    }

    static func message(_ info: ProxySnapshotInfo) -> Containerd_Services_Snapshots_V1_Info {
        .with {
            $0.name = info.name
            $0.parent = info.parent
            switch info.kind {
            case .view: $0.kind = .view
            case .active: $0.kind = .active
            case .committed: $0.kind = .committed
            }
            $0.createdAt = timestamp(info.createdNanoseconds)
            $0.updatedAt = timestamp(info.updatedNanoseconds)
            $0.labels = info.labels
        }
    }

    static func timestamp(_ nanoseconds: Int64) -> Google_Protobuf_Timestamp {
        let seconds = nanoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
        return Google_Protobuf_Timestamp(seconds: seconds.quotient, nanos: Int32(seconds.remainder))
    }
}
