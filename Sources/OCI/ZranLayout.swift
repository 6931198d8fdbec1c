/// How this project publishes a gzip index of a plain OCI image (lazy start without converting it): an
/// artifact manifest whose `subject` is the image manifest, found through the registry's referrers (or their
/// tag fallback). Its layers: the RAFS bootstrap of the merged image (a gzip tar holding `image/image.boot`,
/// as nydus packs bootstraps), then one package per indexed layer (`ZranPackage`: the layer's gzip
/// checkpoints and the meta of the blob whose stored form is the layer's uncompressed tar).
public enum ZranLayout {
    public static let artifactType = "application/vnd.ondemand-snapshotter.zran.v1"
    public static let bootstrapMediaType = "application/vnd.ondemand-snapshotter.zran.bootstrap.v1.tar+gzip"
    public static let packageMediaType = "application/vnd.ondemand-snapshotter.zran.package.v1"
    /// On a package: the digest of the image layer it indexes, and the blob id it serves.
    public static let layerAnnotation = "org.ondemand-snapshotter.zran.layer"
    public static let blobAnnotation = "org.ondemand-snapshotter.zran.blob-id"
    /// The bootstrap and the packages of an index artifact, or nil when the manifest is not one.
    public static func split(_ manifest: ImageManifest) -> (bootstrap: Descriptor, packages: [Descriptor])? {
        guard manifest.artifactType == artifactType, let bootstrap = manifest.layers.first(where: { $0.mediaType == bootstrapMediaType })
        else { return nil }
        return (bootstrap, manifest.layers.filter { $0.mediaType == packageMediaType })
    }
}
