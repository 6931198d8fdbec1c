import Archive
import RAFS

/// One inode of the merged tree. Hard links share the object; directories own their entries.
final class TreeInode {
    var type: ErofsFileType
    /// Permission bits with set-id and sticky bits, no type bits.
    var permissions: UInt16
    var uid: UInt32
    var gid: UInt32
    var mtime: UInt64
    var mtimeNanoseconds: UInt32
    var xattrs: [String: [UInt8]]
    /// Symlink target bytes.
    var target: [UInt8] = []
    /// `new_encode_dev` number for device nodes.
    var rdev: UInt32 = 0
    /// Regular files: the size and where each chunk lives (filled as batches are flushed).
    var size: UInt64 = 0
    var chunks: [ChunkLocation] = []
    /// Directories: entries by name.
    var children: [String: TreeEntry] = [:]
    /// Directories: the parent, set by the bootstrap layout (nil for the root).
    weak var parent: TreeInode?
    /// Assigned by the bootstrap layout.
    var nid: UInt64 = 0
    var links: UInt32 = 0
    var placed = false

    init(
        type: ErofsFileType, permissions: UInt16, uid: UInt32, gid: UInt32, mtime: UInt64, mtimeNanoseconds: UInt32,
        xattrs: [String: [UInt8]]
    ) {
        self.type = type
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.mtimeNanoseconds = mtimeNanoseconds
        self.xattrs = xattrs
    }

    var mode: UInt16 { type.modeBits | permissions }
}

/// A directory entry: the inode and the layer that last wrote this name (whiteouts and opaque markers
/// only hide what lower layers wrote).
struct TreeEntry {
    var inode: TreeInode
    var layer: Int
}

/// Where one chunk of a file is stored: builder blob ordinal (the layer), chunk-info index and block.
struct ChunkLocation: Equatable {
    var blob: Int
    var index: UInt32
    var uncompressedOffset: UInt64
}

/// The merged view of all layers, built entry by entry as overlayfs would present them: later layers
/// replace earlier entries, `.wh.<name>` deletes a lower entry, `.wh..wh..opq` hides a directory's lower
/// contents, and no whiteout file survives in the result.
///
/// Entries are only ever looked up lexically in this tree: a path whose parent is a symlink, or a hard link
/// reached through one, is refused, so nothing can resolve outside the image.
final class MergedTree {
    let root: TreeInode
    let options: BuildOptions
    private(set) var entryCount = 1

    init(options: BuildOptions) {
        self.options = options
        root = TreeInode(type: .directory, permissions: 0o755, uid: 0, gid: 0, mtime: 0, mtimeNanoseconds: 0, xattrs: [:])
    }

    /// Applies one tar entry of `layer`. Returns the new inode when the entry is a regular file whose data
    /// the caller must now read (chunks), else nil.
    func apply(_ entry: TarEntry, layer: Int) throws(BuildError) -> TreeInode? {
        let path = entry.path
        guard path.utf8.count <= options.maximumPathLength else {
            throw .unsafeEntry(layer: layer, path: String(path.prefix(200)), reason: "path longer than \(options.maximumPathLength) bytes")
        }
        let components = path.split(separator: "/").map(String.init)
        guard components.count <= options.maximumDepth else { throw .tooDeep(layer: layer, path: path, limit: options.maximumDepth) }
        for component in components where component.utf8.count > ErofsDirent.maximumNameLength {
            throw .unsafeEntry(layer: layer, path: path, reason: "a name is longer than \(ErofsDirent.maximumNameLength) bytes")
        }
        entryCount += 1
        guard entryCount <= options.maximumEntries else { throw .tooManyEntries(limit: options.maximumEntries) }

        if components.isEmpty {
            // The root itself: only a directory can describe it.
            guard entry.kind == .directory else { throw .unsafeEntry(layer: layer, path: "/", reason: "the root must be a directory") }
            update(root, from: entry)
            return nil
        }
        let name = components[components.count - 1]
        if entry.isOpaqueMarker {
            guard let directory = try lookupDirectory(Array(components.dropLast()), layer: layer, path: path, create: false) else {
                return nil
            }
            hideLower(in: directory, below: layer)
            return nil
        }
        if name.hasPrefix(".wh.") {
            guard let directory = try lookupDirectory(Array(components.dropLast()), layer: layer, path: path, create: false) else {
                return nil
            }
            let victim = String(name.dropFirst(4))
            if let existing = directory.children[victim], existing.layer < layer { directory.children[victim] = nil }
            return nil
        }
        guard let parent = try lookupDirectory(Array(components.dropLast()), layer: layer, path: path, create: true) else { return nil }

        if entry.kind == .hardlink {
            let target = try resolveHardLink(entry.linkTarget, layer: layer, path: path)
            if let existing = parent.children[name], existing.inode === target { return nil }
            parent.children[name] = TreeEntry(inode: target, layer: layer)
            return nil
        }
        if entry.kind == .directory, let existing = parent.children[name], existing.inode.type == .directory {
            update(existing.inode, from: entry)
            parent.children[name] = TreeEntry(inode: existing.inode, layer: layer)
            return nil
        }
        if entry.kind == .regular, entry.size > options.maximumFileSize {
            throw .fileTooLarge(layer: layer, path: path, size: entry.size, limit: options.maximumFileSize)
        }
        let inode = TreeInode(
            type: Self.type(of: entry.kind), permissions: UInt16(entry.mode & 0o7777), uid: entry.uid, gid: entry.gid,
            mtime: UInt64(max(0, entry.mtimeSeconds)), mtimeNanoseconds: entry.mtimeNanoseconds, xattrs: entry.xattrs)
        switch entry.kind {
        case .symlink: inode.target = Array(entry.linkTarget.utf8)
        case .characterDevice, .blockDevice: inode.rdev = ErofsDevice.encode(major: entry.deviceMajor, minor: entry.deviceMinor)
        case .regular: inode.size = UInt64(entry.size)
        default: break
        }
        parent.children[name] = TreeEntry(inode: inode, layer: layer)
        return entry.kind == .regular ? inode : nil
    }

