import Catalog
import ContainerdProxy
import LinuxKernel
import Logging
import MountManager
import NIOPosix
import OCI
import SnapshotterAPI
import Synchronization

/// containerd's snapshots service over the daemon's snapshot and image services.
///
/// Everything is the JSON API's semantics with containerd's names; the one addition is remote
/// snapshots (``RemoteLayer``): a Prepare for a layer of a nydus-style image that names its image
/// becomes a committed snapshot on that image's lazily fetched EROFS, and containerd skips the layer.
final class ContainerdBackend: SnapshotBackend {
    let service: SnapshotService
    let images: ImageService
    let reconciler: Reconciler
    let threadPool: NIOThreadPool
    let logger: Logger
    /// Plain images (by manifest digest) found to have no lazy form, and until when that answer stands: the
    /// other layers of the same CRI pull go straight to containerd's unpacking instead of each asking the
    /// registry for referrers again.
    private let unservable = Mutex<[String: UInt64]>([:])
    static let unservableMemory: UInt64 = 600 * 1_000_000_000

    init(service: SnapshotService, images: ImageService, reconciler: Reconciler, threadPool: NIOThreadPool, logger: Logger) {
        self.service = service
        self.images = images
        self.reconciler = reconciler
        self.threadPool = threadPool
        self.logger = logger
    }

    func prepare(key: String, parent: String, labels: [String: String]) async throws(SnapshotBackendError) -> [ProxyMount] {
        if let layer = RemoteLayer(labels: labels) {
            try await prepareRemote(layer, key: key, parent: parent, labels: labels)
        }
        return try await create(.active, key: key, parent: parent, labels: labels)
    }

    func view(key: String, parent: String, labels: [String: String]) async throws(SnapshotBackendError) -> [ProxyMount] {
        try await create(.view, key: key, parent: parent, labels: labels)
    }

    private func create(
        _ kind: SnapshotKind, key: String, parent: String, labels: [String: String]
    ) async throws(SnapshotBackendError)
        -> [ProxyMount]
    {
        try await blocking {
            try self.service.create(kind: kind, key: key, parent: parent.isEmpty ? nil : parent, labels: labels).map(Self.mount)
        }
    }

    func mounts(key: String) async throws(SnapshotBackendError) -> [ProxyMount] {
        try await blocking { try self.service.mounts(key: key).map(Self.mount) }
    }

    func commit(name: String, key: String, labels: [String: String], parent: String) async throws(SnapshotBackendError) {
        try await blocking {
            if !parent.isEmpty {
                // containerd 2.2+ sends a parent only for parallel unpack, which needs the "rebase"
                // capability this snapshotter does not advertise; a different parent is never allowed.
                let current = try self.service.stat(key: key).parent
                if current.isEmpty {
                    throw SnapshotBackendError(.unimplemented, "cannot rebase \(key) onto \(parent): rebase is not supported")
                }
                if current != parent {
                    throw SnapshotBackendError(.invalidArgument, "snapshot \(key) has parent \(current), not \(parent)")
                }
            }
            try self.service.commit(name: name, key: key, labels: labels)
        }
    }

    func remove(key: String) async throws(SnapshotBackendError) {
        try await blocking { try self.service.remove(key: key) }
    }

    func stat(key: String) async throws(SnapshotBackendError) -> ProxySnapshotInfo {
        try await blocking { try self.service.proxyInfo(key: key) }
    }

    func update(key: String, labels: [String: String], fieldPaths: [String]) async throws(SnapshotBackendError) -> ProxySnapshotInfo {
        try await blocking {
            _ = try self.service.update(key: key, labels: labels, fieldpaths: fieldPaths)
            return try self.service.proxyInfo(key: key)
        }
    }

    func list(filters: [String]) async throws(SnapshotBackendError) -> [ProxySnapshotInfo] {
        try await blocking { try self.service.proxyList(filters: filters) }
    }

    func usage(key: String) async throws(SnapshotBackendError) -> ProxyUsage {
        try await blocking {
            let usage = try self.images.usage(ofSnapshot: key, in: self.service)
            return ProxyUsage(size: usage.size, inodes: usage.inodes)
        }
    }

