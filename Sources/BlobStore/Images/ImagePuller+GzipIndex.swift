import Archive
import Catalog
import LinuxKernel
import Logging
import OCI
import OCIRegistry
import RAFS
import RAFSBuilder

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Which gzip indexes (`ZranLayout` artifacts) a pull of a plain OCI image uses to start it lazily.
///
/// An index is a third party's claim about the image: its bootstrap says which files hold which bytes, and
/// the bytes are then checked against *its* chunk digests, not against the image's layer digests (a range of
/// a gzip stream cannot be checked against the digest of the whole). So an index is used only when something
/// the user trusts vouches for it: by default (`local`) an index this host built from the digest-checked
/// layers (`snapctl index`) or one the user named at pull; with `repository`, any index found in the image's
/// repository (what SOCI does: whoever may push the image may push its index).
public struct GzipIndexPolicy: Sendable, Equatable {
    public enum Trust: String, Sendable, CaseIterable {
        case local
        case repository
    }

    /// Look for an index at all (a referrers query per pull of a plain image).
    public var discover = true
    public var trust = Trust.local
    /// Index digests trusted whatever `trust` says (indexes built on another host, named in the config).
    public var trustedDigests: Set<String> = []

    public init(discover: Bool = true, trust: Trust = .local, trustedDigests: Set<String> = []) {
        self.discover = discover
        self.trust = trust
        self.trustedDigests = trustedDigests
    }
}

extension ImagePuller {
    /// The zran package a gzip-indexed blob was pulled in (digest-checked, kept as fetched), beside its meta
    /// file: its gzip index starts at `zranIndexOffset`.
    public static func zranPackagePath(metaPath: String) -> String { metaPath + ".zran" }
    public static let zranIndexOffset = UInt64(ZranPackage.headerSize)

    /// A plain image with gzip layers and a trusted index: recorded like a nydus image whose blobs' stored bytes
    /// are inflated from the image's own layers. nil when no trusted index is found or none is usable (the
    /// caller converts the image after fetching it whole); the reasons are logged.
    func pullGzipIndexed(
        _ reference: ImageReference, name: String, manifestDigest: Digest, manifest: ImageManifest, work: String,
        progress: @escaping @Sendable (PullProgress) -> Void
    ) async throws -> (image: ImageRecord, newBlobs: Set<Int64>, pulled: Bool)? {
        guard gzipIndexPolicy.discover, !manifest.layers.isEmpty else { return nil }
        let gzipTypes: Set<String> = [MediaType.ociLayerGzip, MediaType.dockerLayerGzip]
        guard manifest.layers.allSatisfy({ gzipTypes.contains($0.mediaType) }) else { return nil }
        progress(PullProgress(reference: name, phase: "looking for a gzip index"))
        let candidates: [Descriptor]
        do {
            candidates = try await client.referrers(
                registry: reference.registry, repository: reference.repository, subject: manifestDigest,
                artifactType: ZranLayout.artifactType)
        } catch {
            logger.info("no gzip index: the referrers query failed", metadata: ["image.reference": "\(name)", "error": "\(error)"])
            return nil
        }
        // The newest first: the fallback tag's index lists them in the order they were pushed.
        for candidate in candidates.reversed() {
            let digest = candidate.digest.description
            var trusted = gzipIndexPolicy.trust == .repository || gzipIndexPolicy.trustedDigests.contains(digest)
            if !trusted {
                trusted = try await runBlocking { try self.catalog.isTrustedIndex(digest: digest, subject: manifestDigest.description) }
            }
            guard trusted else {
                logger.notice(
                    "gzip index ignored: nothing this host trusts vouches for it (build one with snapctl index, name it at pull, or set zran.trust = \"repository\")",
                    metadata: ["image.reference": "\(name)", "index.digest": "\(digest)"])
                continue
            }
            do {
                return try await pull(
                    reference, name: name, manifestDigest: manifestDigest, manifest: manifest, index: candidate, work: work,
                    progress: progress)
            } catch let error as CatalogError where error.isDiskFull {
                throw error
            } catch {
                logger.warning(
                    "gzip index unusable; the image is fetched whole instead",
                    metadata: ["image.reference": "\(name)", "index.digest": "\(digest)", "error": "\(error)"])
            }
        }
        return nil
    }

