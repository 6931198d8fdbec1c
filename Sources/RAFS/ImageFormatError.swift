import LinuxKernel

/// Everything that can be wrong with a RAFS v6 / EROFS bootstrap or a nydus data blob. Each case carries the
/// value at fault (offset, nid, path, expected and found) so a message names what to look at.
public enum ImageFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    /// open/fstat/pread/pwrite failed on `path`.
    case io(path: String, SyscallError)
    /// A read of `length` bytes at `offset` does not fit in `what` (`size` bytes).
    case outOfBounds(what: String, offset: UInt64, length: UInt64, size: UInt64)
    /// The file ends before a structure it must hold.
    case truncated(what: String, needed: UInt64, available: UInt64)
    case badMagic(what: String, offset: UInt64, expected: UInt32, found: UInt32)
    case unsupportedBlockSize(bits: UInt8)
    /// Incompatible feature bits this reader does not implement.
    case unsupportedFeatures(incompat: UInt32)
    case badInode(nid: UInt64, reason: String)
    case unsupportedDataLayout(nid: UInt64, layout: UInt8)
    case badDirectory(nid: UInt64, reason: String)
    /// A directory entry leads back to a directory already on the walk (a cycle), or the tree is deeper than
    /// the walk allows.
    case directoryLoop(path: String, nid: UInt64)
    case tooDeep(path: String, limit: Int)
    case badXattr(nid: UInt64, reason: String)
    case notFound(path: String)
    case notADirectory(path: String)
    case notARegularFile(path: String)
    /// A chunk index or chunk address that points outside what the image describes.
    case badChunkIndex(nid: UInt64, chunk: UInt64, reason: String)
    /// Data of `device` is needed but no reader for it was given.
    case deviceUnavailable(device: UInt16)
    case badBlobTable(reason: String)
    case badBlobMeta(blob: String, reason: String)
    case badChunkInfo(blob: String, chunk: UInt32, reason: String)
    case unsupportedCompression(algorithm: UInt32, context: String)
    case unsupportedDigest(algorithm: UInt32)
    /// Compressed data that does not decode to exactly the size the metadata declares.
    case decompressionFailed(context: String, reason: String)
    case digestMismatch(context: String, expected: String, found: String)
    /// A size field larger than this reader will ever allocate for (hostile or corrupt metadata).
    case absurdSize(what: String, size: UInt64, limit: UInt64)
    /// The RAFS v6 prefetch table is malformed (its size, or an entry that is no inode).
    case badPrefetchTable(reason: String)
    case badToc(blob: String, reason: String)
    /// A chunk that does not decompress, or whose digest differs from the one the image records (inspection).
    case corruptChunk(blobID: String, chunk: UInt32, reason: String)

    public var description: String {
        switch self {
        case .io(let path, let error):
            return "cannot access \(path): \(error)"
        case .outOfBounds(let what, let offset, let length, let size):
            return "\(what): \(length) bytes at offset \(offset) lie beyond its end (\(size) bytes); "
                + "the image is truncated or an offset in it is corrupt"
        case .truncated(let what, let needed, let available):
            return "\(what) is truncated: needs \(needed) bytes, has \(available)"
        case .badMagic(let what, let offset, let expected, let found):
            return "\(what): magic at offset \(offset) is 0x\(String(found, radix: 16)), expected "
                + "0x\(String(expected, radix: 16)); this is not a RAFS v6 / EROFS image or blob"
        case .unsupportedBlockSize(let bits):
            return "unsupported EROFS block size 2^\(bits); only 512 B to 64 KiB blocks are read"
        case .unsupportedFeatures(let incompat):
            return "EROFS incompatible features 0x\(String(incompat, radix: 16)) are not supported "
                + "(compressed inodes are not read by this reader)"
        case .badInode(let nid, let reason):
            return "inode nid \(nid): \(reason)"
        case .unsupportedDataLayout(let nid, let layout):
            return "inode nid \(nid): data layout \(layout) is not supported (compressed or reserved)"
        case .badDirectory(let nid, let reason):
            return "directory nid \(nid): \(reason)"
        case .directoryLoop(let path, let nid):
            return "\(path): directory nid \(nid) is already an ancestor on this path; the image has a cycle"
        case .tooDeep(let path, let limit):
            return "\(path): the tree is deeper than \(limit) levels; refusing to walk further"
        case .badXattr(let nid, let reason):
            return "extended attributes of nid \(nid): \(reason)"
        case .notFound(let path):
            return "\(path): no such entry in the image"
        case .notADirectory(let path):
            return "\(path): a path component is not a directory"
        case .notARegularFile(let path):
            return "\(path): not a regular file"
        case .badChunkIndex(let nid, let chunk, let reason):
            return "inode nid \(nid), chunk \(chunk): \(reason)"
        case .deviceUnavailable(let device):
            return "data on device \(device) is needed but no reader for that blob was given"
        case .badBlobTable(let reason):
            return "RAFS blob table: \(reason)"
        case .badBlobMeta(let blob, let reason):
            return "blob \(blob) meta (chunk info array): \(reason)"
        case .badChunkInfo(let blob, let chunk, let reason):
            return "blob \(blob) chunk \(chunk): \(reason)"
        case .unsupportedCompression(let algorithm, let context):
            return "\(context): compression algorithm \(algorithm) is not supported (0 none, 1 lz4_block, 3 zstd are)"
        case .unsupportedDigest(let algorithm):
            return "digest algorithm \(algorithm) is not supported (0 blake3, 1 sha256 are)"
        case .decompressionFailed(let context, let reason):
            return "\(context): decompression failed: \(reason)"
        case .digestMismatch(let context, let expected, let found):
            return "\(context): digest mismatch, expected \(expected), found \(found); the data is corrupt"
        case .badPrefetchTable(let reason): return "bad RAFS prefetch table: \(reason)"
        case .absurdSize(let what, let size, let limit):
            return "\(what) declares \(size) bytes, over the limit of \(limit); the metadata is corrupt"
        case .corruptChunk(let blobID, let chunk, let reason): return "blob \(blobID) chunk \(chunk) is corrupt: \(reason)"
        case .badToc(let blob, let reason):
            return "blob \(blob) table of contents: \(reason)"
        }
    }
}
