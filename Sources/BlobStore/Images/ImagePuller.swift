import Archive
import Catalog
import Digests
import LinuxKernel
import Logging
import OCI
import OCIRegistry
import RAFS
import RAFSBuilder
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a long pull stands, for progress displays.
public struct PullProgress: Equatable, Sendable {
    public var reference: String
    public var phase: String
    public var bytesDone: Int64
    public var bytesTotal: Int64

    public init(reference: String, phase: String, bytesDone: Int64 = 0, bytesTotal: Int64 = 0) {
        self.reference = reference
        self.phase = phase
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
    }
}

/// The files a pull keeps under the service root.
public struct ImageStoreLayout: Sendable {
    public let root: String
    /// Cache domain shared by images whose blobs agree (see `ImageCatalog.domain(for:)`), so images that name
    /// the same blob with the same chunk map share its backing file.
    public static let domain = Catalog.sharedDomain

    public init(root: String) {
        self.root = root
    }

    public var cacheDirectory: String { FileSystem.join(root, "cache") }
    public var imagesDirectory: String { FileSystem.join(root, "images") }
    public var metaDirectory: String { FileSystem.join(root, "blobs") }
    public var temporaryDirectory: String { FileSystem.join(root, "tmp") }

    /// Where a nydus image's bootstrap goes: its manifest names the bootstrap layer's digest, so every pull of
    /// that manifest unpacks the same bytes here.
    public func bootstrapPath(manifestDigest: Digest) -> String {
        FileSystem.join(imagesDirectory, manifestDigest.encoded, "image.boot")
    }

    /// Where a bootstrap the manifest does not commit to goes (built by conversion, or taken from a gzip index
    /// artifact): one directory per bootstrap content, so a pull of the same manifest with another bootstrap (another
    /// repository's index, another converter) never replaces one an image already serves.
    public func bootstrapPath(manifestDigest: Digest, bootstrapSHA256 hex: String) -> String {
        FileSystem.join(imagesDirectory, "\(manifestDigest.encoded)-\(hex)", "image.boot")
    }

    /// `cache/I<volume>/@<fan>/D<blob id>`, named as the kernel's cachefiles names its files (volume
    /// `erofs,<domain>`).
    public func backingPath(blobID: String, domain: String = Self.domain) -> String {
        FileSystem.join(cacheDirectory, CachefilesNaming.relativePath(domain: domain, blobID: blobID))
    }

    /// `cache/by-id/<blob id>` (`cache/by-id/<domain>/<blob id>` outside the shared domain): a relative symlink
    /// to the backing file. Mount options are comma-separated and the cachefiles volume directory
    /// (`Ierofs,<domain>`) has a comma, so EROFS's `device=` names this link.
    public func deviceLink(blobID: String, domain: String = Self.domain) -> String {
        FileSystem.join(Self.directory(FileSystem.join(cacheDirectory, "by-id"), of: domain), blobID)
    }

    /// `directory` for the shared domain, `directory/<domain>` for any other.
    static func directory(_ directory: String, of domain: String) -> String {
        domain == Self.domain ? directory : FileSystem.join(directory, domain)
    }

    /// Creates (or fixes) the device link of a blob: a new link is made beside it and renamed over it, so that
    /// concurrent pulls sharing the blob never see it missing nor fail on each other's link.
    public func ensureDeviceLink(blobID: String, domain: String = Self.domain) throws {
        let link = deviceLink(blobID: blobID, domain: domain)
        let up = domain == Self.domain ? "../" : "../../"
        let target = up + CachefilesNaming.relativePath(domain: domain, blobID: blobID)
        if FileSystem.readLink(link) == target { return }
        try FileSystem.makeDirectories(FileSystem.parentPath(link), mode: 0o700)
        let partial = link + ".partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try retryingSyscall("symlink", partial) { symlink(target, partial) }
        do {
            try FileSystem.rename(partial, link)
        } catch {
            unlink(partial)
            throw error
        }
    }

    /// `blobs/<blob id>.meta` (`blobs/<domain>/<blob id>.meta` outside the shared domain).
    public func metaPath(blobID: String, domain: String = Self.domain) -> String {
        FileSystem.join(Self.directory(metaDirectory, of: domain), blobID + ".meta")
    }
}

/// `pull`: resolves an image, records it and its blobs in the catalog, and prepares its files without
/// downloading data: for a nydus-style image the bootstrap is fetched whole, each data blob gets a sparse
/// backing file of its full uncompressed size, and only the blob's meta sections (chunk map, ToC; a few KiB
/// at its tail) are fetched with one ranged GET.
public final class ImagePuller: Sendable {
    /// The most of a blob's tail (chunk infos, digests, ToC) a pull fetches; beyond it the blob is refused.
    public static let maximumMetaBytes = ImageLimits.metaBytes

