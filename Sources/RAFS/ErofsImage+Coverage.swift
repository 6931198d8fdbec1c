/// Whether every byte the image's files map onto its blobs is described by a chunk of that blob. The lazy
/// front ends refuse an undescribed range when it is read (`RafsBlob.describes`); where the kernel reads the
/// backing files with nobody in between (the eager front end), an image that maps a file onto bytes no chunk
/// describes would read the backing file's hole as zeros, so such an image is refused before it is mounted.
extension ErofsImage {
    /// A file range that lies on bytes no chunk of its blob describes.
    public struct UndescribedRange: Equatable, Sendable, CustomStringConvertible {
        public var path: String
        public var device: UInt16
        public var deviceOffset: UInt64
        public var length: UInt64

        public var description: String {
            "\(path) maps \(length) bytes onto device \(device) at \(deviceOffset), where no chunk of the blob describes them"
        }
    }

    /// The first file range that `blobs` (by device number: blob index + 1) do not describe, or nil. One walk of
    /// the tree.
    public func firstUndescribedRange(blobs: [UInt16: RafsBlob]) throws(ImageFormatError) -> UndescribedRange? {
        var found: UndescribedRange?
        var seen = Set<UInt64>()
        try walk { entry throws(ImageFormatError) in
            guard found == nil, entry.type == .regular, entry.size > 0, seen.insert(entry.nid).inserted else { return }
            let node = try inode(nid: entry.nid)
            guard node.dataLayout == .chunkBased else { return }
            for mapping in try chunkMappings(of: node) where mapping.device > 0 {
                guard let offset = mapping.deviceOffset else { continue }
                guard let blob = blobs[mapping.device], blob.describes(offset: offset, length: mapping.length) else {
                    found = UndescribedRange(path: entry.path, device: mapping.device, deviceOffset: offset, length: mapping.length)
                    return
                }
            }
        }
        return found
    }
}
