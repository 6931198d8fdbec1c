import LinuxKernel
import Logging
import OCI

/// Moves images between registries and OCI layout directories, so conversion can read from and write to
/// either: a registry image is downloaded into a layout (every blob digest-checked), a layout's image is
/// pushed (blobs the registry has are skipped).
public struct LayoutTransfer: Sendable {
    public let client: RegistryClient

    public init(client: RegistryClient) {
        self.client = client
    }

    /// Downloads `reference` (resolved for `platform`) into the layout at `path`, naming it `tag` in its
    /// `index.json`. Returns the manifest's descriptor.
    @discardableResult
    public func download(
        _ reference: ImageReference, platform: Platform = .current, to path: String, tag: String
    ) async throws -> Descriptor {
        let resolved = try await client.resolve(reference, platform: platform)
        let layout = try OCILayout.create(at: path)
        let manifest = resolved.imageManifest
        for descriptor in [manifest.config] + manifest.layers where !FileSystem.exists(layout.blobPath(descriptor.digest)) {
            try await client.fetchBlob(
                registry: reference.registry, repository: reference.repository, descriptor: descriptor,
                to: layout.blobPath(descriptor.digest))
        }
        var descriptor = try layout.writeBlob(resolved.manifest.bytes, mediaType: resolved.manifest.descriptor.mediaType)
        descriptor.annotations = [OCILayout.refNameAnnotation: tag]
        descriptor.platform = resolved.manifest.descriptor.platform
        var index = try layout.readIndex()
        index.manifests.removeAll { $0.annotations?[OCILayout.refNameAnnotation] == tag }
        index.manifests.append(descriptor)
        try layout.writeIndex(index)
        return descriptor
    }

    /// Pushes the image `manifest` of the layout at `path` to `reference` (its tag, or the manifest digest).
    public func upload(layout path: String, manifest descriptor: Descriptor, to reference: ImageReference) async throws {
        let layout = try OCILayout(path: path)
        let manifest = try layout.readJSON(ImageManifest.self, descriptor.digest)
        for blob in manifest.layers + [manifest.config] {
            try await client.pushBlob(
                registry: reference.registry, repository: reference.repository, descriptor: blob,
                from: .file(path: layout.blobPath(blob.digest)))
        }
        try await client.pushManifest(
            registry: reference.registry, repository: reference.repository,
            reference: reference.tag ?? descriptor.digest.description, bytes: try layout.readBlob(descriptor.digest),
            mediaType: descriptor.mediaType)
    }
}
