/// Why a layer archive was refused. Every case names the entry or offset at fault.
public enum ArchiveError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(detail: String)
    case badHeader(offset: Int64, detail: String)
    case unsafePath(String, reason: String)
    case absurdSize(path: String, size: Int64, limit: Int64)
    case unsupportedEntry(path: String, typeflag: UInt8)
    case badPAXRecord(path: String, detail: String)
    case decompression(format: String, detail: String)
    /// A gzip checkpoint index that is malformed, or a stream that cannot be indexed.
    case badGzipIndex(detail: String)

    public var description: String {
        switch self {
        case .truncated(let detail): return "layer archive is truncated: \(detail)"
        case .badHeader(let offset, let detail): return "bad tar header at byte \(offset): \(detail)"
        case .unsafePath(let path, let reason): return "refused tar entry \(path.debugDescription): \(reason)"
        case .absurdSize(let path, let size, let limit):
            return "tar entry \(path.debugDescription) claims \(size) bytes, over the limit of \(limit)"
        case .unsupportedEntry(let path, let typeflag):
            return "tar entry \(path.debugDescription) has unsupported type \(Character(Unicode.Scalar(typeflag)))"
        case .badPAXRecord(let path, let detail): return "bad PAX header for \(path.debugDescription): \(detail)"
        case .decompression(let format, let detail): return "cannot decompress the \(format) layer: \(detail)"
        case .badGzipIndex(let detail): return "gzip index: \(detail)"
        }
    }
}
