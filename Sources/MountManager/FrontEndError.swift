import LinuxKernel

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a front end could not start, keep its descriptor, or serve: one enum for the library, each case with
/// the value at fault and, where there is one, what to do about it.
public enum FrontEndError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The configured front end cannot run on this host.
    case unavailable(FrontEndChoice, reason: String)
    // The descriptor holder (`snapshotterd-fdholder`).
    case spawnFailed(binary: String, errno: Int32)
    case notReady(socket: String)
    case badHandle(socket: String, detail: String)
    case missingBinary(String)
    // The seed devnode.
    /// The devnode names a blob's backing file somewhere other than where the puller made it.
    case pathMismatch(blobID: String, expected: String, found: String)
    /// A devnode request of the wrong size, or naming no single file.
    case badRequestSize(Int)
    case badRequestPath([UInt8])

    public var description: String {
        switch self {
        case .unavailable(let choice, let reason):
            return "front end \(choice.rawValue) is not available here: \(reason); set ondemand.front_end = \"auto\" or \"eager\""
        case .spawnFailed(let binary, let code):
            return "cannot start the descriptor holder \(binary): \(String(cString: strerror(code)))"
        case .notReady(let socket): return "the descriptor holder did not come up on \(socket)"
        case .badHandle(let socket, let detail): return "the holder on \(socket) handed over a bad descriptor: \(detail)"
        case .missingBinary(let binary):
            return "the descriptor holder \(binary) is missing; install snapshotterd-fdholder beside snapshotterd"
        case .pathMismatch(let blobID, let expected, let found):
            return "blob \(blobID): the seed devnode names its backing file \(expected), but it is at \(found); "
                + "the service root must be the devnode's dir (re-pull the image)"
        case .badRequestSize(let size): return "seed devnode request of \(size) bytes has the wrong size"
        case .badRequestPath(let name):
            return "seed devnode request names \(String(decoding: name, as: UTF8.self).debugDescription), not one file"
        }
    }
}
