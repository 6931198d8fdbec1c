/// What an image may claim, checked before anything is allocated or fetched for the claim, so that a crafted
/// image costs the daemon a bounded amount of memory and disk per pull. Each figure is far above what real
/// images use (nydus's default chunk is 1 MiB; a 10 GiB image of 1 MiB chunks has ~10,000 of them).
///
/// Per pull the daemon holds at most: one manifest (`ManifestLimits.manifestBytes`), the blob table (255 blobs)
/// and the RAFS chunk table (`chunksPerImage` rows of 80 bytes, ~2.5x that once decoded), and one blob's meta
/// at a time while it is checked (`metaBytes` stored, `metaBytes` decompressed, its chunk infos and digests);
/// the bootstrap is streamed to disk, never held whole. Disk: the bootstrap layer and bootstrap
/// (`bootstrapLayerBytes`, `bootstrapBytes`), each blob's meta tail, and sparse backing files whose apparent
/// size is at most `blobBytes` each but which only grow as chunks are fetched.
public enum ImageLimits {
    /// The compressed bootstrap layer a pull downloads whole.
    public static let bootstrapLayerBytes: Int64 = 512 << 20
    /// The unpacked bootstrap (`image.boot`).
    public static let bootstrapBytes: Int64 = 1 << 30
    /// One blob's stored or uncompressed size.
    public static let blobBytes: UInt64 = 1 << 40
    /// Chunks of all blobs of one image together (and rows of its RAFS chunk table).
    public static let chunksPerImage: UInt64 = 1 << 21
    /// Chunk sizes a blob may use: powers of two in this range (the chunk-info encoding holds 24 bits of size).
    public static let chunkSizes: ClosedRange<UInt32> = 4096...(16 << 20)
    /// One blob's meta (chunk infos, digests and ToC), stored or decompressed.
    public static let metaBytes: Int64 = 128 << 20
}
