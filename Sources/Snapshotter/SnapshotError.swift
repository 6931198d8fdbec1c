import LinuxKernel
import SnapshotterAPI

/// Everything a snapshot call can refuse, each case carrying the value at fault. `apiError` gives the
/// containerd error class and the message a user sees.
enum SnapshotError: Error, Equatable {
    case notFound(key: String)
    case parentNotFound(parent: String)
    case alreadyExists(key: String)
    case parentNotCommitted(parent: String, kind: String)
    case hasChildren(key: String, children: [String])
    case notActive(key: String, kind: String)
    case notMountable(key: String)
    case invalidKey(key: String, reason: String)
    case invalidLabel(key: String, reason: String)
    case invalidFieldPath(String)
    case invalidFilter(filter: String, reason: String)
    case mounted(key: String, target: String)
    case invalidTarget(target: String, reason: String)
    case targetInUse(target: String)
    case notMountedHere(target: String)
    /// umount(2) kept failing with EBUSY; `users` are the processes found holding something under the target.
    case targetBusy(target: String, users: [MountUser])
    case targetOperationInProgress(target: String)
    case storage(String)
    case imageNotFound(image: String)
    case invalidImage(image: String, reason: String)

    var apiError: APIError {
        switch self {
        case .notFound(let key):
            return .notFound("snapshot \(key) does not exist")
        case .parentNotFound(let parent):
            return .notFound("parent snapshot \(parent) does not exist")
        case .alreadyExists(let key):
            return .alreadyExists("snapshot \(key) already exists")
        case .parentNotCommitted(let parent, let kind):
            return .invalidArgument("parent \(parent) is \(kind); only committed snapshots can be parents")
        case .hasChildren(let key, let children):
            return .failedPrecondition(
                "snapshot \(key) has children (\(children.joined(separator: ", "))); remove them first")
        case .notActive(let key, let kind):
            return .failedPrecondition("snapshot \(key) is \(kind); only active snapshots can be committed")
        case .notMountable(let key):
            return .failedPrecondition("snapshot \(key) is committed; only active or view snapshots have mounts")
        case .invalidKey(let key, let reason):
            return .invalidArgument("invalid snapshot key \(key.debugDescription): \(reason)")
        case .invalidLabel(let key, let reason):
            return .invalidArgument("invalid label \(key.debugDescription): \(reason)")
        case .invalidFieldPath(let path):
            return .invalidArgument("cannot update field \(path.debugDescription): only labels and labels.<key> are mutable")
        case .invalidFilter(let filter, let reason):
            return .invalidArgument("invalid filter \(filter.debugDescription): \(reason)")
        case .mounted(let key, let target):
            return .failedPrecondition("snapshot \(key) is mounted at \(target); unmount it first")
        case .invalidTarget(let target, let reason):
            return .invalidArgument("invalid mount target \(target.debugDescription): \(reason)")
        case .targetInUse(let target):
            return .alreadyExists("\(target) is already a mount point")
        case .notMountedHere(let target):
            return .notFound("snapshotterd has nothing mounted at \(target)")
        case .targetBusy(let target, let users):
            let holders =
                users.isEmpty
                ? "no process in this mount namespace holds a file there (another namespace may, or a mount under it)"
                : users.map(\.description).joined(separator: "; ")
            return .failedPrecondition("\(target) is busy: a process still uses it (\(holders))")
        case .targetOperationInProgress(let target):
            return .failedPrecondition("another mount or unmount of \(target) is under way; retry when it has finished")
        case .storage(let detail):
            return APIError(.internal, detail)
        case .imageNotFound(let image):
            return .notFound("image \(image) is not pulled; pull it first (snapctl pull \(image))")
        case .invalidImage(let image, let reason):
            return .invalidArgument("cannot use image \(image): \(reason)")
        }
    }
}

/// Keys, names and labels as the API accepts them.
enum SnapshotNames {
    static let maximumKeyBytes = 4096
    static let maximumLabelBytes = 4096

    /// A key names a snapshot. It never becomes a path (directories are numbered), so `/` is fine, and
    /// containerd's keys (`<namespace>/<seq>/<key>`) need it; URL paths carry keys percent-encoded.
    /// Keys also travel in logs and shell commands, so control characters are refused.
    static func validate(key: String) throws(SnapshotError) {
        if key.isEmpty { throw .invalidKey(key: key, reason: "must not be empty") }
        if key.utf8.count > maximumKeyBytes { throw .invalidKey(key: key, reason: "longer than \(maximumKeyBytes) bytes") }
        if key.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw .invalidKey(key: key, reason: "must not contain control characters")
        }
    }

    /// containerd's rule: a label's key and value together fit in 4096 bytes.
    static func validate(labels: [String: String]) throws(SnapshotError) {
        for (key, value) in labels {
            if key.isEmpty { throw .invalidLabel(key: key, reason: "label keys must not be empty") }
            if key.utf8.count + value.utf8.count > maximumLabelBytes {
                throw .invalidLabel(key: key, reason: "key and value together exceed \(maximumLabelBytes) bytes")
            }
        }
    }
}
