/// The RAFS v6 prefetch table: the nids (u32 each, `s_prefetch_table_size` bytes at `s_prefetch_table_offset`
/// of the extended superblock) of the files and directories an image's builder marked as read at start-up
/// (nydus's `--prefetch-policy fs`). A snapshotter fetches their data in the background once the image is
/// pulled.
extension ErofsImage {
    /// Most entries a prefetch table may list (nydus writes one per prefetch rule).
    public static let maximumPrefetchEntries = 1 << 16

    /// The inodes the prefetch table lists, in table order; empty when the bootstrap has no table.
    public func prefetchTable() throws(ImageFormatError) -> [ErofsInode] {
        guard let rafs, rafs.prefetchTableSize > 0 else { return [] }
        let size = Int(rafs.prefetchTableSize)
        guard size % 4 == 0 else { throw .badPrefetchTable(reason: "size \(size) is not a multiple of 4") }
        guard size / 4 <= Self.maximumPrefetchEntries else {
            throw .badPrefetchTable(reason: "\(size / 4) entries, at most \(Self.maximumPrefetchEntries) are accepted")
        }
        let raw = try file.bytes(at: rafs.prefetchTableOffset, count: size, what: "prefetch table")
        var inodes: [ErofsInode] = []
        for index in 0..<(size / 4) {
            let nid = UInt64(try raw.u32(index * 4))
            do {
                inodes.append(try inode(nid: nid))
            } catch {
                throw .badPrefetchTable(reason: "entry \(index) names nid \(nid), which is no inode: \(error)")
            }
        }
        return inodes
    }

    /// The regular files to prefetch: the table's files, and every regular file under its directories
    /// (depth first, in directory order), each once.
    public func prefetchFiles() throws(ImageFormatError) -> [ErofsInode] {
        var files: [ErofsInode] = []
        var seen = Set<UInt64>()
        var visitedDirectories = Set<UInt64>()
        func collect(_ node: ErofsInode, depth: Int) throws(ImageFormatError) {
            switch node.fileType {
            case .regular:
                if seen.insert(node.nid).inserted { files.append(node) }
            case .directory:
                guard depth <= Self.maximumDepth else { throw .tooDeep(path: "prefetch nid \(node.nid)", limit: Self.maximumDepth) }
                guard visitedDirectories.insert(node.nid).inserted else { return }
                for child in try directoryEntries(of: node) where child.name != "." && child.name != ".." {
                    try collect(try inode(nid: child.nid), depth: depth + 1)
                }
            default:
                return
            }
        }
        for node in try prefetchTable() { try collect(node, depth: 0) }
        return files
    }
}
