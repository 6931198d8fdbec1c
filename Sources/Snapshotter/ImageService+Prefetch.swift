import BlobStore
import Catalog
import LinuxKernel
import Logging
import OCI
import RAFS
import SnapshotterAPI

/// Background prefetch: whole images, or the files a workload reads at start-up. Everything runs at prefetch
/// priority, so on-demand reads always go first; chunks already local or in flight are not fetched again.
extension ImageService {
    /// Schedules the prefetch and returns at once with the number of byte ranges queued.
    func prefetch(_ request: PrefetchRequest) throws -> PrefetchResponse {
        let name = (try? ImageReference(parsing: request.reference).description) ?? request.reference
        guard let image = try catalog.image(reference: name) else { throw CatalogError.notFound(reference: name) }
        var ranges: [PrefetchRange] = []
        if let paths = request.paths, !paths.isEmpty {
            let bootstrap = try ErofsImage(path: image.bootstrapPath)
            var inodes: [ErofsInode] = []
            for path in paths {
                do {
                    inodes.append(try bootstrap.lookup(path))
                } catch {
                    throw APIError.notFound("\(path) is not in image \(name)")
                }
            }
            ranges = try Self.ranges(of: inodes, in: bootstrap, image: image)
        } else {
            for blob in image.blobs {
                ranges.append(PrefetchRange(blob: blob.id, offset: 0, length: UInt64(max(0, blob.uncompressedSize))))
            }
        }
        try checkSpace(for: ranges, image: name)
        schedule(ranges, image: name, reason: "requested")
        return PrefetchResponse(ranges: ranges.count, bytes: ranges.reduce(UInt64(0)) { $0 + $1.length })
    }

    /// Starts the prefetch an image asks for in its bootstrap (the RAFS prefetch table, written by
    /// `snapctl convert --prefetch` or nydus's `--prefetch-policy fs`), read from its opened bootstrap.
    /// Returns the bytes queued.
    @discardableResult
    func prefetchHinted(_ image: ImageRecord, bootstrap: ErofsImage) throws -> UInt64 {
        let files = try bootstrap.prefetchFiles()
        guard !files.isEmpty else { return 0 }
        let ranges = try Self.ranges(of: files, in: bootstrap, image: image)
        schedule(ranges, image: image.reference, reason: "prefetch table")
        return ranges.reduce(UInt64(0)) { $0 + $1.length }
    }

    /// Refuses a prefetch the cache's file system has no room for, after evicting what may go: the caller
    /// learns it now (resource_exhausted), instead of the fetches failing one by one in the background.
    func checkSpace(for ranges: [PrefetchRange], image: String) throws {
        let needed = ranges.reduce(UInt64(0)) { $0 + engine.missingBytes(blobID: $1.blob, offset: $1.offset, length: $1.length) }
        let available = try FileSystem.capacity(of: puller.layout.cacheDirectory).available
        guard needed > available else { return }
        let freed = engine.evictBlocking(bytes: needed - available)
        guard needed > available + freed else { return }
        throw APIError(
            .resourceExhausted,
            "prefetching \(image) needs \(needed) bytes; \(available) are free on the cache's file system and \(freed) could be evicted; free space, unpin images or prefetch fewer files"
        )
    }

    struct PrefetchRange {
        var blob: Int64
        var offset: UInt64
        var length: UInt64
    }

    /// The blob ranges holding the data of `inodes` (directories hold none; callers expand them), adjacent
    /// ranges of one blob merged so that they stream as one fetch.
    static func ranges(of inodes: [ErofsInode], in bootstrap: ErofsImage, image: ImageRecord) throws -> [PrefetchRange] {
        var ranges: [PrefetchRange] = []
        for inode in inodes where inode.fileType == .regular {
            for mapping in try bootstrap.chunkMappings(of: inode) {
                guard mapping.device >= 1, Int(mapping.device) <= image.blobs.count, let offset = mapping.deviceOffset else { continue }
                let blob = image.blobs[Int(mapping.device) - 1].id
                if let last = ranges.last, last.blob == blob, last.offset + last.length == offset {
                    ranges[ranges.count - 1].length += mapping.length
                } else {
                    ranges.append(PrefetchRange(blob: blob, offset: offset, length: mapping.length))
                }
            }
        }
        return ranges
    }

    /// Fetches the ranges in the background, in order, at prefetch priority.
    private func schedule(_ ranges: [PrefetchRange], image name: String, reason: String) {
        guard !ranges.isEmpty else { return }
        let engine = self.engine
        let logger = self.logger
        Task {
            var failures = 0
            for range in ranges {
                do {
                    try await engine.prefetch(blobID: range.blob, offset: range.offset, length: range.length, background: true)
                } catch {
                    failures += 1
                }
            }
            logger.info(
                "prefetch done",
                metadata: [
                    "image.reference": "\(name)", "prefetch.reason": "\(reason)", "prefetch.ranges": "\(ranges.count)",
                    "prefetch.failures": "\(failures)",
                ])
        }
    }
}