    public let layout: ImageStoreLayout
    public let catalog: ImageCatalog
    public let client: RegistryClient
    let logger: Logger
    /// Which gzip indexes of plain images are used (lazy start without conversion).
    public let gzipIndexPolicy: GzipIndexPolicy
    private let pulling = Mutex<Set<String>>([])
    /// Pulls under way and whether a removal is: a removal picks orphan files in its transaction and deletes
    /// them after, so a pull must not reuse those files in between. Removals wait for pulls under way, and
    /// pulls that start meanwhile wait for the removal (which takes milliseconds).
    private let activity = Mutex<(pulls: Int, removing: Bool)>((0, false))
    /// Blocking: whether a blob new to the shared domain may take its name there, i.e. the kernel holds no copy
    /// of that name left by an earlier row (which a mount in that domain would share). See
    /// `OnDemandFrontEnd.releaseKernelCopy`.
    let newInSharedDomain: @Sendable (_ blobID: String) -> Bool

    public init(
        layout: ImageStoreLayout, catalog: ImageCatalog, client: RegistryClient, gzipIndexPolicy: GzipIndexPolicy = GzipIndexPolicy(),
        newInSharedDomain: @escaping @Sendable (_ blobID: String) -> Bool = { _ in true }, logger: Logger
    ) {
        self.layout = layout
        self.catalog = catalog
        self.client = client
        self.gzipIndexPolicy = gzipIndexPolicy
        self.newInSharedDomain = newInSharedDomain
        self.logger = logger
    }

