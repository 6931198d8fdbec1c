/// One file of an image as a listing shows it: the inode's attributes plus its path, symlink target and
/// extended attributes.
public struct ErofsEntry: Equatable, Sendable {
    /// Absolute path inside the image, `/` for the root.
    public var path: String
    public var nid: UInt64
    public var type: ErofsFileType
    /// Full `i_mode`, type bits included.
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var mtime: UInt64
    public var mtimeNanoseconds: UInt32
    public var nlink: UInt32
    /// Device number in the kernel's "new" encoding, for character and block devices; 0 otherwise.
    public var rdev: UInt32
    public var symlinkTarget: String?
    public var xattrs: [ErofsXattr]
    public var dataLayout: UInt8

    /// Permission bits including setuid/setgid/sticky.
    public var permissions: UInt16 { mode & 0o7777 }
    /// Major number from `rdev` (bits 8-19).
    public var rdevMajor: UInt32 { (rdev & 0xFFF00) >> 8 }
    /// Minor number from `rdev` (bits 0-7 and 20-31).
    public var rdevMinor: UInt32 { (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00) }
}

/// Random access to the bytes of one device of an image (a data blob in its uncompressed form).
public protocol ErofsDeviceReader: Sendable {
    func readDevice(at offset: UInt64, count: Int) throws(ImageFormatError) -> [UInt8]
}

extension ImageFile: ErofsDeviceReader {
    /// A materialized (uncompressed) blob file read as the device: what the kernel reads with `device=`.
    public func readDevice(at offset: UInt64, count: Int) throws(ImageFormatError) -> [UInt8] {
        try read(at: offset, count: count, what: "device data")
    }
}
