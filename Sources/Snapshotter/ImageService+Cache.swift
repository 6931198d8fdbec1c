import BlobStore
import Catalog
import LinuxKernel
import Logging
import MountManager
import OCI
import SnapshotterAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The cache as users and the ecosystem see it: pins, per-image usage, the budget.
extension ImageService {
    /// Blocking: pins or unpins `reference`. The engine's pinned set is recomputed from the catalog, so an
    /// image unpinned keeps nothing pinned that another pinned image shares.
    func pin(_ reference: String, pinned: Bool) throws -> ImageUsage {
        let image = try catalog.setPinned(reference: reference, pinned)
        engine.setPinned(try catalog.pinnedBlobs())
        logger.info(pinned ? "image pinned" : "image unpinned", metadata: ["image.reference": "\(reference)"])
        return usage(of: image)
    }

    /// Blocking: every image's share of the cache, and the cache against its budget.
    func usage() throws -> UsageResponse {
        UsageResponse(images: try catalog.images().map(usage(of:)), cache: try cacheStatus())
    }

    func usage(of image: ImageRecord) -> ImageUsage {
        var size: Int64 = 0
        var present: Int64 = 0
        var disk: Int64 = 0
        for blob in image.blobs {
            let (total, local) = bytes(ofBlob: blob.id, recordedSize: blob.uncompressedSize)
            size += total
            present += local
            disk += Self.diskBytes(of: blob.backingPath)
        }
        return ImageUsage(reference: image.reference, size: size, presentBytes: present, diskBytes: disk, pinned: image.pinned)
    }

    /// The cache against its budget, from the engine's counters; with `walkingFiles` (blocking, one lstat per
    /// blob) also the blocks its backing files occupy.
    func cacheStatus(walkingFiles: Bool = true) throws -> CacheStatus {
        let usage = engine.cacheUsage
        let disk = walkingFiles ? try catalog.backingPaths().reduce(Int64(0)) { $0 + Self.diskBytes(of: $1) } : nil
        return CacheStatus(
            budgetBytes: usage.budgetBytes.map { Int64(clamping: $0) }, presentBytes: Int64(clamping: usage.storedBytes), diskBytes: disk,
            evictedBytes: Int64(clamping: engine.metrics.snapshot.bytesEvicted), evictable: !frontEnd.traits.needsCompleteBlobs)
    }

    /// Blocking: a snapshot's usage. A remote snapshot (a layer served from a pulled image) reports what the
    /// cache really holds for it: its layer's blob (CRI's layer-digest label names it), the bootstrap for the
    /// bootstrap layer, or the whole image when the labels do not say; any other snapshot its own layer.
    func usage(ofSnapshot key: String, in service: SnapshotService) throws -> SnapshotUsage {
        guard let layer = try service.imageLayer(key: key) else { return try service.usage(key: key) }
        guard let image = try catalog.image(id: layer.imageID) else { return try service.usage(key: key) }
        if let digest = layer.labels[Self.layerDigestLabel], let blob = image.blobs.first(where: { "sha256:" + $0.blobID == digest }) {
            return SnapshotUsage(size: Self.diskBytes(of: blob.backingPath), inodes: 1)
        }
        if layer.labels[NydusLayout.bootstrapAnnotation] == "true" {
            return SnapshotUsage(size: Self.diskBytes(of: image.bootstrapPath), inodes: 1)
        }
        let blobs = image.blobs.reduce(Int64(0)) { $0 + Self.diskBytes(of: $1.backingPath) }
        return SnapshotUsage(size: blobs + Self.diskBytes(of: image.bootstrapPath), inodes: Int64(image.blobs.count + 1))
    }

    /// CRI's label naming the layer a snapshot is unpacked from.
    static let layerDigestLabel = "containerd.io/snapshot/cri.layer-digest"

    /// A blob's chunk bytes and how many are present, per the engine (its recorded size, none present, when
    /// the engine does not serve it).
    func bytes(ofBlob id: Int64, recordedSize: Int64) -> (total: Int64, present: Int64) {
        guard let progress = engine.progress(blobID: id) else { return (recordedSize, 0) }
        return (Int64(progress.total), Int64(progress.present))
    }

    /// Allocated bytes of a file (st_blocks, as `du`), 0 when it is gone.
    static func diskBytes(of path: String) -> Int64 {
        (try? FileSystem.lstat(path)).map { Int64($0.st_blocks) * 512 } ?? 0
    }
}
