import LinuxKernel
import RAFS
import TOML

/// Why the daemon could not start, or would not serve an image it recorded: the config, the root lock, the
/// API socket, socket activation, and each recorded image's checks. Each case names the file, key, socket
/// or image at fault and what to do. (Refused API calls are `SnapshotError`s and the libraries' own errors,
/// classified into `APIError` at the edge.)
enum DaemonError: Error, CustomStringConvertible {
    // The config file and flags.
    case unreadable(path: String, reason: String)
    case syntax(path: String, error: TOMLError)
    case unknownKey(path: String, key: String)
    case wrongType(path: String, key: String, expected: String, found: String)
    case outOfRange(path: String, key: String, value: Int64, range: ClosedRange<Int64>)
    case invalid(key: String, reason: String)
    // The root lock.
    case held(root: String, owner: String)
    // The API socket, bound here or handed over by systemd.
    case socketInUse(String)
    case cannotPrepareSocket(String, SyscallError)
    case notAStreamUnixSocket(fd: Int32)
    case tooMany(Int32)
    // A recorded image that is not served after a restart.
    case bootstrapChanged(path: String, recorded: String, found: String)
    case chunkMapChanged(blobID: String, domain: String, recorded: String, found: String)
    case undescribed(ErofsImage.UndescribedRange)

    var description: String {
        switch self {
        case .unreadable(let path, let reason): return "cannot read config \(path): \(reason)"
        case .syntax(let path, let error): return "config \(path): \(error)"
        case .unknownKey(let path, let key): return "config \(path): unknown key \(key)"
        case .wrongType(let path, let key, let expected, let found):
            return "config \(path): \(key) must be a \(expected), not a \(found)"
        case .outOfRange(let path, let key, let value, let range):
            return "config \(path): \(key) = \(value) is outside \(range.lowerBound)...\(range.upperBound)"
        case .invalid(let key, let reason): return "config: \(key) \(reason)"
        case .held(let root, let owner):
            return "another snapshotterd (\(owner)) is using \(root); stop it or choose another --root"
        case .socketInUse(let path):
            return "another process is serving \(path); stop it first or choose another --socket"
        case .cannotPrepareSocket(let path, let error):
            return "cannot prepare the API socket \(path): \(error)"
        case .notAStreamUnixSocket(let fd):
            return "socket activation passed fd \(fd), which is not a listening Unix stream socket"
        case .tooMany(let count):
            return "socket activation passed \(count) sockets; snapshotterd.socket should have exactly one ListenStream"
        case .bootstrapChanged(let path, let recorded, let found):
            return "bootstrap \(path) has sha256 \(found), not the \(recorded) recorded when it was pulled; remove and pull the image again"
        case .chunkMapChanged(let blobID, let domain, let recorded, let found):
            return
                "blob \(blobID) (domain \(domain)) now has chunk map \(found), not the \(recorded) its images were served with; remove and pull the image again"
        case .undescribed(let range):
            return "the image cannot be served without an on-demand front end: \(range)"
        }
    }
}
