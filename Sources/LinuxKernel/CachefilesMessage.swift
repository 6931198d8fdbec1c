import CLinux

/// One message read from /dev/cachefiles in on-demand mode (include/uapi/linux/cachefiles.h), parsed with
/// explicit little-endian reads. Layout (`struct cachefiles_msg` and payloads, mirrored in CLinux.h):
///
///     offset size field
///     0      4    msg_id      (the id to answer with: copen / READ_COMPLETE)
///     4      4    opcode      0 OPEN, 1 CLOSE, 2 READ
///     8      4    len         whole message, header included (at most CACHEFILES_MSG_MAX_SIZE = 1024)
///     12     4    object_id   the cache object (one per cookie, renewed when reopened)
///     OPEN:  16 u32 volume_key_size, 20 u32 cookie_key_size, 24 u32 fd, 28 u32 flags,
///            32 volume key (NUL-terminated, size includes the NUL), then the cookie key (binary)
///     READ:  16 u64 off, 24 u64 len
///     CLOSE: no payload
public enum CachefilesMessage: Equatable, Sendable {
    case open(CachefilesOpen)
    case close(messageID: UInt32, objectID: UInt32)
    case read(messageID: UInt32, objectID: UInt32, offset: UInt64, length: UInt64)

    public static let headerSize = MemoryLayout<clinux_cachefiles_msg>.size
    public static let maximumSize = Int(clinux_cachefiles_msg_max_size())

    public var messageID: UInt32 {
        switch self {
        case .open(let open): return open.messageID
        case .close(let id, _), .read(let id, _, _, _): return id
        }
    }

    /// Parses one message as returned by one read(2). Every length is checked against the bytes present.
    public static func parse(_ bytes: [UInt8]) throws(KernelError) -> CachefilesMessage {
        guard bytes.count >= headerSize else { throw .messageTruncated(bytes.count) }
        let messageID = bytes.loadLE(UInt32.self, at: 0)
        let opcode = bytes.loadLE(UInt32.self, at: 4)
        let length = bytes.loadLE(UInt32.self, at: 8)
        let objectID = bytes.loadLE(UInt32.self, at: 12)
        guard Int(length) == bytes.count, bytes.count <= maximumSize else {
            throw .lengthMismatch(messageID: messageID, declared: length, read: bytes.count)
        }
        switch Int32(bitPattern: opcode) {
        case clinux_cachefiles_op_open():
            let payload = headerSize + MemoryLayout<clinux_cachefiles_open>.size
            guard bytes.count >= payload else { throw .messageTruncated(bytes.count) }
            let volumeSize = Int(bytes.loadLE(UInt32.self, at: headerSize))
            let cookieSize = Int(bytes.loadLE(UInt32.self, at: headerSize + 4))
            let fd = Int32(bitPattern: bytes.loadLE(UInt32.self, at: headerSize + 8))
            let flags = bytes.loadLE(UInt32.self, at: headerSize + 12)
            guard volumeSize >= 1, volumeSize <= bytes.count, cookieSize <= bytes.count,
                payload + volumeSize + cookieSize == bytes.count
            else {
                throw .keySizes(messageID: messageID, volume: volumeSize, cookie: cookieSize, fd: fd)
            }
            var volume = Array(bytes[payload..<(payload + volumeSize)])
            if volume.last == 0 { volume.removeLast() }
            let cookie = Array(bytes[(payload + volumeSize)...])
            return .open(
                CachefilesOpen(
                    messageID: messageID, objectID: objectID, volumeKey: String(decoding: volume, as: UTF8.self),
                    cookieKey: cookie, fd: fd, flags: flags))
        case clinux_cachefiles_op_close():
            return .close(messageID: messageID, objectID: objectID)
        case clinux_cachefiles_op_read():
            guard bytes.count >= headerSize + MemoryLayout<clinux_cachefiles_read>.size else { throw .messageTruncated(bytes.count) }
            return .read(
                messageID: messageID, objectID: objectID, offset: bytes.loadLE(UInt64.self, at: headerSize),
                length: bytes.loadLE(UInt64.self, at: headerSize + 8))
        default:
            throw .unknownOpcode(messageID: messageID, opcode: opcode)
        }
    }
}

/// The OPEN message: the kernel has installed `fd` (an anonymous fd onto the cache file) in our fd table.
public struct CachefilesOpen: Equatable, Sendable {
    public var messageID: UInt32
    public var objectID: UInt32
    /// Without its trailing NUL, e.g. `erofs,<domain>`.
    public var volumeKey: String
    public var cookieKey: [UInt8]
    public var fd: Int32
    public var flags: UInt32

    public init(messageID: UInt32, objectID: UInt32, volumeKey: String, cookieKey: [UInt8], fd: Int32, flags: UInt32) {
        self.messageID = messageID
        self.objectID = objectID
        self.volumeKey = volumeKey
        self.cookieKey = cookieKey
        self.fd = fd
        self.flags = flags
    }
}
