// Foundation, not FoundationEssentials: the config is rewritten with JSONSerialization to keep unknown fields.
import Foundation
import LinuxKernel
import Logging
import OCI

/// Converts an OCI image in an image layout into a nydus RAFS v6 image in another layout: one
/// `nydus.blob.v1` layer per data blob, then a gzip bootstrap layer, the config with `rootfs.diff_ids`
/// rewritten, the manifest, and an `index.json` entry (with the `nydus.remoteimage.v1` os feature).
public struct ImageConverter: Sendable {
    public struct Options: Sendable {
        public var build: BuildOptions
        /// Platform chosen from an image index with several manifests.
        public var platform: Platform
        /// `ref.name` of the source image in its `index.json`; nil takes the only one (or the platform's).
        public var sourceReference: String?
        /// `ref.name` written into the destination `index.json`; nil keeps the source's name.
        public var targetReference: String?

        public init(
            build: BuildOptions = BuildOptions(), platform: Platform = .current, sourceReference: String? = nil,
            targetReference: String? = nil
        ) {
            self.build = build
            self.platform = platform
            self.sourceReference = sourceReference
            self.targetReference = targetReference
        }
    }

    public enum Annotation {
        public static let nydusBlob = "containerd.io/snapshot/nydus-blob"
        public static let nydusBootstrap = "containerd.io/snapshot/nydus-bootstrap"
        public static let nydusFsVersion = "containerd.io/snapshot/nydus-fs-version"
        public static let nydusSourceDigest = "containerd.io/snapshot/nydus-source-digest"
    }

    public static let nydusBlobMediaType = "application/vnd.oci.image.layer.nydus.blob.v1"
    public static let nydusOSFeature = "nydus.remoteimage.v1"
    public static let fsVersion = "6"

    public let options: Options
    public let logger: Logger?

    public init(options: Options = Options(), logger: Logger? = nil) {
        self.options = options
        self.logger = logger
    }

    /// Converts the selected image of the layout at `source` into `destination` (created if missing).
    public func convert(
        source: String, destination: String, progress: (@Sendable (BuildProgress) -> Void)? = nil
    ) throws(BuildError) -> ConvertResult {
        do {
            return try convertLayout(source: source, destination: destination, progress: progress)
        } catch let error as BuildError {
            throw error
        } catch let error as OCIError {
            throw .layout(error)
        } catch {
            throw .layout(.invalidJSON(path: source, reason: "\(error)"))
        }
    }

