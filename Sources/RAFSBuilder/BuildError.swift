import Archive
import LinuxKernel
import OCI

/// Why a build was refused or failed. Cases carry the layer, path or value at fault.
public enum BuildError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidOptions(reason: String)
    /// The layer archive itself is bad (truncated, corrupt, hostile header).
    case layer(index: Int, path: String, ArchiveError)
    /// An entry path the merged tree cannot hold safely.
    case unsafeEntry(layer: Int, path: String, reason: String)
    /// A hard link whose target is missing, a directory, or reached through a symlink.
    case badHardLink(layer: Int, path: String, target: String, reason: String)
    case tooDeep(layer: Int, path: String, limit: Int)
    case tooManyEntries(limit: Int)
    case fileTooLarge(layer: Int, path: String, size: Int64, limit: Int64)
    /// A limit of the on-disk format (chunks per blob, blobs per image, offsets) would be exceeded.
    case formatLimit(reason: String)
    case compressionFailed(reason: String)
    case io(path: String, SyscallError)
    /// The OCI image layout being converted is unreadable or unsound.
    case layout(OCIError)
    /// A layer of the image to convert is not a tar (plain, gzip or zstd).
    case unsupportedLayer(mediaType: String)
    /// A non-layer failure while reading a layer (the underlying error's text).
    case read(layer: Int, path: String, reason: String)

    public var description: String {
        switch self {
        case .invalidOptions(let reason): return "invalid build options: \(reason)"
        case .layer(let index, let path, let error): return "layer \(index) (\(path)): \(error)"
        case .unsafeEntry(let layer, let path, let reason): return "layer \(layer): refused entry \(path.debugDescription): \(reason)"
        case .badHardLink(let layer, let path, let target, let reason):
            return "layer \(layer): hard link \(path.debugDescription) -> \(target.debugDescription): \(reason)"
        case .tooDeep(let layer, let path, let limit):
            return "layer \(layer): \(path.debugDescription) is deeper than \(limit) levels"
        case .tooManyEntries(let limit): return "the layers hold more than \(limit) entries"
        case .fileTooLarge(let layer, let path, let size, let limit):
            return "layer \(layer): \(path.debugDescription) has \(size) bytes, over the limit of \(limit)"
        case .formatLimit(let reason): return "RAFS v6 format limit: \(reason)"
        case .compressionFailed(let reason): return "chunk compression failed: \(reason)"
        case .io(let path, let error): return "\(path): \(error)"
        case .layout(let error): return "\(error)"
        case .unsupportedLayer(let mediaType): return "layer media type \(mediaType) cannot be converted"
        case .read(let layer, let path, let reason): return "layer \(layer) (\(path)): \(reason)"
        }
    }
}
