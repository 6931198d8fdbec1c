import Foundation
import OCI
import RAFS
import RAFSBuilder

/// What a lazy cold start must move at the least, from the converted image itself: the manifest, the config,
/// the bootstrap layer, each blob's meta (chunk table and digests), and the stored (compressed) bytes of every
/// chunk of the files the container reads. With the link's rate and RTT this is the cold start's limit:
/// the local floor (the same start with everything local) + bytes / rate + one RTT per dependent round
/// (connect; manifest; config, bootstrap and blob meta at once; the data).
struct StartSetLimit {
    static let dependentRounds = 4

    let bytes: Int64
    let dataBytes: Int64

    init(layout: String, converted: ConvertResult, files: [String], work: String) throws {
        let blobsDirectory = layout + "/blobs/sha256/"
        let size = { (path: String) -> Int64 in
            ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.int64Value ?? 0
        }
        // The bootstrap, out of its layer (a tar.gz holding image/image.boot).
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        _ = try Tools.run("/bin/tar", ["-xzf", blobsDirectory + converted.bootstrapLayer.digest.encoded, "-C", work])
        let image = try ErofsImage(path: work + "/image/image.boot")
        var metadata = converted.manifestDescriptor.size + converted.manifest.config.size + converted.bootstrapLayer.size
        var blobs: [UInt16: RafsBlob] = [:]
        for (index, entry) in image.blobs.enumerated() {
            let path = blobsDirectory + entry.blobID
            metadata += size(path) - Int64(entry.metaOffset)
            blobs[UInt16(index + 1)] = try RafsBlob(path: path, entry: entry)
        }
        // Each chunk once (files may share chunks), at its stored size.
        var seen = Set<String>()
        var data: Int64 = 0
        for file in files {
            for mapping in try image.chunkMappings(of: image.lookup(file)) {
                guard let offset = mapping.deviceOffset, let blob = blobs[mapping.device] else { continue }
                for chunk in blob.chunks(coveringUncompressed: offset, length: mapping.length)
                where seen.insert("\(mapping.device)/\(chunk.index)").inserted {
                    data += Int64(chunk.compressedSize)
                }
            }
        }
        dataBytes = data
        bytes = metadata + data
    }

    /// Seconds the start takes at best on a link of `bytesPerSecond` and `rttMilliseconds`, over `floor`.
    func seconds(floor: Double, bytesPerSecond: Double, rttMilliseconds: Double) -> Double {
        floor + Double(bytes) / bytesPerSecond + Double(Self.dependentRounds) * rttMilliseconds / 1000
    }
}