    /// Pulls `text` (a registry reference) and returns the recorded image, the ids of blobs that are new, and
    /// whether anything was pulled.
    /// Pulling a reference again is a no-op while the registry still has the same manifest. A caller that
    /// knows the manifest digest already (containerd resolved it and says so in a layer's labels) passes it
    /// as `knownManifestDigest`: when the catalog holds that manifest under this reference, nothing is asked
    /// of the registry.
    /// A caller that also knows the image's layer digests (CRI names them, bootstrap last) passes them as
    /// `knownLayers`: the bootstrap and the blobs' tails are then fetched alongside the manifest, not after it,
    /// and used only where the manifest names the same digests (the bootstrap's bytes are checked against it).
    public func pull(
        _ text: String, platform: Platform = .current, knownManifestDigest: String? = nil, knownLayers: [Digest] = [],
        lazyOnly: Bool = false, progress: @escaping @Sendable (PullProgress) -> Void = { _ in }
    ) async throws -> (image: ImageRecord, newBlobs: Set<Int64>, pulled: Bool) {
        let reference = try ImageReference(parsing: text)
        let name = reference.description
        let claimed = pulling.withLock { $0.insert(name).inserted }
        guard claimed else { throw CatalogError.pullInProgress(reference: name) }
        defer { _ = pulling.withLock { $0.remove(name) } }
        while !activity.withLock({ state in
            guard !state.removing else { return false }
            state.pulls += 1
            return true
        }) {
            try await Task.sleep(for: .milliseconds(10))
        }
        defer { activity.withLock { $0.pulls -= 1 } }

        if let knownManifestDigest,
            let existing = try await runBlocking({ try self.catalog.image(reference: name) }),
            existing.manifestDigest == knownManifestDigest
        {
            progress(PullProgress(reference: name, phase: "up to date"))
            return (existing, [], false)
        }

        progress(PullProgress(reference: name, phase: "resolving"))
        let early = knownManifestDigest == nil ? nil : SpeculativeStart(layers: knownLayers, reference: reference, puller: self)
        defer { early?.cancel() }
        let resolved = try await client.resolve(reference, platform: platform)
        let manifestDigest = resolved.manifest.descriptor.digest
        if let existing = try await runBlocking({ try self.catalog.image(reference: name) }) {
            guard existing.manifestDigest == manifestDigest.description else {
                throw CatalogError.alreadyPulled(reference: name, digest: existing.manifestDigest)
            }
            progress(PullProgress(reference: name, phase: "up to date"))
            return (existing, [], false)
        }
        let manifest = resolved.imageManifest
        try FileSystem.makeDirectories(layout.temporaryDirectory, mode: 0o700)
        let work = FileSystem.join(layout.temporaryDirectory, "pull-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
        try FileSystem.makeDirectory(work, mode: 0o700)
        defer { try? FileSystem.removeTree(work) }
        guard let parts = NydusLayout.split(manifest) else {
            if let indexed = try await pullGzipIndexed(
                reference, name: name, manifestDigest: manifestDigest, manifest: manifest, work: work, progress: progress)
            {
                return indexed
            }
            if lazyOnly {
                throw CatalogError.notAnImage(reference: name, reason: "a plain image without a trusted gzip index cannot be served lazily")
            }
            return try await pullConverting(
                reference, name: name, manifestDigest: manifestDigest, manifest: manifest, work: work, progress: progress)
        }

        // Each blob's meta lies at its end; where it starts is in the bootstrap. The last bytes of every blob
        // are fetched alongside the bootstrap so that small images need no round trip after it.
        // Blobs whose tails the speculative start did not ask for get theirs now.
        var tails = early?.tails ?? [:]
        let others = speculativeTails(of: parts.blobs.map(\.digest).filter { tails[$0.encoded] == nil }, reference: reference)
        tails.merge(others) { first, _ in first }
        defer { for tail in tails.values { tail.cancel() } }

        // The bootstrap: fetched whole (it is small), digest-checked, unpacked from its tar.gz.
        guard parts.bootstrap.size <= ImageLimits.bootstrapLayerBytes else {
            throw CatalogError.notAnImage(
                reference: name,
                reason: "its bootstrap layer is \(parts.bootstrap.size) bytes; at most \(ImageLimits.bootstrapLayerBytes) are fetched")
        }
        progress(PullProgress(reference: name, phase: "bootstrap", bytesTotal: parts.bootstrap.size))
        let layerPath = FileSystem.join(work, "bootstrap.layer")
        if let bytes = await early?.bootstrap(matching: parts.bootstrap) {
            try await runBlocking { try Self.writeSparse(path: layerPath, size: Int64(bytes.count), at: 0, bytes: bytes) }
        } else {
            try await client.fetchBlob(
                registry: reference.registry, repository: reference.repository, descriptor: parts.bootstrap, to: layerPath)
        }
        let bootstrapPath = layout.bootstrapPath(manifestDigest: manifestDigest)
        let bootstrapDigest = try await runBlocking { try Self.unpackBootstrap(layer: layerPath, to: bootstrapPath) }
        let image = try ErofsImage(path: bootstrapPath)
        let chunkTable = try image.rafsChunkTable()
        guard !image.blobs.isEmpty else {
            throw CatalogError.notAnImage(reference: name, reason: "its bootstrap has no blob table (not a RAFS v6 bootstrap)")
        }

        // Each data blob's meta (chunk infos, ToC) is checked against this bootstrap before anything else
        // happens: a meta file already here is used only if this bootstrap commits to it too; otherwise its
        // tail is fetched with one ranged GET (or taken from the speculative tail).
        struct Placed {
            var entry: RafsBlobEntry
            var layer: Descriptor
            var start: Int64
            /// The verified meta file: one already in place, or the fetched candidate.
            var file: String
            var fetched: Bool
            var rafs: RafsBlob
        }
        var placed: [Placed] = []
        // Fetched metas not moved into place are removed however the pull ends.
        var candidates = Set<String>()
        defer { for candidate in candidates { unlink(candidate) } }
        try FileSystem.makeDirectories(layout.metaDirectory, mode: 0o700)
        let metaTotal = image.blobs.reduce(Int64(0)) { total, entry in
            let size = parts.blobs.first { $0.digest.encoded == entry.blobID }?.size ?? 0
            return total + max(0, size - Int64(clamping: entry.metaOffset))
        }
        var metaDone: Int64 = 0
        for entry in image.blobs {
            guard let layer = parts.blobs.first(where: { $0.digest.encoded == entry.blobID }) else {
                throw CatalogError.blobMissing(reference: name, blobID: entry.blobID)
            }
            progress(
                PullProgress(reference: name, phase: "blob meta \(entry.blobID.prefix(12))", bytesDone: metaDone, bytesTotal: metaTotal))
            let start = Int64(clamping: entry.metaOffset)
            guard start <= layer.size, layer.size - start <= Self.maximumMetaBytes else {
                throw CatalogError.notAnImage(
                    reference: name,
                    reason: "blob \(entry.blobID) puts its meta at \(entry.metaOffset) of \(layer.size) bytes; refusing to fetch that much")
            }
            // A meta file already here is used only if this bootstrap vouches for it too.
            let known = layout.metaPath(blobID: entry.blobID)
            if FileSystem.exists(known), let rafs = try? RafsBlob(path: known, entry: entry, chunkTable: chunkTable) {
                placed.append(Placed(entry: entry, layer: layer, start: start, file: known, fetched: false, rafs: rafs))
                continue
            }
            let tail = try await metaBytes(of: layer, from: start, speculative: tails[layer.digest.encoded], reference: reference)
            metaDone += Int64(tail.count)
            // Written once, next to where it goes (same file system), and moved into place once the domain is known.
            let candidate = FileSystem.join(layout.metaDirectory, ".\(entry.blobID).\(UInt32.random(in: 0...UInt32.max)).partial")
            candidates.insert(candidate)
            try await runBlocking { try Self.writeSparse(path: candidate, size: layer.size, at: start, bytes: tail, replacing: false) }
            do {
                let rafs = try RafsBlob(path: candidate, entry: entry, chunkTable: chunkTable)
                placed.append(Placed(entry: entry, layer: layer, start: start, file: candidate, fetched: true, rafs: rafs))
            } catch {
                throw CatalogError.notAnImage(reference: name, reason: "blob \(entry.blobID): \(error)")
            }
        }

        // Blobs are shared with other images only where their chunk maps agree; the domain says where.
        let commitments = placed.map { (blobID: $0.entry.blobID, chunkMap: $0.rafs.commitment) }
        let domain = try await runBlocking { try self.catalog.domain(for: commitments, usableAsNew: self.newInSharedDomain) }
        var blobs: [NewBlob] = []
        for blob in placed {
            let blobID = blob.entry.blobID
            let metaPath = layout.metaPath(blobID: blobID, domain: domain)
            if blob.file != metaPath {
                let current = FileSystem.exists(metaPath) ? try? RafsBlob(path: metaPath, entry: blob.entry, chunkTable: chunkTable) : nil
                if current?.commitment != blob.rafs.commitment {
                    try FileSystem.makeDirectories(FileSystem.parentPath(metaPath), mode: 0o700)
                    if blob.fetched {
                        try FileSystem.rename(blob.file, metaPath)
                        candidates.remove(blob.file)
                    } else {
                        // The verified meta of the shared domain, copied into this image's own.
                        let (file, start, size) = (try ImageFile(path: blob.rafs.path), blob.start, blob.layer.size)
                        try await runBlocking {
                            let tail = try file.read(at: UInt64(start), count: Int(size - start), what: "blob meta")
                            try Self.writeSparse(path: metaPath, size: size, at: start, bytes: tail)
                        }
                    }
                }
            }
            let backingPath = layout.backingPath(blobID: blobID, domain: domain)
            try await runBlocking { try Self.createSparse(path: backingPath, size: Int64(blob.rafs.deviceSize)) }
            try layout.ensureDeviceLink(blobID: blobID, domain: domain)
            blobs.append(
                NewBlob(
                    blobID: blobID, chunkMap: blob.rafs.commitment, registry: reference.registry, repository: reference.repository,
                    storedSize: blob.layer.size, uncompressedSize: Int64(blob.entry.uncompressedSize), backingPath: backingPath,
                    metaPath: metaPath))
        }
        if domain != ImageStoreLayout.domain {
            logger.notice(
                "image placed in a cache domain of its own: a blob it names is known with another chunk map",
                metadata: ["image.reference": "\(name)", "image.domain": "\(domain)"])
        }
        let record = NewImage(
            reference: name, manifestDigest: manifestDigest.description, format: .nydus, bootstrapPath: bootstrapPath,
            bootstrapDigest: bootstrapDigest, domain: domain, blobs: blobs)
        // Everything is on disk, nothing recorded: start-up's `sweepLeftovers` removes what a crash here leaves.
        CrashPoint.reach("pull.fetched")
        let (inserted, newBlobs) = try await runBlocking { try self.catalog.insert(record) }
        progress(PullProgress(reference: name, phase: "done", bytesDone: metaTotal, bytesTotal: metaTotal))
        logger.info(
            "image pulled",
            metadata: [
                "image.reference": "\(name)", "image.digest": "\(manifestDigest)", "image.blobs": "\(blobs.count)",
                "image.meta_bytes": "\(metaDone)", "image.domain": "\(domain)",
            ])
        return (inserted, newBlobs, true)
    }

    /// Bytes fetched from the end of each blob while the bootstrap comes in: enough for the meta of a blob
    /// of a few thousand chunks. Too few costs one more ranged GET; too many, chunk data fetched twice.
    static let speculativeTailBytes: Int64 = 64 << 10
    /// Blobs whose tails are fetched alongside the bootstrap (the rest are fetched after it, one by one).
    static let speculativeTailBlobs = 8

    /// Starts fetching the last `speculativeTailBytes` of each blob (of the first few) without a meta here
    /// yet, by suffix range: the blob's size need not be known (a pull that has not seen the manifest yet).
    func speculativeTails(of blobs: [Digest], reference: ImageReference) -> [String: Task<[UInt8], any Error>] {
        var tails: [String: Task<[UInt8], any Error>] = [:]
        for digest in blobs.prefix(Self.speculativeTailBlobs)
        where tails[digest.encoded] == nil && !FileSystem.exists(layout.metaPath(blobID: digest.encoded)) {
            let client = client
            tails[digest.encoded] = Task {
                try await client.fetchBlobSuffix(
                    registry: reference.registry, repository: reference.repository, digest: digest, count: Int(Self.speculativeTailBytes))
            }
        }
        return tails
    }

    /// The blob's bytes from `start` to its end: from its speculative tail where that covers them (with one GET
    /// for what lies before the tail), else with one ranged GET.
    private func metaBytes(
        of blob: Descriptor, from start: Int64, speculative: Task<[UInt8], any Error>?, reference: ImageReference
    ) async throws -> [UInt8] {
        if let speculative, let tail = try? await speculative.value, tail.count == min(blob.size, Self.speculativeTailBytes) {
            let tailStart = blob.size - Int64(tail.count)
            if start >= tailStart { return Array(tail[Int(start - tailStart)...]) }
            let head = try await client.fetchBlobRange(
                registry: reference.registry, repository: reference.repository, digest: blob.digest, range: start..<tailStart)
            return head + tail
        }
        return try await client.fetchBlobRange(
            registry: reference.registry, repository: reference.repository, digest: blob.digest, range: start..<blob.size)
    }

    /// A plain OCI image: its layers are fetched whole (digest-checked) and converted here; the built blobs are
    /// complete local sources, so the image never needs the registry again.
    private func pullConverting(
        _ reference: ImageReference, name: String, manifestDigest: Digest, manifest: ImageManifest, work: String,
        progress: @escaping @Sendable (PullProgress) -> Void
    ) async throws -> (image: ImageRecord, newBlobs: Set<Int64>, pulled: Bool) {
        let convertible: Set<String> = [MediaType.ociLayer, MediaType.ociLayerGzip, MediaType.ociLayerZstd, MediaType.dockerLayerGzip]
        for layer in manifest.layers where !convertible.contains(layer.mediaType) {
            throw CatalogError.notAnImage(
                reference: name, reason: "layer \(layer.digest) has media type \(layer.mediaType), which cannot be converted")
        }
        let total = manifest.layers.reduce(Int64(0)) { $0 + $1.size }
        let inputs = try await Self.fetchLayers(manifest.layers, of: reference, name: name, client: client, work: work, progress: progress)
        progress(PullProgress(reference: name, phase: "converting", bytesDone: total, bytesTotal: total))
        let output = FileSystem.join(work, "build")
        let layers = inputs
        let built = try await runBlocking { try ImageBuilder(logger: self.logger).build(layers: layers, outputDirectory: output) }
        let bootstrapDigest = try await runBlocking { try Self.sha256(ofFile: built.bootstrapPath) }
        let bootstrapPath = layout.bootstrapPath(manifestDigest: manifestDigest, bootstrapSHA256: bootstrapDigest)
        try FileSystem.makeDirectories(FileSystem.parentPath(bootstrapPath), mode: 0o700)
        try FileSystem.rename(built.bootstrapPath, bootstrapPath)
        try FileSystem.makeDirectories(layout.metaDirectory, mode: 0o700)
        // The built blobs are whole and were made here from digest-checked layers; their chunk maps still
        // decide which images they may be shared with.
        let image = try ErofsImage(path: bootstrapPath)
        let chunkTable = try image.rafsChunkTable()
        var opened: [(blob: BuiltBlob, rafs: RafsBlob)] = []
        for blob in built.blobs {
            guard let entry = image.blobs.first(where: { $0.blobID == blob.blobID }) else {
                throw CatalogError.blobMissing(reference: name, blobID: blob.blobID)
            }
            opened.append((blob, try RafsBlob(path: blob.path, entry: entry, chunkTable: chunkTable)))
        }
        let commitments = opened.map { (blobID: $0.blob.blobID, chunkMap: $0.rafs.commitment) }
        let domain = try await runBlocking { try self.catalog.domain(for: commitments, usableAsNew: self.newInSharedDomain) }
        var blobs: [NewBlob] = []
        for (blob, rafs) in opened {
            // A whole blob is a superset of a meta file at the same path (same id, same bytes): it may replace one.
            let metaPath = layout.metaPath(blobID: blob.blobID, domain: domain)
            try FileSystem.makeDirectories(FileSystem.parentPath(metaPath), mode: 0o700)
            try FileSystem.rename(blob.path, metaPath)
            let backingPath = layout.backingPath(blobID: blob.blobID, domain: domain)
            try await runBlocking { try Self.createSparse(path: backingPath, size: Int64(rafs.deviceSize)) }
            try layout.ensureDeviceLink(blobID: blob.blobID, domain: domain)
            blobs.append(
                NewBlob(
                    blobID: blob.blobID, chunkMap: rafs.commitment, registry: nil, repository: nil, storedSize: Int64(blob.compressedSize),
                    uncompressedSize: Int64(blob.uncompressedSize), backingPath: backingPath, metaPath: metaPath))
        }
        let record = NewImage(
            reference: name, manifestDigest: manifestDigest.description, format: .converted, bootstrapPath: bootstrapPath,
            bootstrapDigest: bootstrapDigest, domain: domain, blobs: blobs)
        // Everything is on disk, nothing recorded: start-up's `sweepLeftovers` removes what a crash here leaves.
        CrashPoint.reach("pull.fetched")
        let (inserted, newBlobs) = try await runBlocking { try self.catalog.insert(record) }
        progress(PullProgress(reference: name, phase: "done", bytesDone: total, bytesTotal: total))
        logger.info(
            "image pulled and converted",
            metadata: ["image.reference": "\(name)", "image.digest": "\(manifestDigest)", "image.layers": "\(manifest.layers.count)"])
        return (inserted, newBlobs, true)
    }

    /// Fetches `layers` whole (each digest-checked) into `work` as `layer-<n>`, reporting progress per layer;
    /// returns them as build inputs named by their digests.
    static func fetchLayers(
        _ layers: [Descriptor], of reference: ImageReference, name: String, client: RegistryClient, work: String,
        progress: @escaping @Sendable (PullProgress) -> Void
    ) async throws -> [LayerInput] {
        let total = layers.reduce(Int64(0)) { $0 + $1.size }
        var done: Int64 = 0
        var inputs: [LayerInput] = []
        for (index, layer) in layers.enumerated() {
            progress(PullProgress(reference: name, phase: "layer \(index + 1)/\(layers.count)", bytesDone: done, bytesTotal: total))
            let path = FileSystem.join(work, "layer-\(index)")
            try await client.fetchBlob(registry: reference.registry, repository: reference.repository, descriptor: layer, to: path)
            done += layer.size
            inputs.append(LayerInput(path: path, digest: layer.digest.description))
        }
        return inputs
    }

    /// Removes an image and the files of blobs no other image uses, in an order that a crash at any point
    /// leaves the kernel and the catalog agreeing: `beforeDeletingRecord` takes the image out of the kernel
    /// (its mount) while its record still exists, so a crash before the delete commits leaves a recorded
    /// image that start-up mounts again; then the records go; then `beforeDeletingFiles` withdraws the
    /// orphans from the engine and front end, and their files go. If a snapshot was made on the image in the
    /// meantime, `restore` puts the image back into the kernel and the removal is refused.
    public func remove(
        _ reference: String,
        beforeDeletingRecord: (ImageRecord) throws -> Void,
        restore: (ImageRecord) -> Void,
        beforeDeletingFiles: (ImageRecord, [BlobRecord]) throws -> Void
    ) throws -> ImageRecord {
        let name = (try? ImageReference(parsing: reference).description) ?? reference
        while !activity.withLock({ state in
            guard !state.removing else { return false }
            state.removing = true
            return true
        }) {
            usleep(10_000)
        }
        defer { activity.withLock { $0.removing = false } }
        while activity.withLock({ $0.pulls }) > 0 { usleep(10_000) }
        try beforeDeletingRecord(try catalog.removable(reference: name))
        CrashPoint.reach("rmi.unmounted")
        let image: ImageRecord
        let orphans: [BlobRecord]
        do {
            (image, orphans) = try catalog.remove(reference: name)
        } catch {
            if let kept = try? catalog.image(reference: name) { restore(kept) }
            throw error
        }
        CrashPoint.reach("rmi.committed")
        try beforeDeletingFiles(image, orphans)
        // Each step below may be the last before a crash: start-up's sweep removes what the rest would have.
        for blob in orphans {
            unlink(layout.deviceLink(blobID: blob.blobID, domain: blob.domain))
            CrashPoint.reach("rmi.link-unlinked")
            unlink(blob.backingPath)
            CrashPoint.reach("rmi.backing-unlinked")
            unlink(blob.metaPath)
            unlink(Self.zranPackagePath(metaPath: blob.metaPath))
            CrashPoint.reach("rmi.meta-unlinked")
        }
        if try catalog.imagesUsing(bootstrapPath: image.bootstrapPath) == 0 {
            try? FileSystem.removeTree(FileSystem.parentPath(image.bootstrapPath))
            CrashPoint.reach("rmi.bootstrap-removed")
        }
        logger.info("image removed", metadata: ["image.reference": "\(name)", "image.orphan_blobs": "\(orphans.count)"])
        return image
    }

    // MARK: - Files

    /// Extracts `image/image.boot` from a (gzip) tar layer to `path` via a temporary file and rename.
    /// - Returns: the hex sha256 of the bootstrap, recorded so that the file can be checked when reopened.
    @discardableResult
    static func unpackBootstrap(layer: String, to path: String) throws -> String {
        let reader = try TarReader.open(path: layer, maximumEntrySize: ImageLimits.bootstrapBytes)
        while let entry = try reader.next() {
            let normalized = entry.path.hasPrefix("./") ? String(entry.path.dropFirst(2)) : entry.path
            guard normalized == NydusLayout.bootstrapEntry, case .regular = entry.kind else { continue }
            try FileSystem.makeDirectories(FileSystem.parentPath(path), mode: 0o700)
            let partial = path + ".partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let fd = try retryingSyscall("open", partial) { open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var offset: UInt64 = 0
            var hasher = SHA256()
            while true {
                let count = try buffer.withUnsafeMutableBytes { try reader.readData(into: $0) }
                if count == 0 { break }
                hasher.update(buffer[0..<count])
                try FileSystem.writeAll(fd, Array(buffer[0..<count]), at: offset, path: partial)
                offset += UInt64(count)
            }
            try retryingSyscall("fsync", partial) { fsync(fd) }
            try FileSystem.rename(partial, path)
            return hasher.finalize().hexString
        }
        throw CatalogError.notAnImage(reference: layer, reason: "its bootstrap layer holds no \(NydusLayout.bootstrapEntry)")
    }

    /// The hex sha256 of a whole file, read in 1 MiB pieces (a bootstrap may be up to `ImageLimits.bootstrapBytes`).
    public static func sha256(ofFile path: String) throws -> String {
        let file = try ImageFile(path: path)
        var hasher = SHA256()
        var offset: UInt64 = 0
        while offset < file.size {
            let count = Int(min(file.size - offset, 1 << 20))
            hasher.update(try file.read(at: offset, count: count, what: "file to hash"))
            offset += UInt64(count)
        }
        return hasher.finalize().hexString
    }

    /// With no pull running (start-up, or `snapctl cleanup` with pulls held off): removes what pulls and removals cut short by a crash left behind: the
    /// work directories under `tmp/`, meta files and partial metas no blob row names, bootstrap directories no
    /// image names and partial bootstraps, and blob backing files and device links under `cache/` no blob row
    /// names. Returns the paths removed.
    /// `images`: the catalog's images, read once by the caller.
    /// `removingTemporary`: which entries of `tmp/` may go (at run time, not those of running conversions).
    public func sweepLeftovers(images: [ImageRecord], removingTemporary: (String) -> Bool = { _ in true }) throws -> [String] {
        let blobs = try catalog.allBlobs()
        // A gzip-indexed blob's index lies beside its meta.
        let metas = Set(blobs.map(\.metaPath) + blobs.filter { $0.sourceLayer != nil }.map { Self.zranPackagePath(metaPath: $0.metaPath) })
        let bootstraps = Set(images.map(\.bootstrapPath))
        var removed: [String] = []
        func remove(_ path: String) {
            do {
                try FileSystem.removeTree(path)
                removed.append(path)
                CrashPoint.reach("gc.removed")
            } catch {
                logger.warning("leftover not removed", metadata: ["file.path": "\(path)", "error": "\(error)"])
            }
        }
        for name in (try? FileSystem.listDirectory(layout.temporaryDirectory)) ?? [] where removingTemporary(name) {
            remove(FileSystem.join(layout.temporaryDirectory, name))
        }
        // blobs/<id>.meta, blobs/<domain>/<id>.meta and their partial candidates.
        for name in (try? FileSystem.listDirectory(layout.metaDirectory)) ?? [] {
            let path = FileSystem.join(layout.metaDirectory, name)
            if FileSystem.isDirectory(path) {
                for inner in (try? FileSystem.listDirectory(path)) ?? [] where !metas.contains(FileSystem.join(path, inner)) {
                    remove(FileSystem.join(path, inner))
                }
            } else if !metas.contains(path) {
                remove(path)
            }
        }
        // images/<manifest digest>/image.boot and its partials.
        for name in (try? FileSystem.listDirectory(layout.imagesDirectory)) ?? [] {
            let directory = FileSystem.join(layout.imagesDirectory, name)
            let bootstrap = FileSystem.join(directory, "image.boot")
            guard bootstraps.contains(bootstrap) else {
                remove(directory)
                continue
            }
            for inner in (try? FileSystem.listDirectory(directory)) ?? [] where FileSystem.join(directory, inner) != bootstrap {
                remove(FileSystem.join(directory, inner))
            }
        }
        // cache/: backing files and device links of blobs no catalog row names (a pull cut short before it
        // recorded them, a removal cut short after it committed). Their bytes were only ever trusted through
        // a row's bitmap, so nothing is lost. Only names this store makes are touched: a blob's backing file
        // `D<64 hex digits>` (the seed devnode's kernel shares this tree and names bootstraps otherwise) and
        // the links under `by-id/`. Directories are left: the next pull of the volume reuses them.
        let backingFiles = Set(blobs.map(\.backingPath))
        let deviceLinks = Set(blobs.map { layout.deviceLink(blobID: $0.blobID, domain: $0.domain) })
        sweep(layout.cacheDirectory, depth: 0) { path, isLink in
            if isLink { return !deviceLinks.contains(path) }
            return Self.isBlobBackingName(FileSystem.lastComponent(path)) && !backingFiles.contains(path)
        } remove: {
            remove($0)
        }
        if !removed.isEmpty {
            logger.notice("removed what interrupted pulls and removals left", metadata: ["leftover.count": "\(removed.count)"])
        }
        return removed
    }

    /// `D` and a sha256 blob id (as `Digest` parses one): the name `CachefilesNaming` gives a blob's backing file.
    static func isBlobBackingName(_ name: String) -> Bool {
        name.hasPrefix("D") && (try? Digest(parsing: Digest.sha256Algorithm + ":" + name.dropFirst())) != nil
    }

    /// Walks `directory` without following symlinks (cache/ is three levels deep: `I<volume>/@<fan>/D<blob>`,
    /// `by-id[/<domain>]/<blob>`) and removes each file or symlink `isLeftover` names.
    private func sweep(
        _ directory: String, depth: Int, isLeftover: (String, Bool) -> Bool, remove: (String) -> Void
    ) {
        guard depth < 4 else { return }
        for name in (try? FileSystem.listDirectory(directory)) ?? [] {
            let path = FileSystem.join(directory, name)
            guard let st = try? FileSystem.lstat(path) else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: sweep(path, depth: depth + 1, isLeftover: isLeftover, remove: remove)
            case S_IFREG: if isLeftover(path, false) { remove(path) }
            case S_IFLNK: if isLeftover(path, true) { remove(path) }
            default: continue
            }
        }
    }

