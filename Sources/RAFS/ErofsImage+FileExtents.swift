/// Where files' data ends in a blob, for the engine's read-ahead: a reader still in the file it started in
/// reads ahead to that file's end (an `exec` paging in a binary must not make the megabytes after the binary
/// look wanted), and one reading files in a row reads ahead to the end of the directory it is in (a start-up
/// script reading its own directory must not pull in the next directories).
extension ErofsImage {
    /// One regular file's data in a blob: where it ends, and where the data of the last file of its directory
    /// ends (both device offsets).
    public struct FileDataEnd: Equatable, Sendable {
        /// Where the file's first chunk on the device begins.
        public var start: UInt64
        public var end: UInt64
        public var directoryEnd: UInt64

        public init(start: UInt64, end: UInt64, directoryEnd: UInt64) {
            self.start = start
            self.end = end
            self.directoryEnd = directoryEnd
        }
    }

    /// For each device (blob index + 1) that holds file data, its regular files sorted by where their data
    /// ends; one walk of the tree serves every blob. Files whose chunks are shared or scattered count with the
    /// end of their last chunk.
    public func fileDataEnds() throws(ImageFormatError) -> [UInt16: [FileDataEnd]] {
        struct Key: Hashable {
            var device: UInt16
            var directory: String
        }
        var files: [(key: Key, start: UInt64, end: UInt64)] = []
        var directoryEnds: [Key: UInt64] = [:]
        var seen = Set<UInt64>()
        try walk { entry throws(ImageFormatError) in
            guard entry.type == .regular, entry.size > 0, seen.insert(entry.nid).inserted else { return }
            let node = try inode(nid: entry.nid)
            guard node.dataLayout == .chunkBased else { return }
            var extents: [UInt16: (start: UInt64, end: UInt64)] = [:]
            for mapping in try chunkMappings(of: node) where mapping.device > 0 {
                guard let offset = mapping.deviceOffset else { continue }
                let known = extents[mapping.device] ?? (offset, offset + mapping.length)
                extents[mapping.device] = (min(known.start, offset), max(known.end, offset + mapping.length))
            }
            let directory = String(entry.path[..<(entry.path.lastIndex(of: "/") ?? entry.path.startIndex)])
            for (device, (start, end)) in extents {
                let key = Key(device: device, directory: directory)
                files.append((key, start, end))
                directoryEnds[key] = max(directoryEnds[key] ?? 0, end)
            }
        }
        var byDevice: [UInt16: [FileDataEnd]] = [:]
        for file in files {
            byDevice[file.key.device, default: []].append(
                FileDataEnd(start: file.start, end: file.end, directoryEnd: directoryEnds[file.key] ?? file.end))
        }
        return byDevice.mapValues { $0.sorted { $0.end < $1.end } }
    }
}