    private func pull(
        _ reference: ImageReference, name: String, manifestDigest: Digest, manifest: ImageManifest, index descriptor: Descriptor,
        work: String, progress: @escaping @Sendable (PullProgress) -> Void
    ) async throws -> (image: ImageRecord, newBlobs: Set<Int64>, pulled: Bool) {
        func refuse(_ reason: String) -> CatalogError {
            .notAnImage(reference: name, reason: "gzip index \(descriptor.digest): \(reason)")
        }
        let fetched = try await client.fetchManifest(
            ImageReference(registry: reference.registry, repository: reference.repository, digest: descriptor.digest))
        guard case .manifest(let artifact) = fetched.content, let parts = ZranLayout.split(artifact) else {
            throw refuse("not a gzip index artifact")
        }
        guard artifact.subject?.digest == manifestDigest else { throw refuse("its subject is not this image") }
        guard parts.bootstrap.size <= ImageLimits.bootstrapLayerBytes else { throw refuse("its bootstrap layer is too large") }

        // The bootstrap and the packages' heads and metas come in at once (one round trip, not one per blob); the
        // packages' windows stay in the registry until reads need them.
        let wanted = parts.packages.filter { package in
            manifest.layers.contains { $0.digest.description == package.annotations?[ZranLayout.layerAnnotation] }
        }
        progress(PullProgress(reference: name, phase: "gzip index", bytesTotal: parts.bootstrap.size))
        let layerPath = FileSystem.join(work, "index-bootstrap.layer")
        let (registry, repository) = (reference.registry, reference.repository)
        async let bootstrapFetched = client.fetchBlob(
            registry: registry, repository: repository, descriptor: parts.bootstrap, to: layerPath)
        let packages = try await withThrowingTaskGroup(of: (Int, PackageParts).self) { group in
            var fetched: [Int: PackageParts] = [:]
            for (number, package) in wanted.enumerated() {
                if number >= 8, let (done, parts) = try await group.next() { fetched[done] = parts }
                group.addTask { (number, try await self.packageParts(package, registry: registry, repository: repository)) }
            }
            for try await (done, parts) in group { fetched[done] = parts }
            return fetched
        }
        _ = try await bootstrapFetched
        // Unpacked in the pull's own directory: the index's bootstrap is placed, under a name of its own
        // content, only once everything below passed.
        let unpacked = FileSystem.join(work, "index-bootstrap.boot")
        let bootstrapDigest = try await runBlocking { try Self.unpackBootstrap(layer: layerPath, to: unpacked) }
        let image = try ErofsImage(path: unpacked)
        let chunkTable = try image.rafsChunkTable()
        guard !image.blobs.isEmpty else { throw refuse("its bootstrap has no blob table") }

        // Each blob: its package (digest-checked), its meta checked against the bootstrap, its gzip index
        // checked against the layer it indexes. Nothing is placed until every blob passed.
        struct Checked {
            var entry: RafsBlobEntry
            var layer: Descriptor
            /// The package in the registry, when its windows were left there.
            var package: Descriptor?
            var meta: String
            var rafs: RafsBlob
        }
        var checked: [Checked] = []
        var candidates = Set<String>()
        defer { for candidate in candidates { unlink(candidate) } }
        try FileSystem.makeDirectories(layout.metaDirectory, mode: 0o700)
        for entry in image.blobs {
            guard let packageNumber = wanted.firstIndex(where: { $0.annotations?[ZranLayout.blobAnnotation] == entry.blobID }),
                let layerText = wanted[packageNumber].annotations?[ZranLayout.layerAnnotation],
                let layer = manifest.layers.first(where: { $0.digest.description == layerText })
            else { throw refuse("blob \(entry.blobID) has no package for a layer of the image") }
            guard let package = packages[packageNumber] else { throw refuse("package \(wanted[packageNumber].digest) was not fetched") }
            let packageSize = UInt64(wanted[packageNumber].size)
            let meta = FileSystem.join(layout.metaDirectory, ".\(entry.blobID).\(UInt32.random(in: 0...UInt32.max)).partial")
            candidates.insert(meta)
            candidates.insert(Self.zranPackagePath(metaPath: meta))
            let index = try GzipIndex(
                decodingTable: Array(package.head[Int(Self.zranIndexOffset)...]), encodedSize: package.indexLength)
            // The blob's meta file, and its `.zran` file: the package as published, its windows holes for now.
            try await runBlocking {
                try Self.writeSparse(
                    path: meta, size: Int64(package.blobSize), at: Int64(package.metaStart), bytes: package.meta, replacing: false)
                try package.write(to: Self.zranPackagePath(metaPath: meta), packageSize: packageSize)
            }
            guard index.compressedSize == UInt64(layer.size), index.uncompressedSize == package.metaStart else {
                throw refuse("the index of blob \(entry.blobID) does not describe layer \(layer.digest) (\(index.compressedSize) bytes)")
            }
            let rafs: RafsBlob
            do {
                rafs = try RafsBlob(path: meta, entry: entry, chunkTable: chunkTable)
            } catch {
                throw refuse("blob \(entry.blobID): \(error)")
            }
            if let outside = rafs.chunks.first(where: { $0.compressedEnd > package.metaStart || $0.isCompressed }) {
                throw refuse("blob \(entry.blobID): chunk \(outside.index) does not lie in the layer's tar as stored")
            }
            checked.append(
                Checked(entry: entry, layer: layer, package: package.whole == nil ? wanted[packageNumber] : nil, meta: meta, rafs: rafs))
        }

        let bootstrapPath = layout.bootstrapPath(manifestDigest: manifestDigest, bootstrapSHA256: bootstrapDigest)
        try FileSystem.makeDirectories(FileSystem.parentPath(bootstrapPath), mode: 0o700)
        try FileSystem.rename(unpacked, bootstrapPath)
        let commitments = checked.map { (blobID: $0.entry.blobID, chunkMap: $0.rafs.commitment) }
        let domain = try await runBlocking { try self.catalog.domain(for: commitments, usableAsNew: self.newInSharedDomain) }
        var blobs: [NewBlob] = []
        for blob in checked {
            let blobID = blob.entry.blobID
            let metaPath = layout.metaPath(blobID: blobID, domain: domain)
            // Within a domain one blob id has one chunk map: a meta here already is this one, and so is its index
            // (a different index of the same chunks can only fail reads, never change their bytes). A whole
            // package replaces whatever is there: a record without a package would read a sparse file's holes
            // as windows.
            if blob.package == nil || !FileSystem.exists(metaPath) || !FileSystem.exists(Self.zranPackagePath(metaPath: metaPath)) {
                try FileSystem.makeDirectories(FileSystem.parentPath(metaPath), mode: 0o700)
                try FileSystem.rename(Self.zranPackagePath(metaPath: blob.meta), Self.zranPackagePath(metaPath: metaPath))
                try FileSystem.rename(blob.meta, metaPath)
            }
            let backingPath = layout.backingPath(blobID: blobID, domain: domain)
            try await runBlocking { try Self.createSparse(path: backingPath, size: Int64(blob.rafs.deviceSize)) }
            try layout.ensureDeviceLink(blobID: blobID, domain: domain)
            blobs.append(
                NewBlob(
                    blobID: blobID, chunkMap: blob.rafs.commitment, registry: reference.registry, repository: reference.repository,
                    storedSize: blob.layer.size, uncompressedSize: Int64(blob.entry.uncompressedSize), backingPath: backingPath,
                    metaPath: metaPath, sourceLayer: blob.layer.digest.description, indexPackage: blob.package?.digest.description))
        }
        let record = NewImage(
            reference: name, manifestDigest: manifestDigest.description, format: .nydus, bootstrapPath: bootstrapPath,
            bootstrapDigest: bootstrapDigest, domain: domain, blobs: blobs)
        CrashPoint.reach("pull.fetched")
        let (inserted, newBlobs) = try await runBlocking { try self.catalog.insert(record) }
        progress(PullProgress(reference: name, phase: "done"))
        logger.info(
            "image pulled with a gzip index: its layers are fetched by range as they are read",
            metadata: [
                "image.reference": "\(name)", "image.digest": "\(manifestDigest)", "index.digest": "\(descriptor.digest)",
                "image.blobs": "\(blobs.count)", "image.domain": "\(domain)",
            ])
        return (inserted, newBlobs, true)
    }
}
