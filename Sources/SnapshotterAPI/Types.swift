/// The JSON API's types, shared by `snapshotterd`, `snapctl` and the tests. Field names on the wire are
/// snake_case and mirror containerd's snapshots API where one exists. See docs/api.md.

/// Snapshot kinds, as containerd names them.
public enum SnapshotKind: String, Codable, Sendable, CaseIterable {
    case active
    case view
    case committed
}

/// One mount, in the shape containerd's overlay snapshotter returns.
public struct MountSpec: Codable, Equatable, Sendable {
    public var type: String
    public var source: String
    public var target: String?
    public var options: [String]

    public init(type: String, source: String, target: String? = nil, options: [String]) {
        self.type = type
        self.source = source
        self.target = target
        self.options = options
    }
}

/// What stat and list report about a snapshot. Times are RFC 3339 with nanoseconds, UTC.
public struct SnapshotInfo: Codable, Equatable, Sendable {
    public var name: String
    public var parent: String
    public var kind: SnapshotKind
    public var labels: [String: String]
    public var createdAt: String
    public var updatedAt: String

    public init(
        name: String,
        parent: String,
        kind: SnapshotKind,
        labels: [String: String],
        createdAt: String,
        updatedAt: String
    ) {
        self.name = name
        self.parent = parent
        self.kind = kind
        self.labels = labels
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    enum CodingKeys: String, CodingKey {
        case name, parent, kind, labels
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}

/// Bytes and inodes of one snapshot's own layer (parents excluded).
public struct SnapshotUsage: Codable, Equatable, Sendable {
    public var size: Int64
    public var inodes: Int64

    public init(size: Int64, inodes: Int64) {
        self.size = size
        self.inodes = inodes
    }
}

public struct PrepareRequest: Codable, Sendable {
    public var key: String
    public var parent: String?
    public var labels: [String: String]?
    /// A pulled image's reference: the snapshot sits on that image's filesystem (instead of a parent).
    public var image: String?

    public init(key: String, parent: String? = nil, labels: [String: String]? = nil, image: String? = nil) {
        self.key = key
        self.parent = parent
        self.labels = labels
        self.image = image
    }
}

public struct CommitRequest: Codable, Sendable {
    public var name: String
    public var key: String
    public var labels: [String: String]?

    public init(name: String, key: String, labels: [String: String]? = nil) {
        self.name = name
        self.key = key
        self.labels = labels
    }
}

/// Update: only labels are mutable. `fieldpaths` is `labels` or `labels.<key>`; empty means all labels.
/// With `labels.<key>`, a missing or empty value deletes that label.
public struct UpdateRequest: Codable, Sendable {
    public var labels: [String: String]
    public var fieldpaths: [String]?

    public init(labels: [String: String], fieldpaths: [String]? = nil) {
        self.labels = labels
        self.fieldpaths = fieldpaths
    }
}

public struct MountRequest: Codable, Sendable {
    public var target: String
    public init(target: String) { self.target = target }
}

public struct UnmountRequest: Codable, Sendable {
    public var target: String
    public init(target: String) { self.target = target }
}

public struct MountsResponse: Codable, Sendable {
    public var mounts: [MountSpec]
    public init(mounts: [MountSpec]) { self.mounts = mounts }
}

public struct InfoResponse: Codable, Sendable {
    public var info: SnapshotInfo
    public init(info: SnapshotInfo) { self.info = info }
}

public struct ListResponse: Codable, Sendable {
    public var snapshots: [SnapshotInfo]
    public init(snapshots: [SnapshotInfo]) { self.snapshots = snapshots }
}

public struct MountedResponse: Codable, Sendable {
    public var target: String
    public var mounts: [MountSpec]
    public init(target: String, mounts: [MountSpec]) {
        self.target = target
        self.mounts = mounts
    }
}

public struct CleanupResponse: Codable, Sendable {
    /// Paths removed: snapshot directories and temp files the catalog no longer knows.
    public var removed: [String]
    public init(removed: [String]) { self.removed = removed }
}

public struct EmptyResponse: Codable, Sendable {
    public init() {}
}

/// A path found on disk or in mountinfo that the catalog does not know (removed by cleanup), or a catalog
/// entry whose directory was missing at start-up (repaired, reported once).
public struct Leftover: Codable, Equatable, Sendable {
    public var path: String
    public var reason: String
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }
}

public struct ActiveMount: Codable, Equatable, Sendable {
    public var target: String
    public var snapshot: String
    public init(target: String, snapshot: String) {
        self.target = target
        self.snapshot = snapshot
    }
}

public struct StatusResponse: Codable, Sendable {
    public var version: String
    public var pid: Int32
    public var root: String
    public var socket: String
    public var uptimeSeconds: Double
    public var frontEnd: String
    /// Per pulled image: how much of it is local and what was fetched.
    public var images: [ImageStatus]?
    public var catalogSchema: Int
    public var snapshots: [String: Int]
    public var mounts: [ActiveMount]
    public var leftovers: [Leftover]
    /// The cache against its budget.
    public var cache: CacheStatus?

