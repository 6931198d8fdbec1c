import Catalog
import LinuxKernel
import Logging
import OCI
import OCIRegistry
import RAFSBuilder

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `snapctl index`: builds the gzip index of a plain OCI image in a registry and pushes it there as an
/// artifact that refers to the image (`ZranLayout`), so that pulls start the image lazily without converting
/// it. The layers are fetched whole and digest-checked first: the index vouches only for what they hold.
public struct GzipIndexPublisher: Sendable {
    public let client: RegistryClient
    public let logger: Logger

    public init(client: RegistryClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// What a publication produced.
    public struct Published: Sendable, Equatable {
        public var reference: String
        public var imageDigest: String
        /// The artifact manifest's digest: what a puller trusts.
        public var indexDigest: String
        public var layers: Int
        /// Bytes of the layers read (compressed) and of the index pushed (bootstrap and packages).
        public var layerBytes: Int64
        public var indexBytes: Int64
        public var checkpoints: Int
        public var seconds: Double
    }

    /// Builds and pushes the index of `text` (a registry reference) using `work` for the layers; `trust` (when
    /// given) records the new index as one this host trusts; `prefetch` (absolute paths) becomes the index's
    /// prefetch table. `progress` gets a phase and done/total bytes.
    public func publish(
        _ text: String, platform: Platform = .current, span: UInt64 = ZranIndexBuilder.defaultSpan, prefetch: [String] = [], work: String,
        trust: ((_ indexDigest: String, _ imageDigest: String) throws -> Void)? = nil,
        progress: @escaping @Sendable (PullProgress) -> Void = { _ in }
    ) async throws -> Published {
        let started = monotonicNanoseconds()
        let reference = try ImageReference(parsing: text)
        let name = reference.description
        progress(PullProgress(reference: name, phase: "resolving"))
        let resolved = try await client.resolve(reference, platform: platform)
        let manifest = resolved.imageManifest
        let gzipTypes: Set<String> = [MediaType.ociLayerGzip, MediaType.dockerLayerGzip]
        if let other = manifest.layers.first(where: { !gzipTypes.contains($0.mediaType) }) {
            throw CatalogError.notAnImage(
                reference: name,
                reason: "layer \(other.digest) is \(other.mediaType); only gzip layers can be indexed (nydus images need none)")
        }
        guard !manifest.layers.isEmpty else { throw CatalogError.notAnImage(reference: name, reason: "it has no layers") }
        try FileSystem.makeDirectories(work, mode: 0o700)
        let total = manifest.layers.reduce(Int64(0)) { $0 + $1.size }
        let inputs = try await ImagePuller.fetchLayers(
            manifest.layers, of: reference, name: name, client: client, work: work, progress: progress)
        progress(PullProgress(reference: name, phase: "indexing", bytesDone: total, bytesTotal: total))
        let layers = inputs
        var builder = ZranIndexBuilder(span: span)
        // Files containers read at start-up: the bootstrap's prefetch table, fetched right after each pull.
        builder.options.prefetchPaths = prefetch
        let configured = builder
        let built = try await runBlocking {
            try configured.build(layers: layers, workDirectory: FileSystem.join(work, "index"))
        }

        progress(PullProgress(reference: name, phase: "pushing the index", bytesDone: total, bytesTotal: total))
        let (registry, repository) = (reference.registry, reference.repository)
        let bootstrap = Descriptor(
            mediaType: ZranLayout.bootstrapMediaType, digest: Digest.sha256(of: built.bootstrapLayer),
            size: Int64(built.bootstrapLayer.count))
        try await client.pushBlob(registry: registry, repository: repository, descriptor: bootstrap, from: .bytes(built.bootstrapLayer))
        var layerDescriptors = [bootstrap]
        var checkpoints = 0
        for package in built.packages {
            let descriptor = Descriptor(
                mediaType: ZranLayout.packageMediaType, digest: Digest.sha256(of: package.bytes), size: Int64(package.bytes.count),
                annotations: [ZranLayout.blobAnnotation: package.blobID, ZranLayout.layerAnnotation: package.layerDigest])
            try await client.pushBlob(registry: registry, repository: repository, descriptor: descriptor, from: .bytes(package.bytes))
            layerDescriptors.append(descriptor)
            checkpoints += package.checkpoints
        }
        // The empty config the artifact guidance names for artifacts without one.
        let emptyConfig = Array("{}".utf8)
        let config = Descriptor(mediaType: MediaType.ociEmpty, digest: Digest.sha256(of: emptyConfig), size: Int64(emptyConfig.count))
        try await client.pushBlob(registry: registry, repository: repository, descriptor: config, from: .bytes(emptyConfig))
        var artifact = ImageManifest(config: config, layers: layerDescriptors)
        artifact.artifactType = ZranLayout.artifactType
        artifact.subject = resolved.manifest.descriptor
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = [UInt8](try encoder.encode(artifact))
        let listed = try await client.pushReferrer(
            registry: registry, repository: repository, manifest: bytes, artifactType: ZranLayout.artifactType,
            subject: resolved.manifest.descriptor.digest)
        try trust?(listed.digest.description, resolved.manifest.descriptor.digest.description)
        let indexBytes = layerDescriptors.reduce(Int64(0)) { $0 + $1.size }
        progress(PullProgress(reference: name, phase: "done", bytesDone: total, bytesTotal: total))
        let published = Published(
            reference: name, imageDigest: resolved.manifest.descriptor.digest.description, indexDigest: listed.digest.description,
            layers: manifest.layers.count, layerBytes: total, indexBytes: indexBytes, checkpoints: checkpoints,
            seconds: Double(monotonicNanoseconds() - started) / 1e9)
        logger.info(
            "gzip index pushed",
            metadata: [
                "image.reference": "\(name)", "index.digest": "\(published.indexDigest)", "index.bytes": "\(indexBytes)",
                "index.checkpoints": "\(checkpoints)",
            ])
        return published
    }
}