    private static func type(of kind: TarEntry.Kind) -> ErofsFileType {
        switch kind {
        case .regular, .hardlink: return .regular
        case .directory: return .directory
        case .symlink: return .symlink
        case .characterDevice: return .characterDevice
        case .blockDevice: return .blockDevice
        case .fifo: return .fifo
        }
    }

    private func update(_ inode: TreeInode, from entry: TarEntry) {
        inode.permissions = UInt16(entry.mode & 0o7777)
        inode.uid = entry.uid
        inode.gid = entry.gid
        inode.mtime = UInt64(max(0, entry.mtimeSeconds))
        inode.mtimeNanoseconds = entry.mtimeNanoseconds
        inode.xattrs = entry.xattrs
    }

    /// Removes everything lower layers put under `directory`, keeping what `layer` itself wrote.
    private func hideLower(in directory: TreeInode, below layer: Int) {
        for (name, child) in directory.children {
            if child.layer < layer {
                directory.children[name] = nil
            } else if child.inode.type == .directory {
                hideLower(in: child.inode, below: layer)
            }
        }
    }

    /// Walks `components` from the root; every component must be a directory (never a symlink). Missing
    /// ones are created when `create` is set (tar streams may omit parents), else nil is returned.
    private func lookupDirectory(_ components: [String], layer: Int, path: String, create: Bool) throws(BuildError) -> TreeInode? {
        var current = root
        for component in components {
            if let next = current.children[component] {
                switch next.inode.type {
                case .directory: current = next.inode
                case .symlink: throw .unsafeEntry(layer: layer, path: path, reason: "a parent (\(component)) is a symlink")
                default: throw .unsafeEntry(layer: layer, path: path, reason: "a parent (\(component)) is not a directory")
                }
            } else {
                guard create else { return nil }
                let made = TreeInode(type: .directory, permissions: 0o755, uid: 0, gid: 0, mtime: 0, mtimeNanoseconds: 0, xattrs: [:])
                current.children[component] = TreeEntry(inode: made, layer: layer)
                current = made
            }
        }
        return current
    }

    private func resolveHardLink(_ target: String, layer: Int, path: String) throws(BuildError) -> TreeInode {
        let components = target.split(separator: "/").map(String.init)
        guard let name = components.last else {
            throw .badHardLink(layer: layer, path: path, target: target, reason: "the target is the root")
        }
        let parent: TreeInode?
        do throws(BuildError) {
            parent = try lookupDirectory(Array(components.dropLast()), layer: layer, path: target, create: false)
        } catch {
            throw .badHardLink(layer: layer, path: path, target: target, reason: "the target's parent is not a directory (or is a symlink)")
        }
        guard let entry = parent?.children[name] else {
            throw .badHardLink(layer: layer, path: path, target: target, reason: "the target does not exist")
        }
        guard entry.inode.type != .directory else {
            throw .badHardLink(layer: layer, path: path, target: target, reason: "the target is a directory")
        }
        return entry.inode
    }
}
