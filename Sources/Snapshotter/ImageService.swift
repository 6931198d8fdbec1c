import BlobStore
import Catalog
import LinuxKernel
import Logging
import MountManager
import OCI
import OCIRegistry
import RAFS
import RAFSBuilder
import SnapshotterAPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Images on the host: pulls (one flight per reference, with progress), removals, listing, status and
/// prefetch. Serving and mounting are `ImageServing`'s: this type decides when (start-up, after a pull,
/// before a removal). Each image keeps one read-only EROFS mount under `mnt/<id>`, which snapshots made with
/// `--image` use as their bottom layer.
final class ImageService: Sendable {
    let root: String
    let catalog: ImageCatalog
    let puller: ImagePuller
    let engine: BlobEngine
    let frontEnd: any OnDemandFrontEnd
    let client: RegistryClient
    let serving: ImageServing
    let logger: Logger
    private let pulls = Mutex<[String: PullProgress]>([:])
    /// The pull under way per reference: a second caller for the same reference awaits it instead of
    /// pulling again (single flight), through serving and mounting, so both see one finished image.
    private let inFlight = Mutex<[String: Task<PullResponse, any Error>]>([:])
    /// Whether `collectGarbage` is sweeping: pulls are refused meanwhile (taken under `inFlight`'s lock first).
    private let collecting = Mutex(false)
    /// Images start-up could not verify or serve, by reference, with the reason: not mounted, not served
    /// (their readers get EIO), reported by `status` until removed.
    private let failed = Mutex<[String: String]>([:])

    /// The page-cache readahead of image mounts: one chunk (nydus's default chunk size), so a sequential
    /// reader costs the front end one round trip per chunk instead of one per 128 KiB, while a page fault's
    /// read-around stays within about one chunk.
    static let defaultKernelReadaheadKilobytes = 1024
    /// Whether a newly pulled image's prefetch table is fetched in the background at once.
    let prefetchOnPull: Bool

    init(
        root: String, database: Database, client: RegistryClient, engine: BlobEngine, frontEnd: any OnDemandFrontEnd,
        kernelReadaheadKilobytes: Int = ImageService.defaultKernelReadaheadKilobytes, prefetchOnPull: Bool = true,
        gzipIndexPolicy: GzipIndexPolicy = GzipIndexPolicy(), logger: Logger
    ) {
        self.root = root
        self.prefetchOnPull = prefetchOnPull
        self.client = client
        self.engine = engine
        self.frontEnd = frontEnd
        self.logger = logger
        catalog = ImageCatalog(database: database)
        // Under a budget, complete blobs keep raising events: their reads are what orders eviction.
        let budgeted = engine.settings.cacheBudgetBytes != nil
        engine.onComplete(stopsEvents: !budgeted) { [frontEnd] id in if !budgeted { frontEnd.complete(id: .blob(id)) } }
        engine.onEvict { [frontEnd] id in frontEnd.prepareEviction(id: .blob(id)) }
        let serving = ImageServing(
            root: root, catalog: catalog, layout: ImageStoreLayout(root: root), engine: engine, frontEnd: frontEnd, client: client,
            kernelReadaheadKilobytes: kernelReadaheadKilobytes, logger: logger)
        self.serving = serving
        // A blob a mount detached in this boot may still hold in the shared domain (cachefiles: a live cookie,
        // shared with any new mount naming it there) is not given a new row there: its image gets its own domain.
        puller = ImagePuller(
            layout: serving.layout, catalog: catalog, client: client, gzipIndexPolicy: gzipIndexPolicy,
            newInSharedDomain: { !serving.detachedMountMayHold(domain: Catalog.sharedDomain, blobID: $0) }, logger: logger)
    }

    func mountPoint(of id: Int64) -> String { serving.mountPoint(of: id) }

    // MARK: - Start-up