    func cleanup() async throws(SnapshotBackendError) {
        let removed = try await blocking { try self.reconciler.cleanup() }
        if !removed.isEmpty { logger.debug("cleanup removed leftovers", metadata: ["cleanup.count": "\(removed.count)"]) }
    }

    // MARK: - Remote snapshots

    /// Commits `layer` under its chain-ID name, on the image's EROFS, then answers AlreadyExists: the
    /// remote-snapshot protocol, after which containerd lists the snapshot by its `snapshot.ref` label and
    /// parent and never downloads the layer. Returns (so the caller makes an ordinary snapshot) when the
    /// image turns out not to be servable lazily.
    private func prepareRemote(
        _ layer: RemoteLayer, key: String, parent: String, labels: [String: String]
    ) async throws(SnapshotBackendError) {
        let known = try await blocking { () throws -> Bool in
            do {
                return try self.service.stat(key: layer.target).kind == .committed
            } catch SnapshotError.notFound {
                return false
            }
        }
        if known { throw SnapshotBackendError(.alreadyExists, "snapshot \(layer.target) already exists (remote)") }
        if let reason = images.frontEnd.traits.imageMountUnsupportedReason {
            logger.info("layer not servable lazily; containerd unpacks it", metadata: ["reason": "\(reason)", "snapshot.key": "\(key)"])
            return
        }
        if layer.role == .plainLayer, let digest = layer.manifestDigest,
            let until = unservable.withLock({ $0[digest] }), until > monotonicNanoseconds()
        {
            return
        }
        do {
            // Layers of one image can be prepared concurrently (containerd 2.2's parallel unpack): `ImageService.pull`
            // joins them into one pull.
            // A plain image's layer is remote only if a trusted gzip index serves the image; otherwise containerd
            // downloads and unpacks it itself, and nothing is fetched twice.
            _ = try await images.pull(
                layer.imageReference, knownManifestDigest: layer.manifestDigest, knownLayers: layer.imageLayers,
                lazyOnly: layer.role == .plainLayer)
        } catch CatalogError.notAnImage(let reference, let reason) {
            if layer.role == .plainLayer, let digest = layer.manifestDigest {
                let now = monotonicNanoseconds()
                unservable.withLock { known in
                    known = known.filter { $0.value > now }
                    known[digest] = now + Self.unservableMemory
                }
            }
            logger.info(
                "layer not servable lazily; containerd unpacks it",
                metadata: ["image.reference": "\(reference)", "reason": "\(reason)", "snapshot.key": "\(key)"])
            return
        } catch {
            throw Self.backendError(error)
        }
        let name = (try? ImageReference(parsing: layer.imageReference).description) ?? layer.imageReference
        try await blocking {
            guard let image = try self.images.catalog.image(reference: name) else { throw CatalogError.notFound(reference: name) }
            try self.service.commitRemote(name: layer.target, parent: parent.isEmpty ? nil : parent, labels: labels, imageID: image.id)
        }
        logger.info(
            "remote snapshot committed",
            metadata: [
                "snapshot.name": "\(layer.target)", "snapshot.parent": "\(parent)", "image.reference": "\(layer.imageReference)",
                "layer.role": "\(layer.role.rawValue)",
            ])
        throw SnapshotBackendError(.alreadyExists, "snapshot \(layer.target) already exists (remote)")
    }

    // MARK: - Plumbing

    static func mount(_ mount: KernelMount) -> ProxyMount {
        ProxyMount(type: mount.type, source: mount.source, options: mount.options)
    }

    /// Blocking work (SQLite, file walks, mount(2)) on the daemon's thread pool; errors in containerd's classes.
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws(SnapshotBackendError) -> T {
        do {
            return try await threadPool.runIfActive(body)
        } catch {
            throw Self.backendError(error)
        }
    }

