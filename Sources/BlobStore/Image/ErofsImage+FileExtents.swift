/// Where files' data ends in a blob, for the engine's read-ahead: a reader still in the file it started in
/// reads ahead to that file's end (an `exec` paging in a binary must not make the megabytes after the binary
/// look wanted), and one reading files in a row reads ahead to the end of the directory it is in (a start-up
/// script reading its own directory must not pull in the next directories).
extension ErofsImage {
    /// One regular file's data in a blob: where it ends, and where the data of the last file of its directory
    /// ends (both device offsets).
    public struct FileDataEnd: Equatable, Sendable {
        public var end: UInt64
        public var directoryEnd: UInt64

        public init(end: UInt64, directoryEnd: UInt64) {
            self.end = end
            self.directoryEnd = directoryEnd
        }
    }

    /// The regular files with chunks on `device` (blob index + 1), sorted by where their data ends. Files whose
    /// chunks are shared or scattered count with the end of their last chunk.
    public func fileDataEnds(device: UInt16) throws(ImageFormatError) -> [FileDataEnd] {
        var files: [(end: UInt64, directory: String)] = []
        var directoryEnds: [String: UInt64] = [:]
        var seen = Set<UInt64>()
        try walk { entry throws(ImageFormatError) in
            guard entry.type == .regular, entry.size > 0, seen.insert(entry.nid).inserted else { return }
            let node = try inode(nid: entry.nid)
            guard node.dataLayout == .chunkBased else { return }
            var end: UInt64 = 0
            for mapping in try chunkMappings(of: node) where mapping.device == device {
                if let offset = mapping.deviceOffset { end = max(end, offset + mapping.length) }
            }
            guard end > 0 else { return }
            let directory = String(entry.path[..<(entry.path.lastIndex(of: "/") ?? entry.path.startIndex)])
            files.append((end, directory))
            directoryEnds[directory] = max(directoryEnds[directory] ?? 0, end)
        }
        return files.map { FileDataEnd(end: $0.end, directoryEnd: directoryEnds[$0.directory] ?? $0.end) }
            .sorted { $0.end < $1.end }
    }
}
