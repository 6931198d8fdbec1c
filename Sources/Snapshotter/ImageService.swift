import BlobStore
import Catalog
import LinuxKernel
import Logging
import MountManager
import OCI
import OCIRegistry
import RAFS
import SnapshotterAPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Images on the host: pulls them (BlobStore), serves their blobs through the fetch engine and the
/// on-demand front end, and keeps one read-only EROFS mount per image under `mnt/<id>`, which snapshots
/// made with `--image` use as their bottom layer.
final class ImageService: Sendable {
    let root: String
    let catalog: ImageCatalog
    let puller: ImagePuller
    let engine: BlobEngine
    let frontEnd: any OnDemandFrontEnd
    let client: RegistryClient
    let logger: Logger
    private let pulls = Mutex<[String: PullProgress]>([:])
    /// The pull under way per reference: a second caller for the same reference awaits it instead of
    /// pulling again (single flight), through serving and mounting, so both see one finished image.
    private let inFlight = Mutex<[String: Task<PullResponse, any Error>]>([:])
    /// Images start-up could not verify or serve, by reference, with the reason: not mounted, not served
    /// (their readers get EIO), reported by `status` until removed.
    private let failed = Mutex<[String: String]>([:])

    /// The page-cache readahead of image mounts: one chunk (nydus's default chunk size), so a sequential
    /// reader costs the front end one round trip per chunk instead of one per 128 KiB, while a page fault's
    /// read-around stays within about one chunk.
    static let defaultKernelReadaheadKilobytes = 1024
    let kernelReadaheadKilobytes: Int
    /// Whether a newly pulled image's prefetch table is fetched in the background at once.
    let prefetchOnPull: Bool

    init(
        root: String, database: Database, client: RegistryClient, engine: BlobEngine, frontEnd: any OnDemandFrontEnd,
        kernelReadaheadKilobytes: Int = ImageService.defaultKernelReadaheadKilobytes, prefetchOnPull: Bool = true, logger: Logger
    ) {
        self.root = root
        self.kernelReadaheadKilobytes = kernelReadaheadKilobytes
        self.prefetchOnPull = prefetchOnPull
        self.client = client
        self.engine = engine
        self.frontEnd = frontEnd
        self.logger = logger
        catalog = ImageCatalog(database: database)
        engine.onComplete { [frontEnd] id in frontEnd.complete(id: .blob(id)) }
        puller = ImagePuller(layout: ImageStoreLayout(root: root), catalog: catalog, client: client, logger: logger)
    }

    func mountPoint(of id: Int64) -> String { FileSystem.join(root, "mnt", String(id)) }

    // MARK: - Start-up

    /// Serves every recorded blob, completes inherited kernel requests, then makes sure every image is
    /// mounted (a restart finds the mounts still there; a reboot does not).
    /// An image that cannot be verified or served fails alone: it is logged, reported by `status`, and left
    /// unserved, so that its readers get EIO at once (no front end answers a hole of a file nobody serves
    /// with zeros) while every other image is served.
    func start() async throws {
        // One read of the catalog serves the clean-up passes and the serving below.
        let images = try await runBlocking { try self.catalog.images() }
        _ = try await runBlocking { try self.unmountUnrecordedImages(recorded: images) }
        _ = try await runBlocking { try self.puller.sweepLeftovers(images: images) }
        // Verification (hashing bootstraps, reading and checking blob metas) is independent per image: it runs
        // on every core; serving, which registers shared blobs once, follows in reference order.
        let verified = await verifyAll(images)
        var served = Set<Int64>()
        var healthy: [ImageRecord] = []
        for (image, result) in zip(images, verified) {
            do {
                try await serve(try result.get(), skipping: &served)
                healthy.append(image)
            } catch {
                failed.withLock { $0[image.reference] = "\(error)" }
                logger.error(
                    "image not served: it failed verification; its readers get EIO (pull it again after snapctl rmi)",
                    metadata: ["image.reference": "\(image.reference)", "error": "\(error)"])
            }
        }
        let resumed = try await frontEnd.resumeInFlight()
        frontEnd.startServing()
        if resumed > 0 { logger.notice("completed reads a previous daemon left waiting", metadata: ["fanotify.count": "\(resumed)"]) }
        // One read of mountinfo for all images: it has a line per mount, so one read per image is quadratic.
        let mounted = Set(try await runBlocking { try MountInfo.read() }.map(\.mountPoint))
        for image in healthy {
            do {
                try await mountIfNeeded(image, mounted: mounted)
            } catch {
                logger.error("image not mounted", metadata: ["image.reference": "\(image.reference)", "error": "\(error)"])
            }
        }
    }