    /// Serves every recorded blob, completes inherited kernel requests, then makes sure every image is
    /// mounted (a restart finds the mounts still there; a reboot does not).
    /// An image that cannot be verified or served fails alone: it is logged, reported by `status`, and left
    /// unserved, so that its readers get EIO at once (no front end answers a hole of a file nobody serves
    /// with zeros) while every other image is served.
    func start() async throws {
        // One read of the catalog serves the clean-up passes and the serving below.
        let images = try await runBlocking { try self.catalog.images() }
        engine.setPinned(Set(images.filter(\.pinned).flatMap { $0.blobs.map(\.id) }))
        if engine.settings.cacheBudgetBytes != nil, frontEnd.traits.needsCompleteBlobs {
            logger.warning(
                "the cache budget cannot be kept: the \(frontEnd.name) front end serves complete blobs and nothing can be evicted")
        }
        _ = try await runBlocking { try self.serving.unmountUnrecordedImages(recorded: images) }
        _ = try await runBlocking { try self.puller.sweepLeftovers(images: images) }
        _ = try await runBlocking { self.sweepKernelCopies(images: images) }
        // Verification (hashing bootstraps, reading and checking blob metas) is independent per image: it runs
        // on every core; serving, which registers shared blobs once, follows in reference order.
        let verified = await serving.verifyAll(images)
        var served = Set<Int64>()
        var healthy: [ImageRecord] = []
        for (image, result) in zip(images, verified) {
            do {
                try await serving.serve(try result.get(), skipping: &served)
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
        // A budget lowered since the last run, or a cache that grew past it before a crash: back inside it,
        // in the background (a pass blocks only itself).
        if engine.settings.cacheBudgetBytes != nil {
            Task.detached(priority: .background) { [engine] in _ = try? await runBlocking { engine.enforceBudget() } }
        }
        if resumed > 0 { logger.notice("completed reads a previous daemon left waiting", metadata: ["fanotify.count": "\(resumed)"]) }
        // One read of mountinfo for all images: it has a line per mount, so one read per image is quadratic.
        let mounted = Set(try await runBlocking { try MountInfo.read() }.map(\.mountPoint))
        for image in healthy {
            do {
                try await serving.mountIfNeeded(image, mounted: mounted)
            } catch {
                logger.error("image not mounted", metadata: ["image.reference": "\(image.reference)", "error": "\(error)"])
            }
        }
    }

    // MARK: - Calls

    /// Pulls `reference` (see `ImagePuller.pull`, also for `knownManifestDigest` and `knownLayers`), serves and mounts it.
    /// Concurrent calls for the same reference share one pull; the work goes on if the first caller leaves.
    /// `lazyOnly`: a plain image is pulled only when a trusted gzip index serves it lazily; otherwise the pull
    /// is refused (`CatalogError.notAnImage`) without downloading it (containerd then unpacks its layers).
    func pull(
        _ reference: String, knownManifestDigest: String? = nil, knownLayers: [Digest] = [], lazyOnly: Bool = false
    ) async throws -> PullResponse {
        let key = (try? ImageReference(parsing: reference).description) ?? reference
        let task = try inFlight.withLock { tasks in
            if let running = tasks[key] { return running }
            guard !collecting.withLock({ $0 }) else {
                throw APIError(.unavailable, "garbage collection is running; pull \(reference) again in a moment")
            }
            let task = Task {
                defer { _ = self.inFlight.withLock { $0.removeValue(forKey: key) } }
                return try await self.pullOnce(
                    reference, knownManifestDigest: knownManifestDigest, knownLayers: knownLayers, lazyOnly: lazyOnly)
            }
            tasks[key] = task
            return task
        }
        return try await task.value
    }

    private func pullOnce(
        _ reference: String, knownManifestDigest: String?, knownLayers: [Digest], lazyOnly: Bool
    ) async throws -> PullResponse {
        let key = reference
        defer { _ = pulls.withLock { $0.removeValue(forKey: key) } }
        let (image, newBlobs, pulled) = try await puller.pull(
            reference, knownManifestDigest: knownManifestDigest, knownLayers: knownLayers, lazyOnly: lazyOnly
        ) { progress in
            self.pulls.withLock { $0[key] = progress }
        }
        // Recorded, not yet served nor mounted: start-up serves and mounts every recorded image.
        CrashPoint.reach("pull.recorded")
        // An image pulled before is served already (at start-up or by that pull): only its mount is checked.
        // A new one's blobs that the catalog knew before (shared with another image) are served already too.
        // An image that failed verification at start-up is not served: mounting it would let the kernel read
        // its bootstrap (and whatever its blobs hold) with nothing checked.
        if !pulled, let failure = failed.withLock({ $0[image.reference] }) {
            throw APIError.failedPrecondition(
                "image \(image.reference) is not served: it failed verification (\(failure)); remove it (snapctl rmi) and pull it again")
        }
        var bootstrap: ErofsImage?
        do {
            if pulled {
                // Shared blobs are skipped only if the engine serves them (their first image may have failed).
                var served = Set(image.blobs.map(\.id).filter { engine.progress(blobID: $0) != nil }).subtracting(newBlobs)
                bootstrap = try await serving.serveBlobs(of: image, skipping: &served, justUnpacked: true)
            }
            try await serving.mountIfNeeded(image)
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

    /// Blocking: the start-up sweep (`ImagePuller.sweepLeftovers`) run now, for `snapctl cleanup` (`gc`).
    /// Refused while a pull runs (its files are not recorded yet); pulls are refused while it sweeps. The
    /// work directories of this daemon's running conversions are kept.
    func collectGarbage() throws -> [String] {
        try inFlight.withLock { tasks in
            guard tasks.isEmpty else {
                throw APIError.failedPrecondition(
                    "pulls are running (\(tasks.keys.sorted().joined(separator: ", "))); run cleanup when they have finished")
            }
            collecting.withLock { $0 = true }
        }
        defer { collecting.withLock { $0 = false } }
        let images = try catalog.images()
        let ownConversions = "convert-\(getpid())-"
        let removed = try puller.sweepLeftovers(images: images) { !$0.hasPrefix(ownConversions) } + sweepKernelCopies(images: images)
        // A round also brings the cache back inside its budget (a budget lowered, chunks the grace kept).
        engine.enforceBudget()
        return removed
    }

    /// Blocking: the front end's kernel copies of files no recorded image names (a removal a crash cut short
    /// before its cull) go.
    func sweepKernelCopies(images: [ImageRecord]) -> [String] {
        frontEnd.sweepKernelCopies {
            images.flatMap { image in
                [ImageServing.bootstrapFile(of: image, size: 0)] + image.blobs.map { ImageServing.blobFile($0, size: 0) }
            }
        }
    }

    /// Builds and pushes the gzip index of a plain image in a registry (`GzipIndexPublisher`), and trusts it
    /// here: it was made from the image's digest-checked layers.
    func index(_ request: IndexRequest) async throws -> IndexResponse {
        let work = FileSystem.join(puller.layout.temporaryDirectory, "convert-\(getpid())-index-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileSystem.removeTree(work) }
        let key = "index " + request.reference
        defer { _ = pulls.withLock { $0.removeValue(forKey: key) } }
        let catalog = self.catalog
        let published = try await GzipIndexPublisher(client: client, logger: logger).publish(
            request.reference, span: request.spanBytes ?? ZranIndexBuilder.defaultSpan, prefetch: request.prefetch ?? [], work: work,
            trust: { index, image in try catalog.trustIndex(digest: index, subject: image) }
        ) { progress in
            self.pulls.withLock {
                $0[key] = PullProgress(
                    reference: key, phase: progress.phase, bytesDone: progress.bytesDone, bytesTotal: progress.bytesTotal)
            }
        }
        return IndexResponse(
            reference: published.reference, imageDigest: published.imageDigest, indexDigest: published.indexDigest,
            layers: published.layers,
            layerBytes: published.layerBytes, indexBytes: published.indexBytes, checkpoints: published.checkpoints,
            seconds: published.seconds)
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
            try serving.unmountImage(at: mountPoint(of: image.id), blobs: image.blobs)
        } restore: { image in
            // A removal that failed puts the mount back, unless the image was not served.
            guard failed.withLock({ $0[image.reference] }) == nil else { return }
            Task { try? await self.serving.mountIfNeeded(image) }
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
                let (total, present) = bytes(ofBlob: blob.id, recordedSize: blob.uncompressedSize)
                size += total
                local += present
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
        // Served from a gzip index: a plain image started lazily, its blobs inflated from its own layers.
        let format = image.blobs.contains { $0.sourceLayer != nil } ? "gzip-indexed" : image.format.rawValue
        return ImageInfo(
            reference: image.reference, digest: image.manifestDigest, format: format, blobs: blobs,
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

    /// What the image store holds, for `/metrics`: per image its size and local bytes (the engine's chunk
    /// state), and for the cache the bytes its backing files occupy on disk (allocated blocks, as `du`).
    func cacheMetrics() throws -> String {
        var text = "# HELP snapshotter_image_size_bytes Uncompressed bytes of an image's blobs.\n"
        text += "# TYPE snapshotter_image_size_bytes gauge\n"
        var local = "# HELP snapshotter_image_local_bytes Bytes of an image's blobs present on this host.\n"
        local += "# TYPE snapshotter_image_local_bytes gauge\n"
        for image in try statuses() {
            let label = Self.labelValue(image.reference)
            text += "snapshotter_image_size_bytes{image=\"\(label)\"} \(image.size)\n"
            local += "snapshotter_image_local_bytes{image=\"\(label)\"} \(image.localBytes)\n"
        }
        let cache = try cacheStatus()
        text += local
        text += "# HELP snapshotter_cache_disk_bytes Bytes the blobs' backing files occupy on disk.\n"
        text += "# TYPE snapshotter_cache_disk_bytes gauge\nsnapshotter_cache_disk_bytes \(cache.diskBytes ?? 0)\n"
        text += "# HELP snapshotter_cache_present_bytes Uncompressed chunk bytes present in the backing files.\n"
        text += "# TYPE snapshotter_cache_present_bytes gauge\nsnapshotter_cache_present_bytes \(cache.presentBytes)\n"
        text += "# HELP snapshotter_cache_peak_bytes The most chunk bytes the cache has held since the daemon started.\n"
        text += "# TYPE snapshotter_cache_peak_bytes gauge\nsnapshotter_cache_peak_bytes \(engine.cacheUsage.peakStoredBytes)\n"
        text += "# HELP snapshotter_cache_budget_bytes The cache budget (0: none).\n"
        text += "# TYPE snapshotter_cache_budget_bytes gauge\nsnapshotter_cache_budget_bytes \(cache.budgetBytes ?? 0)\n"
        return text
    }

    /// A Prometheus label value: backslash, double quote and newline escaped.
    static func labelValue(_ text: String) -> String {
        text.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
    }

    /// Whether any image is mounted, or one detached in this boot may still read: a stopping daemon then leaves
    /// the fanotify group with its holder. Under a front end whose images we never mount (seed), every pulled
    /// image counts: its readers are out of our sight.
    func hasMountedImages() -> Bool {
        if serving.mayHaveDetachedMounts() { return true }
        guard let images = try? catalog.images(), let table = try? MountInfo.read() else { return true }
        if frontEnd.traits.imageMountUnsupportedReason != nil { return !images.isEmpty }
        return images.contains { MountInfo.isMountPoint(mountPoint(of: $0.id), in: table) }
    }
}
