import CLinux
import LinuxKernel

/// One request of the seed design's devnode `/dev/cachefiles_ondemand` (patch series v2, never merged):
/// `struct cachefiles_req_in { u64 id; u64 off; u64 len; char path[255]; }`, mirrored in CLinux.h as
/// `clinux_cachefiles_req_in`. Little-endian, 280 bytes (the u64 alignment pads the 279 bytes of fields):
///
///     offset size field
///     0      8    id    answered by writing `done <id>`
///     8      8    off   first byte of the missing range
///     16     8    len   length of the range
///     24     255  path  the backing file's name inside its fan-out directory, NUL-terminated
///     279    1    (padding)
public struct SeedRequest: Equatable, Sendable {
    public static let size = MemoryLayout<clinux_cachefiles_req_in>.size
    public static let pathOffset = MemoryLayout<clinux_cachefiles_req_in>.offset(of: \.path) ?? 24
    public static let pathCapacity = 255

    public var id: UInt64
    public var offset: UInt64
    public var length: UInt64
    public var path: String

    public init(id: UInt64, offset: UInt64, length: UInt64, path: String) {
        self.id = id
        self.offset = offset
        self.length = length
        self.path = path
    }

    /// Parses one read of the devnode; the path ends at its first NUL (or at 255 bytes).
    public static func parse(_ bytes: [UInt8]) throws(FrontEndError) -> SeedRequest {
        guard bytes.count == size else { throw .badRequestSize(bytes.count) }
        let field = bytes[pathOffset..<(pathOffset + pathCapacity)]
        let name = field.prefix { $0 != 0 }
        guard !name.isEmpty, !name.contains(UInt8(ascii: "/")) else { throw .badRequestPath(Array(name)) }
        return SeedRequest(
            id: bytes.loadLE(UInt64.self, at: 0), offset: bytes.loadLE(UInt64.self, at: 8),
            length: bytes.loadLE(UInt64.self, at: 16), path: String(decoding: name, as: UTF8.self))
    }

    /// The wire form (what the devnode, or its emulation, hands to a read).
    public func encoded() throws(FrontEndError) -> [UInt8] {
        let name = Array(path.utf8)
        guard !name.isEmpty, name.count < Self.pathCapacity else { throw .badRequestPath(name) }
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.storeLE(id, at: 0)
        bytes.storeLE(offset, at: 8)
        bytes.storeLE(length, at: 16)
        bytes.replaceSubrange(Self.pathOffset..<(Self.pathOffset + name.count), with: name)
        return bytes
    }
}