    public init(
        version: String,
        pid: Int32,
        root: String,
        socket: String,
        uptimeSeconds: Double,
        frontEnd: String,
        catalogSchema: Int,
        snapshots: [String: Int],
        mounts: [ActiveMount],
        leftovers: [Leftover]
    ) {
        self.version = version
        self.pid = pid
        self.root = root
        self.socket = socket
        self.uptimeSeconds = uptimeSeconds
        self.frontEnd = frontEnd
        self.catalogSchema = catalogSchema
        self.snapshots = snapshots
        self.mounts = mounts
        self.leftovers = leftovers
    }

    enum CodingKeys: String, CodingKey {
        case version, pid, root, socket, snapshots, mounts, leftovers, images, cache
        case uptimeSeconds = "uptime_seconds"
        case frontEnd = "front_end"
        case catalogSchema = "catalog_schema"
    }
}

// MARK: - Images

public struct PullRequest: Codable, Sendable {
    public var reference: String

    public init(reference: String) {
        self.reference = reference
    }
}

/// `POST /v1/images/index`: build and push the gzip index of a plain image (lazy start without conversion).
public struct IndexRequest: Codable, Sendable {
    public var reference: String
    /// Tar bytes between checkpoints (default 2 MiB).
    public var spanBytes: UInt64?
    /// Absolute paths containers read at start-up: the index's prefetch table (fetched right after a pull).
    public var prefetch: [String]?

    public init(reference: String, spanBytes: UInt64? = nil, prefetch: [String]? = nil) {
        self.reference = reference
        self.spanBytes = spanBytes
        self.prefetch = prefetch
    }
}

/// What `POST /v1/images/index` pushed.
public struct IndexResponse: Codable, Sendable, Equatable {
    public var reference: String
    public var imageDigest: String
    /// The index artifact's manifest digest (what another host lists in `zran.trusted_indexes`).
    public var indexDigest: String
    public var layers: Int
    public var layerBytes: Int64
    public var indexBytes: Int64
    public var checkpoints: Int
    public var seconds: Double

    public init(
        reference: String, imageDigest: String, indexDigest: String, layers: Int, layerBytes: Int64, indexBytes: Int64, checkpoints: Int,
        seconds: Double
    ) {
        self.reference = reference
        self.imageDigest = imageDigest
        self.indexDigest = indexDigest
        self.layers = layers
        self.layerBytes = layerBytes
        self.indexBytes = indexBytes
        self.checkpoints = checkpoints
        self.seconds = seconds
    }
}

/// One pulled image as `GET /v1/images` lists it.
public struct ImageInfo: Codable, Equatable, Sendable {
    public var reference: String
    public var digest: String
    public var format: String
    public var blobs: [BlobInfo]
    /// Uncompressed bytes of all its blobs (what its filesystem can read).
    public var size: Int64
    /// Of `size`, how many bytes are local.
    public var localBytes: Int64
    public var mountpoint: String
    public var createdAt: String

    public init(
        reference: String, digest: String, format: String, blobs: [BlobInfo], size: Int64, localBytes: Int64, mountpoint: String,
        createdAt: String
    ) {
        self.reference = reference
        self.digest = digest
        self.format = format
        self.blobs = blobs
        self.size = size
        self.localBytes = localBytes
        self.mountpoint = mountpoint
        self.createdAt = createdAt
    }

    enum CodingKeys: String, CodingKey {
        case reference, digest, format, blobs, size, mountpoint
        case localBytes = "local_bytes"
        case createdAt = "created_at"
    }
}

public struct BlobInfo: Codable, Equatable, Sendable {
    public var id: String
    public var storedSize: Int64
    public var uncompressedSize: Int64
    public var localBytes: Int64
    public var backingFile: String

    public init(id: String, storedSize: Int64, uncompressedSize: Int64, localBytes: Int64, backingFile: String) {
        self.id = id
        self.storedSize = storedSize
        self.uncompressedSize = uncompressedSize
        self.localBytes = localBytes
        self.backingFile = backingFile
    }

