/// Messages as the kernel's cachefiles on-demand device writes them (`struct cachefiles_msg` and its open
/// and read payloads, little-endian), for tests that play the kernel.
package enum CachefilesWire {
    package static func header(id: UInt32, opcode: UInt32, length: Int, object: UInt32) -> [UInt8] {
        [id, opcode, UInt32(length), object].flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    }

    package static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    package static func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    package static func openMessage(
        volume: String, cookie: [UInt8], fd: UInt32 = 9, volumeSize: Int? = nil, cookieSize: Int? = nil
    ) -> [UInt8] {
        let volumeBytes = Array(volume.utf8) + [0]
        let payload =
            le32(UInt32(volumeSize ?? volumeBytes.count)) + le32(UInt32(cookieSize ?? cookie.count)) + le32(fd) + le32(0) + volumeBytes
            + cookie
        return header(id: 4, opcode: 0, length: 16 + payload.count, object: 7) + payload
    }
}
