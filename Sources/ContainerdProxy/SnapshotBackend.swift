/// What the gRPC service needs from a snapshotter: containerd's ten snapshot calls with plain Swift
/// types, so this module knows nothing of the daemon, its catalog or its mounts. The daemon implements
/// it; tests implement it with an in-memory fake.
///
/// Keys, names and parents arrive exactly as containerd's metadata layer sends them
/// (`<namespace>/<seq>/<client key>`) and go back unchanged; labels are passed as given.
public protocol SnapshotBackend: Sendable {
    /// An active snapshot on top of `parent` ("" for none); the mounts that make its file system.
    func prepare(key: String, parent: String, labels: [String: String]) async throws(SnapshotBackendError) -> [ProxyMount]
    /// A read-only snapshot on top of `parent`.
    func view(key: String, parent: String, labels: [String: String]) async throws(SnapshotBackendError) -> [ProxyMount]
    func mounts(key: String) async throws(SnapshotBackendError) -> [ProxyMount]
    /// Turns active `key` into committed `name`. `parent` is non-empty only from containerd 2.2+
    /// (parallel unpack), for a snapshot prepared without one.
    func commit(name: String, key: String, labels: [String: String], parent: String) async throws(SnapshotBackendError)
    func remove(key: String) async throws(SnapshotBackendError)
    func stat(key: String) async throws(SnapshotBackendError) -> ProxySnapshotInfo
    /// Replaces the labels named by `fieldPaths` (`labels`, `labels.<key>`; none means `labels`).
    func update(key: String, labels: [String: String], fieldPaths: [String]) async throws(SnapshotBackendError) -> ProxySnapshotInfo
    /// Every snapshot matching any of `filters` (containerd's filter syntax); all when empty.
    func list(filters: [String]) async throws(SnapshotBackendError) -> [ProxySnapshotInfo]
    func usage(key: String) async throws(SnapshotBackendError) -> ProxyUsage
    /// Deferred removal of resources; `.unimplemented` when there is nothing to do that way.
    func cleanup() async throws(SnapshotBackendError)
}

/// One mount as containerd's `containerd.types.Mount` carries it.
public struct ProxyMount: Sendable, Equatable {
    public var type: String
    public var source: String
    /// A subdirectory of an earlier mount to mount on; honoured by containerd 1.7+, dropped by 1.6.
    public var target: String
    public var options: [String]

    public init(type: String, source: String, target: String = "", options: [String]) {
        self.type = type
        self.source = source
        self.target = target
        self.options = options
    }
}

public enum ProxySnapshotKind: String, Sendable, Equatable {
    case view
    case active
    case committed
}

/// What Stat, Update and List report. Times are nanoseconds since the Unix epoch.
public struct ProxySnapshotInfo: Sendable, Equatable {
    public var name: String
    public var parent: String
    public var kind: ProxySnapshotKind
    public var labels: [String: String]
    public var createdNanoseconds: Int64
    public var updatedNanoseconds: Int64

    public init(
        name: String, parent: String, kind: ProxySnapshotKind, labels: [String: String], createdNanoseconds: Int64,
        updatedNanoseconds: Int64
    ) {
        self.name = name
        self.parent = parent
        self.kind = kind
        self.labels = labels
        self.createdNanoseconds = createdNanoseconds
        self.updatedNanoseconds = updatedNanoseconds
    }
}

public struct ProxyUsage: Sendable, Equatable {
    public var size: Int64
    public var inodes: Int64

    public init(size: Int64, inodes: Int64) {
        self.size = size
        self.inodes = inodes
    }
}

/// A refusal, in containerd's error classes (errdefs), which the service turns into gRPC status codes
/// containerd decodes back into the same classes.
public struct SnapshotBackendError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        case notFound
        case alreadyExists
        case failedPrecondition
        case invalidArgument
        case unimplemented
        /// No space left (containerd's errdefs has no class for it; gRPC's ResourceExhausted says it).
        case resourceExhausted
        /// Anything else (storage, mount failures): containerd sees Internal.
        case `internal`
    }

    public var kind: Kind
    /// The message containerd shows, naming the key or value at fault.
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}
