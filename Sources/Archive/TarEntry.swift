/// One member of a layer tar, with PAX and GNU extensions applied and its path normalized.
public struct TarEntry: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case regular
        case directory
        case symlink
        case hardlink
        case characterDevice
        case blockDevice
        case fifo
    }

    /// Normalized path relative to the layer root, without leading `./` or `/`; "" is the root itself.
    public var path: String
    public var kind: Kind
    /// Permission bits and set-id/sticky bits (no file-type bits).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: Int64
    public var mtimeSeconds: Int64
    public var mtimeNanoseconds: UInt32
    /// Symlink target (as written) or hard link target (normalized like `path`).
    public var linkTarget: String
    public var deviceMajor: UInt32
    public var deviceMinor: UInt32
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    public var xattrs: [String: [UInt8]]

    public init(
        path: String, kind: Kind, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, size: Int64 = 0,
        mtimeSeconds: Int64 = 0, mtimeNanoseconds: UInt32 = 0, linkTarget: String = "", deviceMajor: UInt32 = 0,
        deviceMinor: UInt32 = 0, xattrs: [String: [UInt8]] = [:]
    ) {
        self.path = path
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtimeSeconds = mtimeSeconds
        self.mtimeNanoseconds = mtimeNanoseconds
        self.linkTarget = linkTarget
        self.deviceMajor = deviceMajor
        self.deviceMinor = deviceMinor
        self.xattrs = xattrs
    }

    /// The last path component.
    public var name: Substring {
        guard let slash = path.lastIndex(of: "/") else { return Substring(path) }
        return path[path.index(after: slash)...]
    }

    /// overlayfs-style whiteout in OCI layers: `.wh.<name>` deletes `<name>` from lower layers.
    public var whiteoutTarget: String? {
        let name = self.name
        guard name.hasPrefix(".wh."), name != ".wh..wh..opq" else { return nil }
        let parent = path.dropLast(name.count)
        return String(parent) + String(name.dropFirst(4))
    }

    /// `.wh..wh..opq` marks its directory opaque: lower layers' contents are hidden.
    public var isOpaqueMarker: Bool { name == ".wh..wh..opq" }
}
