import BlobStore
import Catalog
import LinuxKernel
import Logging
import MountManager
import OCI
import OCIRegistry
import RAFS
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Serving recorded images: checks each image before anything of it is served (bootstrap digest, blob metas,
/// chunk maps), registers its blobs with the fetch engine and the front end, and keeps its read-only EROFS
/// mount under `mnt/<id>`. `ImageService` decides when (start-up, pull, removal); this type does the work.
final class ImageServing: Sendable {
    let root: String
    let catalog: ImageCatalog
    let layout: ImageStoreLayout
    let engine: BlobEngine
    let frontEnd: any OnDemandFrontEnd
    let client: RegistryClient
    let kernelReadaheadKilobytes: Int
    let logger: Logger
    /// The chunk map each served blob row was registered with: an image sharing the row is served only with the
    /// same one (rows from before chunk maps were recorded have none in the catalog to compare with).
    private let registeredChunkMaps = Mutex<[Int64: String]>([:])
    /// Serializes updates of `detachedMarker`.
    private let markerLock = Mutex(())

    init(
        root: String, catalog: ImageCatalog, layout: ImageStoreLayout, engine: BlobEngine, frontEnd: any OnDemandFrontEnd,
        client: RegistryClient, kernelReadaheadKilobytes: Int, logger: Logger
    ) {
        self.root = root
        self.catalog = catalog
        self.layout = layout
        self.engine = engine
        self.frontEnd = frontEnd
        self.client = client
        self.kernelReadaheadKilobytes = kernelReadaheadKilobytes
        self.logger = logger
    }

    func mountPoint(of id: Int64) -> String { FileSystem.join(root, "mnt", String(id)) }

    /// The fscache cookie of an image's bootstrap (cachefiles front end); unique per image row.
    static func fsid(of image: ImageRecord) -> String { "image-\(image.id)" }

    /// The image's bootstrap as the front end serves it (cachefiles: an fscache object named by the fsid).
    static func bootstrapFile(of image: ImageRecord, size: UInt64) -> BackingFile {
        BackingFile(
            id: .bootstrap(imageID: image.id), path: image.bootstrapPath, cookieKey: fsid(of: image), size: size, domain: image.domain)
    }

    /// A blob as the front end serves it (cachefiles: an fscache object named by the blob id).
    static func blobFile(_ blob: BlobRecord, size: UInt64) -> BackingFile {
        BackingFile(id: .blob(blob.id), path: blob.backingPath, cookieKey: blob.blobID, size: size, domain: blob.domain)
    }

    /// Returns the image's opened bootstrap (the pull's prefetch table is read from it).
    /// Everything is checked before anything is served: the bootstrap against the digest recorded when it was
    /// unpacked from its digest-checked layer, each blob meta against the bootstrap (inside `RafsBlob`), and
    /// each blob's chunk map against the one recorded for its (shared) row.
    /// `justUnpacked`: the pull that recorded the image hashed the bootstrap a moment ago.
    @discardableResult
    func serveBlobs(
        of image: ImageRecord, skipping served: inout Set<Int64>, justUnpacked: Bool = false
    ) async throws
        -> ErofsImage
    {
        try await serve(try await verify(image, justUnpacked: justUnpacked), skipping: &served)
    }

    /// An image whose bootstrap and blob metas were checked, ready to be served.
    struct VerifiedImage: Sendable {
        var image: ImageRecord
        var bootstrap: ErofsImage
        var opened: [(blob: BlobRecord, position: Int, rafs: RafsBlob)]
        /// Where each blob's files end, computed here for small images (`inlineIndexInodes`).
        var fileEnds: [UInt16: [ErofsImage.FileDataEnd]]?
    }

    /// `verify` for every image, as many at a time as there are cores; results in the images' order.
    func verifyAll(_ images: [ImageRecord]) async -> [Result<VerifiedImage, any Error>] {
        let width = max(1, min(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 8))
        let finished = await withTaskGroup(of: (index: Int, result: Result<VerifiedImage, any Error>).self) { group in
            var finished: [(index: Int, result: Result<VerifiedImage, any Error>)] = []
            finished.reserveCapacity(images.count)
            for (index, image) in images.enumerated() {
                if index >= width, let one = await group.next() { finished.append(one) }
                group.addTask {
                    do {
                        return (index, .success(try await self.verify(image, justUnpacked: false)))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            while let one = await group.next() { finished.append(one) }
            return finished
        }
        return finished.sorted { $0.index < $1.index }.map(\.result)
    }

    /// Checks everything before anything is served (see `serveBlobs`); touches neither the engine nor the
    /// front end, so images can be verified side by side.
    private func verify(_ image: ImageRecord, justUnpacked: Bool) async throws -> VerifiedImage {
        if !justUnpacked {
            let found = try await runBlocking { try ImagePuller.sha256(ofFile: image.bootstrapPath) }
            if let recorded = image.bootstrapDigest {
                guard found == recorded else {
                    throw DaemonError.bootstrapChanged(path: image.bootstrapPath, recorded: recorded, found: found)
                }
            } else {
                try await runBlocking { try self.catalog.setBootstrapDigest(imageID: image.id, digest: found) }
            }
        }
        let bootstrap = try ErofsImage(path: image.bootstrapPath)
        let chunkTable = try bootstrap.rafsChunkTable()
        var opened: [(blob: BlobRecord, position: Int, rafs: RafsBlob)] = []
        for blob in image.blobs {
            guard let position = bootstrap.blobs.firstIndex(where: { $0.blobID == blob.blobID }) else {
                throw CatalogError.blobMissing(reference: image.reference, blobID: blob.blobID)
            }
            let rafs = try RafsBlob(path: blob.metaPath, entry: bootstrap.blobs[position], chunkTable: chunkTable)
            if let recorded = blob.chunkMap, recorded != rafs.commitment {
                throw DaemonError.chunkMapChanged(
                    blobID: blob.blobID, domain: blob.domain, recorded: recorded, found: rafs.commitment)
            }
            opened.append((blob, position, rafs))
        }
        // Walked at every start-up under the eager front end (about 10 us a file): the image may have been pulled
        // under a front end that refuses such reads itself.
        if frontEnd.traits.needsCompleteBlobs {
            // No front end stands between the kernel and these backing files: a file mapped onto bytes no chunk
            // describes would read a hole as zeros, so the image is refused instead.
            let devices = Dictionary(uniqueKeysWithValues: opened.map { (UInt16($0.position + 1), $0.rafs) })
            if let undescribed = try await runBlocking({ try bootstrap.firstUndescribedRange(blobs: devices) }) {
                throw DaemonError.undescribed(undescribed)
            }
        }
        let fileEnds = bootstrap.superBlock.inodeCount <= Self.inlineIndexInodes ? try bootstrap.fileDataEnds() : nil
        return VerifiedImage(image: image, bootstrap: bootstrap, opened: opened, fileEnds: fileEnds)
    }

    /// Serves a verified image's bootstrap and the blobs not in `served`, and adds its registry as another
    /// source of the blobs that are.
    @discardableResult
    func serve(_ verified: VerifiedImage, skipping served: inout Set<Int64>) async throws -> ErofsImage {
        let (image, bootstrap, opened) = (verified.image, verified.bootstrap, verified.opened)
        // Checked before anything of the image is served: a shared row is read through the chunk map it was
        // registered with, so an image describing the blob otherwise would read another image's bytes.
        for (blob, _, rafs) in opened where served.contains(blob.id) {
            if let registered = registeredChunkMaps.withLock({ $0[blob.id] }), registered != rafs.commitment {
                throw DaemonError.chunkMapChanged(blobID: blob.blobID, domain: blob.domain, recorded: registered, found: rafs.commitment)
            }
        }
        if frontEnd.traits.servesBootstrap {
            // Bootstraps are local and complete: the filler has nothing to fetch for them.
            let size = UInt64(try FileSystem.lstat(image.bootstrapPath).st_size)
            try frontEnd.serve(Self.bootstrapFile(of: image, size: size))
        }
        // A blob this image shares with one served already can also be fetched from this image's registry.
        let own = try? ImageReference(parsing: image.reference)
        for (blob, _, _) in opened where served.contains(blob.id) {
            let registry = image.format == .converted ? nil : own?.registry
            let repository = image.format == .converted ? nil : own?.repository
            if let extra = try? Self.source(registry: registry, repository: repository, blob: blob, client: client) {
                engine.addSource(blobID: blob.id, extra)
            }
        }
        var newlyServed: [UInt16: Int64] = [:]
        for (blob, position, rafs) in opened where !served.contains(blob.id) {
            if blob.chunkMap == nil {
                // Recorded before chunk maps were kept: the first image that verifies it fixes it.
                try await runBlocking { try self.catalog.setChunkMap(blobRowID: blob.id, chunkMap: rafs.commitment) }
            }
            let source = try Self.source(registry: blob.registry, repository: blob.repository, blob: blob, client: client)
            // The front end knows the file first, so that a blob found complete can be taken off its watch list.
            try frontEnd.serve(Self.blobFile(blob, size: rafs.deviceSize))
            try engine.register(id: blob.id, rafs: rafs, backingPath: blob.backingPath, source: source, bitmap: blob.present)
            registeredChunkMaps.withLock { $0[blob.id] = rafs.commitment }
            // The blob is the kernel's device `position + 1` (device 0 is the bootstrap).
            newlyServed[UInt16(position + 1)] = blob.id
            served.insert(blob.id)
        }
        guard !newlyServed.isEmpty else { return bootstrap }
        if let fileEnds = verified.fileEnds {
            setFileLayouts(fileEnds, of: newlyServed)
        } else {
            indexFiles(of: newlyServed, bootstrap: bootstrap)
        }
        return bootstrap
    }

    /// Where a blob's stored bytes come from: a registry's ranged GETs, or the whole blob on local disk (images
    /// converted here).
    private static func source(
        registry: String?, repository: String?, blob: BlobRecord, client: RegistryClient
    ) throws
        -> any BlobRangeSource
    {
        guard let registry, let repository else { return LocalBlobSource(path: blob.metaPath) }
        if let layer = blob.sourceLayer {
            // Stored bytes inflated from the image layer's gzip stream, through the blob's gzip index.
            let windows = try blob.indexPackage.map {
                RegistryBlobSource(client: client, registry: registry, repository: repository, digest: try Digest(parsing: $0))
            }
            return GzipIndexedBlobSource(
                layer: RegistryBlobSource(client: client, registry: registry, repository: repository, digest: try Digest(parsing: layer)),
                indexPath: ImagePuller.zranPackagePath(metaPath: blob.metaPath), indexOffset: ImagePuller.zranIndexOffset,
                windows: windows)
        }
        return RegistryBlobSource(
            client: client, registry: registry, repository: repository, digest: try Digest(parsing: "sha256:" + blob.blobID))
    }

    /// Hands each blob (by its device number) its files' layout.
    private func setFileLayouts(_ layouts: [UInt16: [ErofsImage.FileDataEnd]], of blobs: [UInt16: Int64]) {
        for (device, blobID) in blobs { engine.setFileLayout(blobID: blobID, fileEnds: layouts[device] ?? []) }
    }

    /// Images up to this many inodes get their file layout before their first read (a walk of the tree costs
    /// ~10 us a file: 20 ms here); larger ones in the background.
    static let inlineIndexInodes: UInt64 = 2_000

    /// Gives the engine the blobs' file layouts (one walk of the image's tree), computed in the background,
    /// off pulls and start-up. Read-ahead is bounded by size alone until they arrive.
    private func indexFiles(of blobs: [UInt16: Int64], bootstrap: ErofsImage) {
        Task.detached(priority: .utility) {
            do {
                let layouts = try await runBlocking { try bootstrap.fileDataEnds() }
                self.setFileLayouts(layouts, of: blobs)
            } catch {
                self.logger.warning(
                    "file layout not indexed; read-ahead is bounded by size only",
                    metadata: ["image.bootstrap": "\(bootstrap.file.path)", "error": "\(error)"])
            }
        }
    }

    /// Mounts the image's EROFS (bootstrap as source, each blob as `device=`) unless already mounted. The
    /// eager front end first fetches every blob whole.
    /// `mounted`: the mount points in force, when the caller read them already.
    func mountIfNeeded(_ image: ImageRecord, mounted: Set<String>? = nil) async throws {
        if let reason = frontEnd.traits.imageMountUnsupportedReason {
            logger.notice("image not mounted", metadata: ["image.reference": "\(image.reference)", "mount.reason": "\(reason)"])
            return
        }
        let target = mountPoint(of: image.id)
        if let mounted {
            if mounted.contains(target) { return }
        } else if MountInfo.isMountPoint(target, in: try MountInfo.read()) {
            return
        }
        // Converted images have their data here already: fill their backing files now rather than per read.
        if frontEnd.traits.needsCompleteBlobs || image.format == .converted {
            for blob in image.blobs { try await engine.prefetch(blobID: blob.id) }
        }
        for blob in image.blobs { try layout.ensureDeviceLink(blobID: blob.blobID, domain: blob.domain) }
        let mount = frontEnd.imageMount(
            bootstrap: image.bootstrapPath, fsid: Self.fsid(of: image), domain: image.domain,
            devices: image.blobs.map { layout.deviceLink(blobID: $0.blobID, domain: $0.domain) })
        try await runBlocking {
            try FileSystem.makeDirectories(target, mode: 0o755)
            try Mounter.mount(mount, at: target)
        }
        if kernelReadaheadKilobytes > 0 {
            do {
                try KernelReadahead.set(mountPoint: target, kilobytes: kernelReadaheadKilobytes)
            } catch {
                // Older kernels (no FS_IOC_GETFSSYSFSPATH) keep their default window: slower, still correct.
                logger.info("kernel readahead left at its default", metadata: ["mount.target": "\(target)", "error": "\(error)"])
            }
        }
        logger.info("image mounted", metadata: ["image.reference": "\(image.reference)", "mount.target": "\(target)"])
    }

    /// Unmounts an image's EROFS if it is mounted; one still used outside our snapshots is detached (and
    /// noted with `blobs`, nil when unknown: `mayHaveDetachedMounts`, `detachedMountMayHold`).
    func unmountImage(at target: String, blobs: [BlobRecord]?) throws {
        guard MountInfo.isMountPoint(target, in: try MountInfo.read()) else { return }
        do {
            try Mounter.unmount(target)
        } catch {
            // Noted first: once detached, mountinfo no longer shows it.
            noteDetached(blobs: blobs.map { $0.map { "\($0.domain) \($0.blobID)" } } ?? ["*"])
            try Mounter.unmount(target, detach: true)
            logger.notice("image mount detached: it is still in use", metadata: ["mount.target": "\(target)"])
        }
    }

    /// This boot's id, then a line per blob (`<domain> <blob id>`, `*` for any) of the image mounts detached
    /// while in use in this boot. Such a mount reads on with no mount point to show for it: a stopping daemon
    /// must not release the fanotify group (the kernel would let its reads of holes through, as zeros), and
    /// under cachefiles its cookies stay live in their EROFS domain, where a new mount naming the same blob
    /// would share them (and the bytes an earlier, maybe different, chunk map put there).
    var detachedMarker: String { FileSystem.join(root, "detached-mounts") }

    /// The marker's blob lines, when it is this boot's.
    private func detachedLines() -> [String]? {
        guard let bytes = try? FileSystem.readFile(detachedMarker) else { return nil }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
        guard let first = lines.first, first == Self.bootID() else { return nil }
        return Array(lines.dropFirst())
    }

    private func noteDetached(blobs: [String]) {
        markerLock.withLock { _ in
            let lines = [Self.bootID()] + (detachedLines() ?? []) + blobs
            try? FileSystem.writeFileAtomically(detachedMarker, Array((lines.joined(separator: "\n") + "\n").utf8))
        }
    }

    /// Whether an image mount detached in this boot may still be reading.
    func mayHaveDetachedMounts() -> Bool { detachedLines() != nil }

    /// Whether a mount detached in this boot may still hold `blobID` in `domain`.
    func detachedMountMayHold(domain: String, blobID: String) -> Bool {
        guard let lines = detachedLines() else { return false }
        return lines.contains("*") || lines.contains("\(domain) \(blobID)")
    }

    static func bootID() -> String {
        let bytes = (try? FileSystem.readFile("/proc/sys/kernel/random/boot_id")) ?? []
        return String(decoding: bytes.filter { $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: " ") }, as: UTF8.self)
    }

    /// Start-up: unmounts image mounts under `mnt/` whose image the catalog no longer has (a removal cut
    /// short by a crash, or a catalog restored from a backup), so the kernel holds only recorded images.
    func unmountUnrecordedImages(recorded images: [ImageRecord]) throws -> [String] {
        let recorded = Set(images.map { mountPoint(of: $0.id) })
        let prefix = FileSystem.join(root, "mnt") + "/"
        var removed: [String] = []
        for entry in try MountInfo.read() where entry.mountPoint.hasPrefix(prefix) && !recorded.contains(entry.mountPoint) {
            let rest = entry.mountPoint.dropFirst(prefix.count)
            guard !rest.contains("/"), Int64(rest) != nil else { continue }
            try unmountImage(at: entry.mountPoint, blobs: nil)
            try? FileSystem.removeTree(entry.mountPoint)
            logger.notice("unrecorded image mount removed", metadata: ["mount.target": "\(entry.mountPoint)"])
            removed.append(entry.mountPoint)
        }
        return removed
    }
}

/// The front end's fill requests go to the fetch engine.
struct EngineFiller: RangeFiller {
    let engine: BlobEngine

    func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws {
        guard case .blob(let id) = file else { return }  // a bootstrap: complete on disk
        try await engine.ensure(blobID: id, offset: offset, length: length)
    }

    func fillAndHold(file: BackingFileID, offset: UInt64, length: UInt64) async throws -> RangeLease {
        guard case .blob(let id) = file else { return RangeLease() }
        return try await engine.hold(blobID: id, offset: offset, length: length)
    }

    func isPresent(file: BackingFileID, offset: UInt64, length: UInt64) -> Bool {
        guard case .blob(let id) = file else { return true }
        return engine.isPresent(blobID: id, offset: offset, length: length)
    }
}