    /// Creates the empty sparse backing file of a blob unless it exists; never replaces one, so that a
    /// concurrent pull sharing the blob cannot swap the inode the front end serves. One cut short by a crash
    /// is grown to its size (its chunks count as present only per the catalog's bitmap, checked at start-up).
    static func createSparse(path: String, size: Int64) throws {
        try FileSystem.makeDirectories(FileSystem.parentPath(path), mode: 0o700)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 {
            guard errno == EEXIST else { throw SyscallError(call: "open", errno: errno, subject: path) }
            if try FileSystem.lstat(path).st_size < size {
                try retryingSyscall("truncate", path) { truncate(path, off_t(size)) }
            }
            return
        }
        defer { close(fd) }
        try retryingSyscall("ftruncate", path) { ftruncate(fd, off_t(size)) }
    }

    /// Creates (or replaces) a sparse file of `size` bytes holding `bytes` at `offset`, durably. The partial
    /// file is this call's own, so concurrent pulls writing the same meta never write into one file.
    /// With `replacing: false` the file at `path` is written directly (a new, private file).
    static func writeSparse(path: String, size: Int64, at offset: Int64, bytes: [UInt8], replacing: Bool = true) throws {
        try FileSystem.makeDirectories(FileSystem.parentPath(path), mode: 0o700)
        let partial = replacing ? path + ".partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" : path
        let fd = try retryingSyscall("open", partial) { open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        defer { close(fd) }
        try retryingSyscall("ftruncate", partial) { ftruncate(fd, off_t(size)) }
        try FileSystem.writeAll(fd, bytes, at: UInt64(offset), path: partial)
        try retryingSyscall("fsync", partial) { fsync(fd) }
        if replacing { try FileSystem.rename(partial, path) }
    }
}