    /// The conversion; its errors are the builder's (`BuildError`) or the layouts' (`OCIError`).
    private func convertLayout(
        source: String, destination: String, progress: (@Sendable (BuildProgress) -> Void)?
    ) throws -> ConvertResult {
        let input = try OCILayout(path: source)
        let (sourceDescriptor, manifest) = try input.resolveManifest(reference: options.sourceReference, platform: options.platform)
        for layer in manifest.layers where !Self.convertible.contains(layer.mediaType) {
            throw BuildError.unsupportedLayer(mediaType: layer.mediaType)
        }
        let output = try OCILayout.create(at: destination)
        let work = destination + "/.convert-\(sourceDescriptor.digest.encoded.prefix(16))"
        defer { try? FileSystem.removeTree(work) }

        let layers = manifest.layers.map { LayerInput(path: input.blobPath($0.digest)) }
        for (layer, descriptor) in zip(layers, manifest.layers) where !FileSystem.exists(layer.path) {
            throw OCIError.blobMissing(digest: descriptor.digest.description)
        }
        let built = try ImageBuilder(options: options.build, logger: logger).build(
            layers: layers, outputDirectory: work, progress: progress)

        var descriptors: [Descriptor] = []
        for blob in built.blobs {
            let digest = Digest(sha256: try Self.hexBytes(blob.blobID))
            try output.moveBlob(from: blob.path, digest: digest, size: Int64(blob.compressedSize))
            descriptors.append(
                Descriptor(
                    mediaType: Self.nydusBlobMediaType, digest: digest, size: Int64(blob.compressedSize),
                    annotations: [Annotation.nydusBlob: "true"]))
        }
        let bootstrap: [UInt8]
        do throws(SyscallError) { bootstrap = try FileSystem.readFile(built.bootstrapPath) } catch {
            throw BuildError.io(path: built.bootstrapPath, error)
        }
        let tar = BootstrapLayer.tar(bootstrap: bootstrap)
        let bootstrapLayer = try output.writeBlob(
            try GzipCompressor.compress(tar), mediaType: MediaType.ociLayerGzip,
            annotations: [
                Annotation.nydusBootstrap: "true", Annotation.nydusFsVersion: Self.fsVersion,
                Annotation.nydusSourceDigest: sourceDescriptor.digest.description,
            ])
        descriptors.append(bootstrapLayer)

        // The config keeps every field; only the diff ids change (a nydus blob is its own diff).
        let diffIDs = descriptors.dropLast().map(\.digest.description) + [Digest.sha256(of: tar).description]
        let config = try Self.rewriteConfig(
            try input.readBlob(manifest.config.digest), diffIDs: diffIDs, path: input.blobPath(manifest.config.digest))
        let configDescriptor = try output.writeBlob(config, mediaType: manifest.config.mediaType)

        var converted = ImageManifest(
            mediaType: MediaType.ociManifest, config: configDescriptor, layers: descriptors, annotations: manifest.annotations)
        converted.config.mediaType = MediaType.ociConfig
        let manifestDescriptorBase = try output.writeBlob(try OCILayout.encode(converted), mediaType: MediaType.ociManifest)
        var manifestDescriptor = manifestDescriptorBase
        var platform = sourceDescriptor.platform ?? options.platform
        platform.osFeatures = (platform.osFeatures ?? []) + [Self.nydusOSFeature]
        manifestDescriptor.platform = platform
        let name = options.targetReference ?? options.sourceReference
        if let name { manifestDescriptor.annotations = [OCILayout.refNameAnnotation: name] }
        var index = try output.readIndex()
        index.manifests.removeAll { descriptor in
            name != nil && descriptor.annotations?[OCILayout.refNameAnnotation] == name
        }
        index.manifests.append(manifestDescriptor)
        try output.writeIndex(index)
        logger?.info(
            "image converted", metadata: ["image.manifest": "\(manifestDescriptor.digest)", "image.blobs": "\(built.blobs.count)"])
        return ConvertResult(
            manifestDescriptor: manifestDescriptor, manifest: converted, sourceManifest: sourceDescriptor, bootstrapLayer: bootstrapLayer,
            build: built)
    }

    static let convertible: Set<String> = [
        MediaType.ociLayer, MediaType.ociLayerGzip, MediaType.ociLayerZstd, MediaType.dockerLayerGzip,
        "application/vnd.docker.image.rootfs.diff.tar",
    ]

    private static func hexBytes(_ hex: String) throws(OCIError) -> [UInt8] {
        let digits = Array(hex.utf8)
        guard digits.count == 64 else { throw .digestMismatch(digest: hex, found: "not a sha256 hex digest") }
        return stride(from: 0, to: 64, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16) ?? 0 }
    }

    /// Replaces `rootfs.diff_ids` (and sets `rootfs.type`), keeping every other field of the config.
    private static func rewriteConfig(_ bytes: [UInt8], diffIDs: [String], path: String) throws(OCIError) -> [UInt8] {
        do {
            guard var object = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
                throw OCIError.invalidJSON(path: path, reason: "the config is not a JSON object")
            }
            var rootfs = object["rootfs"] as? [String: Any] ?? [:]
            rootfs["type"] = "layers"
            rootfs["diff_ids"] = diffIDs
            object["rootfs"] = rootfs
            return Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
        } catch let error as OCIError {
            throw error
        } catch {
            throw .invalidJSON(path: path, reason: "\(error)")
        }
    }
}

/// What a conversion produced.
public struct ConvertResult: Sendable {
    /// The new manifest's descriptor as listed in the destination `index.json`.
    public var manifestDescriptor: Descriptor
    public var manifest: ImageManifest
    /// The source manifest that was converted.
    public var sourceManifest: Descriptor
    public var bootstrapLayer: Descriptor
    /// The build (blob paths are now inside the destination's `blobs/sha256`).
    public var build: BuildResult
}