    static func backendError(_ error: any Error) -> SnapshotBackendError {
        if let error = error as? SnapshotBackendError { return error }
        guard let api = classifiedAPIError(error) else { return SnapshotBackendError(.internal, "\(error)") }
        switch api.kind {
        case .notFound: return SnapshotBackendError(.notFound, api.message)
        case .alreadyExists: return SnapshotBackendError(.alreadyExists, api.message)
        case .failedPrecondition: return SnapshotBackendError(.failedPrecondition, api.message)
        case .invalidArgument: return SnapshotBackendError(.invalidArgument, api.message)
        case .unimplemented: return SnapshotBackendError(.unimplemented, api.message)
        case .resourceExhausted: return SnapshotBackendError(.resourceExhausted, api.message)
        case .permissionDenied, .unavailable, .internal: return SnapshotBackendError(.internal, api.message)
        }
    }
}

/// A layer containerd may skip: the unpacker's `containerd.io/snapshot.ref` (the chain ID it will
/// commit), the nydus annotation saying what the layer is, and the image it belongs to. containerd
/// sends the image only from CRI with `disable_snapshot_annotations = false` (1.6/1.7), from the 2.1+
/// transfer service with `enable_remote_snapshot_annotations`, or from clients that add the labels
/// themselves; `ctr image pull` never does, so its layers are unpacked as plain ones.
struct RemoteLayer: Equatable {
    /// `plainLayer`: a layer of a plain OCI image (CRI names its digest), remote when a gzip index serves it.
    enum Role: String { case bootstrap, blob, plainLayer }

    static let targetLabel = "containerd.io/snapshot.ref"
    /// CRI's label, and the shorter one some clients (overlaybd's, ours by hand) set.
    static let imageLabels = ["containerd.io/snapshot/cri.image-ref", "containerd.io/snapshot/image-ref"]
    /// The manifest containerd resolved the image to (CRI sets it alongside the image reference).
    static let manifestDigestLabel = "containerd.io/snapshot/cri.manifest-digest"
    /// The compressed digest of the layer being unpacked (CRI sets it for every layer).
    static let layerDigestLabel = "containerd.io/snapshot/cri.layer-digest"
    /// The digests of this layer and the image's later ones, comma-separated; containerd drops trailing ones
    /// to keep a label within `labelLimit` bytes (key and value).
    static let imageLayersLabel = "containerd.io/snapshot/cri.image-layers"
    static let labelLimit = 4096
    /// One more entry of that list: a comma and a sha256 digest (`sha256:` and 64 hex digits).
    static let layerEntryBytes = 1 + 7 + 64

    var target: String
    var imageReference: String
    var role: Role
    /// nil when the labels do not say; then the pull asks the registry whether the image is up to date.
    var manifestDigest: String?
    /// The layers from this one to the image's last (a nydus image's bootstrap), when the labels name them all:
    /// the pull fetches the bootstrap and the blobs' tails alongside the manifest. Empty when the list may have
    /// been cut short, or for a plain image's layer.
    var imageLayers: [Digest] = []

    init?(labels: [String: String]) {
        guard let target = labels[Self.targetLabel], !target.isEmpty else { return nil }
        guard let image = Self.imageLabels.lazy.compactMap({ labels[$0] }).first(where: { !$0.isEmpty }) else { return nil }
        if labels[NydusLayout.bootstrapAnnotation] == "true" {
            role = .bootstrap
        } else if labels[NydusLayout.blobAnnotation] == "true" {
            role = .blob
        } else if let digest = labels[Self.layerDigestLabel], !digest.isEmpty {
            role = .plainLayer
        } else {
            return nil
        }
        self.target = target
        self.imageReference = image
        manifestDigest = labels[Self.manifestDigestLabel].flatMap { $0.isEmpty ? nil : $0 }
        // containerd stops adding digests when one more would pass the limit: a list with room for another was not cut.
        if role != .plainLayer, let list = labels[Self.imageLayersLabel],
            Self.imageLayersLabel.utf8.count + list.utf8.count + Self.layerEntryBytes <= Self.labelLimit
        {
            let digests = list.split(separator: ",").compactMap { try? Digest(parsing: String($0)) }
            if !digests.isEmpty, digests.count == list.split(separator: ",").count { imageLayers = digests }
        }
    }
}
