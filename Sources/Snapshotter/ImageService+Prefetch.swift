import BlobStore
import Logging
import SnapshotterAPI

/// Background prefetch: whole images, or the files a workload reads at start-up. Everything runs at prefetch
/// priority, so on-demand reads always go first; chunks already local or in flight are not fetched again.
extension ImageService {
    /// Schedules the prefetch and returns at once with the number of byte ranges queued.
    func prefetch(_ request: PrefetchRequest) throws -> PrefetchResponse {
        let name = (try? ImageReference(parsing: request.reference).description) ?? request.reference
        guard let image = try catalog.image(reference: name) else { throw ImageError.notFound(reference: name) }
        var ranges: [(blob: Int64, offset: UInt64, length: UInt64)] = []
        if let paths = request.paths, !paths.isEmpty {
            let bootstrap = try ErofsImage(path: image.bootstrapPath)
            for path in paths {
                let inode: ErofsInode
                do {
                    inode = try bootstrap.lookup(path)
                } catch {
                    throw APIError.notFound("\(path) is not in image \(name)")
                }
                for mapping in try bootstrap.chunkMappings(of: inode) {
                    guard mapping.device >= 1, Int(mapping.device) <= image.blobs.count, let offset = mapping.deviceOffset else { continue }
                    ranges.append((image.blobs[Int(mapping.device) - 1].id, offset, mapping.length))
                }
            }
        } else {
            for blob in image.blobs { ranges.append((blob.id, 0, UInt64(max(0, blob.uncompressedSize)))) }
        }
        let engine = self.engine
        let logger = self.logger
        let queued = ranges
        Task {
            var failures = 0
            for range in queued {
                do { try await engine.prefetch(blobID: range.blob, offset: range.offset, length: range.length) } catch { failures += 1 }
            }
            logger.info(
                "prefetch done",
                metadata: ["image.reference": "\(name)", "prefetch.ranges": "\(queued.count)", "prefetch.failures": "\(failures)"])
        }
        return PrefetchResponse(ranges: ranges.count, bytes: ranges.reduce(UInt64(0)) { $0 + $1.length })
    }
}