    /// The fscache cookie of an image's bootstrap (cachefiles front end); unique per image row.
    static func fsid(of image: ImageRecord) -> String { "image-\(image.id)" }

    /// Returns the image's opened bootstrap (the pull's prefetch table is read from it).
    /// Everything is checked before anything is served: the bootstrap against the digest recorded when it was
    /// unpacked from its digest-checked layer, each blob meta against the bootstrap (inside `RafsBlob`), and
    /// each blob's chunk map against the one recorded for its (shared) row.
    /// `justUnpacked`: the pull that recorded the image hashed the bootstrap a moment ago.
    @discardableResult
    private func serveBlobs(
        of image: ImageRecord, skipping served: inout Set<Int64>, justUnpacked: Bool = false
    ) async throws
        -> ErofsImage
    {
        try await serve(try await verify(image, justUnpacked: justUnpacked), skipping: &served)
    }

    /// An image whose bootstrap and blob metas were checked, ready to be served.
    private struct VerifiedImage: Sendable {
        var image: ImageRecord
        var bootstrap: ErofsImage
        var opened: [(blob: BlobRecord, position: Int, rafs: RafsBlob)]
        /// Where each blob's files end, computed here for small images (`inlineIndexInodes`).
        var fileEnds: [UInt16: [ErofsImage.FileDataEnd]]?
    }