    enum CodingKeys: String, CodingKey {
        case id
        case storedSize = "stored_size"
        case uncompressedSize = "uncompressed_size"
        case localBytes = "local_bytes"
        case backingFile = "backing_file"
    }
}

public struct ImagesResponse: Codable, Sendable {
    public var images: [ImageInfo]
    public init(images: [ImageInfo]) { self.images = images }
}

public struct PullResponse: Codable, Sendable {
    public var image: ImageInfo
    /// False when the image was already pulled at the same manifest.
    public var pulled: Bool
    public init(image: ImageInfo, pulled: Bool) {
        self.image = image
        self.pulled = pulled
    }
}

/// A pull in flight, as `GET /v1/pulls` lists it (progress displays poll it).
public struct PullStatus: Codable, Equatable, Sendable {
    public var reference: String
    public var phase: String
    public var bytesDone: Int64
    public var bytesTotal: Int64
    public init(reference: String, phase: String, bytesDone: Int64, bytesTotal: Int64) {
        self.reference = reference
        self.phase = phase
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
    }

    enum CodingKeys: String, CodingKey {
        case reference, phase
        case bytesDone = "bytes_done"
        case bytesTotal = "bytes_total"
    }
}

public struct PullsResponse: Codable, Sendable {
    public var pulls: [PullStatus]
    public init(pulls: [PullStatus]) { self.pulls = pulls }
}

/// `status`: one line per image.
public struct ImageStatus: Codable, Equatable, Sendable {
    public var reference: String
    public var bytesFetched: Int64
    public var localBytes: Int64
    public var size: Int64
    public var percentLocal: Double
    /// Why the daemon does not serve the image (it failed verification at start-up); nil while it is served.
    /// Readers of a failed image get EIO.
    public var error: String?
    public init(reference: String, bytesFetched: Int64, localBytes: Int64, size: Int64, percentLocal: Double, error: String? = nil) {
        self.reference = reference
        self.bytesFetched = bytesFetched
        self.localBytes = localBytes
        self.size = size
        self.percentLocal = percentLocal
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case reference, size, error
        case bytesFetched = "bytes_fetched"
        case localBytes = "local_bytes"
        case percentLocal = "percent_local"
    }
}

// MARK: - Convert and inspect

/// `POST /v1/convert`: an OCI image (a layout directory, or `docker://REF`) to a nydus-style image (a layout
/// directory, or `docker://REF`).
public struct ConvertRequest: Codable, Sendable {
    public var source: String
    public var destination: String
    /// `ref.name` of the source image in a layout with several; the name written to the destination layout.
    public var sourceTag: String?
    public var tag: String?
    public var chunkSize: UInt32?
    /// `zstd` (default), `lz4` or `none`.
    public var compression: String?
    /// Absolute paths (files or directories) recorded as the image's prefetch table: fetched in the background
    /// as soon as the image is pulled.
    public var prefetch: [String]?

    public init(
        source: String, destination: String, sourceTag: String? = nil, tag: String? = nil, chunkSize: UInt32? = nil,
        compression: String? = nil, prefetch: [String]? = nil
    ) {
        self.prefetch = prefetch
        self.source = source
        self.destination = destination
        self.sourceTag = sourceTag
        self.tag = tag
        self.chunkSize = chunkSize
        self.compression = compression
    }

    enum CodingKeys: String, CodingKey {
        case source, destination, tag, compression, prefetch
        case sourceTag = "source_tag"
        case chunkSize = "chunk_size"
    }
}

public struct ConvertResponse: Codable, Sendable {
    public var manifestDigest: String
    public var sourceManifestDigest: String
    public var blobs: [BlobInfo]
    public var bootstrapSize: Int64
    public var seconds: Double

    public init(manifestDigest: String, sourceManifestDigest: String, blobs: [BlobInfo], bootstrapSize: Int64, seconds: Double) {
        self.manifestDigest = manifestDigest
        self.sourceManifestDigest = sourceManifestDigest
        self.blobs = blobs
        self.bootstrapSize = bootstrapSize
        self.seconds = seconds
    }

    enum CodingKeys: String, CodingKey {
        case blobs, seconds
        case manifestDigest = "manifest_digest"
        case sourceManifestDigest = "source_manifest_digest"
        case bootstrapSize = "bootstrap_size"
    }
}

/// `POST /v1/inspect`: a bootstrap's tree, and with `verify` every chunk of the blobs found in `blobs`.
public struct InspectRequest: Codable, Sendable {
    public var bootstrap: String
    public var blobs: String?
    public var verify: Bool?

    public init(bootstrap: String, blobs: String? = nil, verify: Bool? = nil) {
        self.bootstrap = bootstrap
        self.blobs = blobs
        self.verify = verify
    }
}

public struct InspectEntry: Codable, Equatable, Sendable {
    public var path: String
    public var type: String
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var sha256: String?
    public var target: String?

