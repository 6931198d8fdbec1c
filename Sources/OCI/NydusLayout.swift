/// How nydus marks the parts of a RAFS v6 image in an OCI manifest (facts from nydus-snapshotter's
/// converter constants and nydusify's example manifests).
public enum NydusLayout {
    public static let blobMediaType = "application/vnd.oci.image.layer.nydus.blob.v1"
    public static let blobAnnotation = "containerd.io/snapshot/nydus-blob"
    public static let bootstrapAnnotation = "containerd.io/snapshot/nydus-bootstrap"
    public static let fsVersionAnnotation = "containerd.io/snapshot/nydus-fs-version"
    public static let configMediaType = "application/vnd.nydus.image.config.v1+json"
    public static let manifestArtifactType = "application/vnd.nydus.image.manifest.v1+json"
    public static let osFeature = "nydus.remoteimage.v1"
    /// The bootstrap's path inside the bootstrap layer's tar.
    public static let bootstrapEntry = "image/image.boot"

    /// The manifest's bootstrap layer and its data-blob layers, or nil for a plain OCI image.
    public static func split(_ manifest: ImageManifest) -> (bootstrap: Descriptor, blobs: [Descriptor])? {
        guard let bootstrap = manifest.layers.last(where: { $0.annotations?[bootstrapAnnotation] == "true" }) else { return nil }
        let blobs = manifest.layers.filter { $0.mediaType == blobMediaType || $0.annotations?[blobAnnotation] == "true" }
        return (bootstrap, blobs)
    }
}