    /// `verify` for every image, as many at a time as there are cores; results in the images' order.
    private func verifyAll(_ images: [ImageRecord]) async -> [Result<VerifiedImage, any Error>] {
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
                    throw ImageVerificationError.bootstrapChanged(path: image.bootstrapPath, recorded: recorded, found: found)
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
                throw ImageVerificationError.chunkMapChanged(
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
                throw ImageVerificationError.undescribed(undescribed)
            }
        }
        let fileEnds = bootstrap.superBlock.inodeCount <= Self.inlineIndexInodes ? try bootstrap.fileDataEnds() : nil
        return VerifiedImage(image: image, bootstrap: bootstrap, opened: opened, fileEnds: fileEnds)
    }

    /// Serves a verified image's bootstrap and the blobs not in `served`, and adds its registry as another
    /// source of the blobs that are.
    @discardableResult
    private func serve(_ verified: VerifiedImage, skipping served: inout Set<Int64>) async throws -> ErofsImage {
        let (image, bootstrap, opened) = (verified.image, verified.bootstrap, verified.opened)
        if frontEnd.traits.servesBootstrap {
            // Bootstraps are local and complete: the filler has nothing to fetch for them.
            let size = UInt64(try FileSystem.lstat(image.bootstrapPath).st_size)
            try frontEnd.serve(
                BackingFile(
                    id: .bootstrap(imageID: image.id), path: image.bootstrapPath, cookieKey: Self.fsid(of: image), size: size,
                    domain: image.domain))
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
            try frontEnd.serve(
                BackingFile(id: .blob(blob.id), path: blob.backingPath, cookieKey: blob.blobID, size: rafs.deviceSize, domain: blob.domain))
            try engine.register(id: blob.id, rafs: rafs, backingPath: blob.backingPath, source: source, bitmap: blob.present)
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
    private func mountIfNeeded(_ image: ImageRecord, mounted: Set<String>? = nil) async throws {
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
        let layout = puller.layout
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

    // MARK: - Calls

    /// Pulls `reference` (see `ImagePuller.pull`, also for `knownManifestDigest`), serves and mounts it.
    /// Concurrent calls for the same reference share one pull; the work goes on if the first caller leaves.
    func pull(_ reference: String, knownManifestDigest: String? = nil) async throws -> PullResponse {
        let key = (try? ImageReference(parsing: reference).description) ?? reference
        let task = inFlight.withLock { tasks in
            if let running = tasks[key] { return running }
            let task = Task {
                defer { _ = self.inFlight.withLock { $0.removeValue(forKey: key) } }
                return try await self.pullOnce(reference, knownManifestDigest: knownManifestDigest)
            }
            tasks[key] = task
            return task
        }
        return try await task.value
    }

    private func pullOnce(_ reference: String, knownManifestDigest: String?) async throws -> PullResponse {
        let key = reference
        defer { _ = pulls.withLock { $0.removeValue(forKey: key) } }
        let (image, newBlobs, pulled) = try await puller.pull(reference, knownManifestDigest: knownManifestDigest) { progress in
            self.pulls.withLock { $0[key] = progress }
        }
        // Recorded, not yet served nor mounted: start-up serves and mounts every recorded image.
        CrashPoint.reach("pull.recorded")
        // An image pulled before is served already (at start-up or by that pull): only its mount is checked.
        // A new one's blobs that the catalog knew before (shared with another image) are served already too.
        var bootstrap: ErofsImage?
        do {
            if pulled {
                // Shared blobs are skipped only if the engine serves them (their first image may have failed).
                var served = Set(image.blobs.map(\.id).filter { engine.progress(blobID: $0) != nil }).subtracting(newBlobs)
                bootstrap = try await serveBlobs(of: image, skipping: &served, justUnpacked: true)
            }
            try await mountIfNeeded(image)
        } catch {
            // A pull that cannot be served leaves nothing behind.
            _ = try? await runBlocking { try self.remove(image.reference) }
            throw error
        }
        if let bootstrap, prefetchOnPull {
            do {
                let bytes = try await runBlocking { try self.prefetchHinted(image, bootstrap: bootstrap) }
                if bytes > 0 {
                    logger.info(
                        "prefetching the image's start-up files",
                        metadata: ["image.reference": "\(image.reference)", "prefetch.bytes": "\(bytes)"])
                }
            } catch {
                // A malformed table costs the image its head start, not its pull.
                logger.warning("prefetch table ignored", metadata: ["image.reference": "\(image.reference)", "error": "\(error)"])
            }
        }
        // A pull (a conversion above all) leaves freed buffers in malloc's arenas: give them back.
        if pulled { ProcessLimits.releaseFreedMemory() }
        return PullResponse(image: try info(image), pulled: pulled)
    }

    func pullsInFlight() -> [PullStatus] {
        pulls.withLock {
            $0.values.map { PullStatus(reference: $0.reference, phase: $0.phase, bytesDone: $0.bytesDone, bytesTotal: $0.bytesTotal) }
        }
        .sorted { $0.reference < $1.reference }
    }

    /// Blocking: unmounts the image, then drops its records, then withdraws blobs no other image uses and
    /// deletes their files (see `ImagePuller.remove` for why in this order).
    func remove(_ reference: String) throws {
        _ = try puller.remove(reference) { image in
            try unmountImage(at: mountPoint(of: image.id))
        } restore: { image in
            Task { try? await self.mountIfNeeded(image) }
        } beforeDeletingFiles: { image, orphans in
            _ = failed.withLock { $0.removeValue(forKey: image.reference) }
            try? FileSystem.removeTree(mountPoint(of: image.id))
            frontEnd.withdraw(id: .bootstrap(imageID: image.id))
            for blob in orphans {
                frontEnd.withdraw(id: .blob(blob.id))
                engine.unregister(id: blob.id)
            }
        }
    }

    /// Unmounts an image's EROFS if it is mounted; one still used outside our snapshots is detached.
    private func unmountImage(at target: String) throws {
        guard MountInfo.isMountPoint(target, in: try MountInfo.read()) else { return }
        do {
            try Mounter.unmount(target)
        } catch {
            try Mounter.unmount(target, detach: true)
        }
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
            try unmountImage(at: entry.mountPoint)
            try? FileSystem.removeTree(entry.mountPoint)
            logger.notice("unrecorded image mount removed", metadata: ["mount.target": "\(entry.mountPoint)"])
            removed.append(entry.mountPoint)
        }
        return removed
    }

    func list() throws -> [ImageInfo] {
        try catalog.images().map(info)
    }

    /// One line per image for `status`: from the catalog's summaries (no chunk bitmaps, no per-blob records)
    /// and the engine's counters, so it stays cheap with thousands of images.
    func statuses() throws -> [ImageStatus] {
        let failures = failed.withLock { $0 }
        return try catalog.summaries().map { image in
            if let error = failures[image.reference] {
                return ImageStatus(reference: image.reference, bytesFetched: 0, localBytes: 0, size: 0, percentLocal: 0, error: error)
            }
            var size: Int64 = 0
            var local: Int64 = 0
            var fetched: Int64 = 0
            for blob in image.blobs {
                let progress = engine.progress(blobID: blob.id)
                size += progress.map { Int64($0.total) } ?? blob.uncompressedSize
                local += progress.map { Int64($0.present) } ?? 0
                fetched += Int64(engine.bytesFetched(blobID: blob.id))
            }
            let percent = size > 0 ? (Double(local) * 100 / Double(size) * 10).rounded() / 10 : 100
            return ImageStatus(reference: image.reference, bytesFetched: fetched, localBytes: local, size: size, percentLocal: percent)
        }
    }

    func info(_ image: ImageRecord) throws -> ImageInfo {
        let blobs = image.blobs.map { blob in
            let progress = engine.progress(blobID: blob.id)
            return BlobInfo(
                id: blob.blobID, storedSize: blob.storedSize, uncompressedSize: progress.map { Int64($0.total) } ?? blob.uncompressedSize,
                localBytes: progress.map { Int64($0.present) } ?? 0,
                backingFile: blob.backingPath)
        }
        return ImageInfo(
            reference: image.reference, digest: image.manifestDigest, format: image.format.rawValue, blobs: blobs,
            size: blobs.reduce(0) { $0 + $1.uncompressedSize }, localBytes: blobs.reduce(0) { $0 + $1.localBytes },
            mountpoint: mountPoint(of: image.id), createdAt: RFC3339.format(nanoseconds: image.createdNanoseconds))
    }

    /// The front end's counters in Prometheus text format.
    func frontEndMetrics() -> String {
        var text = "# HELP snapshotter_front_end_info The on-demand front end in use.\n# TYPE snapshotter_front_end_info gauge\n"
        text += "snapshotter_front_end_info{front_end=\"\(frontEnd.name)\"} 1\n"
        if let fanotify = frontEnd as? FanotifyOnDemand {
            let stats = fanotify.frontEnd.statistics
            for (name, help, value) in [
                ("fanotify_events_total", "Pre-content events read.", stats.events),
                ("fanotify_filled_total", "Events answered after a successful fill.", stats.filled),
                ("fanotify_denied_total", "Events answered with EIO.", stats.denied),
            ] {
                text += "# HELP snapshotter_\(name) \(help)\n# TYPE snapshotter_\(name) counter\nsnapshotter_\(name) \(value)\n"
            }
        }
        return text
    }

    /// Whether any image is mounted: a stopping daemon then leaves the fanotify group with its holder. Under a
    /// front end whose images we never mount (seed), every pulled image counts: its readers are out of our sight.
    func hasMountedImages() -> Bool {
        guard let images = try? catalog.images(), let table = try? MountInfo.read() else { return true }
        if frontEnd.traits.imageMountUnsupportedReason != nil { return !images.isEmpty }
        return images.contains { MountInfo.isMountPoint(mountPoint(of: $0.id), in: table) }
    }
}

/// The front end's fill requests go to the fetch engine.
struct EngineFiller: RangeFiller {
    let engine: BlobEngine

    func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws {
        guard case .blob(let id) = file else { return }  // a bootstrap: complete on disk
        try await engine.ensure(blobID: id, offset: offset, length: length)
    }

    func isPresent(file: BackingFileID, offset: UInt64, length: UInt64) -> Bool {
        guard case .blob(let id) = file else { return true }
        return engine.isPresent(blobID: id, offset: offset, length: length)
    }
}

/// Why an image recorded in the catalog is not served after a restart.
enum ImageVerificationError: Error, CustomStringConvertible {
    case bootstrapChanged(path: String, recorded: String, found: String)
    case chunkMapChanged(blobID: String, domain: String, recorded: String, found: String)
    case undescribed(ErofsImage.UndescribedRange)

    var description: String {
        switch self {
        case .bootstrapChanged(let path, let recorded, let found):
            return "bootstrap \(path) has sha256 \(found), not the \(recorded) recorded when it was pulled; remove and pull the image again"
        case .chunkMapChanged(let blobID, let domain, let recorded, let found):
            return
                "blob \(blobID) (domain \(domain)) now has chunk map \(found), not the \(recorded) its images were served with; remove and pull the image again"
        case .undescribed(let range):
            return "the image cannot be served without an on-demand front end: \(range)"
        }
    }
}