    public init(path: String, type: String, mode: UInt16, uid: UInt32, gid: UInt32, size: UInt64, sha256: String?, target: String?) {
        self.path = path
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.sha256 = sha256
        self.target = target
    }
}

public struct InspectResponse: Codable, Sendable {
    public var entries: [InspectEntry]
    /// One text line per entry, as `snapctl inspect` prints them.
    public var lines: [String]
    public var verified: VerifySummary?

    public init(entries: [InspectEntry], lines: [String], verified: VerifySummary?) {
        self.entries = entries
        self.lines = lines
        self.verified = verified
    }
}

public struct VerifySummary: Codable, Sendable {
    public var blobsChecked: [String]
    public var blobsMissing: [String]
    public var chunksChecked: Int
    public var bytesChecked: UInt64

    public init(blobsChecked: [String], blobsMissing: [String], chunksChecked: Int, bytesChecked: UInt64) {
        self.blobsChecked = blobsChecked
        self.blobsMissing = blobsMissing
        self.chunksChecked = chunksChecked
        self.bytesChecked = bytesChecked
    }

    enum CodingKeys: String, CodingKey {
        case blobsChecked = "blobs_checked"
        case blobsMissing = "blobs_missing"
        case chunksChecked = "chunks_checked"
        case bytesChecked = "bytes_checked"
    }
}

/// `POST /v1/images/prefetch`: fetch a whole image, or the listed files of it, in the background.
public struct PrefetchRequest: Codable, Sendable {
    public var reference: String
    /// Absolute paths inside the image; none means every blob whole.
    public var paths: [String]?

    public init(reference: String, paths: [String]? = nil) {
        self.reference = reference
        self.paths = paths
    }
}

public struct PrefetchResponse: Codable, Sendable {
    /// Byte ranges queued, and their uncompressed size.
    public var ranges: Int
    public var bytes: UInt64

    public init(ranges: Int, bytes: UInt64) {
        self.ranges = ranges
        self.bytes = bytes
    }
}

// MARK: - Cache

/// The image store's cache against its budget (`status`, `usage`).
public struct CacheStatus: Codable, Equatable, Sendable {
    /// Budget of chunk bytes; nil: none (the cache grows until images are removed).
    public var budgetBytes: Int64?
    /// Uncompressed chunk bytes present in the backing files.
    public var presentBytes: Int64
    /// Blocks the backing files occupy on disk (as `du`); nil in `status`, which stays cheap with thousands of
    /// blobs (`usage` and `/metrics` walk the files).
    public var diskBytes: Int64?
    /// Bytes evicted since the daemon started.
    public var evictedBytes: Int64
    /// Whether chunks can be evicted under this front end (eager serves complete files with nobody to ask).
    public var evictable: Bool

    public init(budgetBytes: Int64?, presentBytes: Int64, diskBytes: Int64?, evictedBytes: Int64, evictable: Bool) {
        self.budgetBytes = budgetBytes
        self.presentBytes = presentBytes
        self.diskBytes = diskBytes
        self.evictedBytes = evictedBytes
        self.evictable = evictable
    }

    enum CodingKeys: String, CodingKey {
        case evictable
        case budgetBytes = "budget_bytes"
        case presentBytes = "present_bytes"
        case diskBytes = "disk_bytes"
        case evictedBytes = "evicted_bytes"
    }
}

/// One image's share of the cache (`snapctl usage`). Blobs shared by images count in each of them.
public struct ImageUsage: Codable, Equatable, Sendable {
    public var reference: String
    /// Uncompressed bytes of its blobs.
    public var size: Int64
    /// Of `size`, the bytes present.
    public var presentBytes: Int64
    /// Blocks its blobs' backing files occupy on disk.
    public var diskBytes: Int64
    public var pinned: Bool

    public init(reference: String, size: Int64, presentBytes: Int64, diskBytes: Int64, pinned: Bool) {
        self.reference = reference
        self.size = size
        self.presentBytes = presentBytes
        self.diskBytes = diskBytes
        self.pinned = pinned
    }

    enum CodingKeys: String, CodingKey {
        case reference, size, pinned
        case presentBytes = "present_bytes"
        case diskBytes = "disk_bytes"
    }
}

public struct UsageResponse: Codable, Equatable, Sendable {
    public var images: [ImageUsage]
    public var cache: CacheStatus
    public init(images: [ImageUsage], cache: CacheStatus) {
        self.images = images
        self.cache = cache
    }
}

public struct PinRequest: Codable, Sendable {
    public var reference: String
    public var pinned: Bool
    public init(reference: String, pinned: Bool) {
        self.reference = reference
        self.pinned = pinned
    }
}
