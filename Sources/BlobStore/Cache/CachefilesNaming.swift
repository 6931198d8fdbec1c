/// The names the kernel's cachefiles backend (fs/cachefiles, fed by fs/netfs/fscache_*) gives its files, so
/// the daemon's own tree (`cache/`), the seed devnode's prepared files and the kernel's `fscache/` directory all
/// agree on where a blob lives. Facts from Linux 6.12:
///
/// - Volume (fscache_volume.c, cachefiles/volume.c): the netfs volume key string (EROFS: `erofs,<domain_id or
///   fsid>`, fs/erofs/fscache.c) is stored as `[len: u8][bytes][NUL]` zero-padded to a multiple of 4 bytes; its
///   hash is `fscache_hash(salt 0)` over that padded buffer. The directory is `I` + the key bytes, never encoded.
/// - Cookie (fscache_cookie.c): the cookie key (EROFS: the fsid for the bootstrap, the device slot tag for each
///   extra device, without NUL) is zero-padded to a multiple of 4 bytes and hashed with the volume's hash as
///   salt. The fan-out directory is `@` + two lowercase hex digits of the low byte of that hash (namei.c).
/// - File name (cachefiles/key.c): `D` + the key when every byte is in `!`...`.` or `0`...DEL; otherwise the
///   shorter of big-endian (`S`) / little-endian (`T`) comma-separated hex words of the padded key (a zero
///   word prints nothing) when one of them is shorter than the base64 form, else `E<pad>` + a 6-bit encoding of
///   each 3-byte group (least significant bits first) with the alphabet `0-9a-zA-Z_-`.
///
/// `fscache_hash`: for each little-endian 32-bit word `a`: `x ^= a; y ^= x; x = rol(x, 7); x += y;
/// y = rol(y, 20); y *= 9`, starting from `x = 0, y = salt`; the result is `h(y ^ h(x))` with
/// `h(v) = v * 0x61C88647` (the generic `__hash_32`, arch-independent on purpose since it reaches the disk).
public enum CachefilesNaming {
    /// Longest cookie key cachefiles accepts (key.c: NAME_MAX - 3).
    public static let maximumCookieKeyLength = 252
    /// Longest volume key fscache accepts (NAME_MAX).
    public static let maximumVolumeKeyLength = 255

    /// The EROFS volume key for a mount with `domain_id=<domain>` (or, without a domain, `fsid=<domain>`).
    public static func volumeKey(domain: String) -> String {
        "erofs,\(domain)"
    }

    /// `I<volume>/@<xx>/<cooked cookie key>`, relative to the cache's `cache/` directory.
    public static func relativePath(volumeKey: String, cookieKey: [UInt8]) -> String {
        "\(volumeDirectoryName(volumeKey: volumeKey))/\(fanoutDirectoryName(volumeKey: volumeKey, cookieKey: cookieKey))/"
            + fileName(cookieKey: cookieKey)
    }

    /// The path of an EROFS blob (or bootstrap) whose cookie key is its id string, e.g. a blob digest.
    public static func relativePath(domain: String, blobID: String) -> String {
        relativePath(volumeKey: volumeKey(domain: domain), cookieKey: Array(blobID.utf8))
    }

    /// Throws when the kernel could not have made a name for these keys.
    public static func validate(volumeKey: String, cookieKey: [UInt8]) throws(BlobStoreError) {
        guard volumeKey.utf8.count <= maximumVolumeKeyLength else { throw .volumeKeyTooLong(volumeKey) }
        guard cookieKey.count <= maximumCookieKeyLength else { throw .cookieKeyTooLong(cookieKey) }
    }

    /// `I` + the volume key.
    public static func volumeDirectoryName(volumeKey: String) -> String {
        "I" + volumeKey
    }

    /// `@xx`: the low byte of the cookie hash.
    public static func fanoutDirectoryName(volumeKey: String, cookieKey: [UInt8]) -> String {
        let byte = UInt8(truncatingIfNeeded: cookieHash(volumeKey: volumeKey, cookieKey: cookieKey))
        return "@" + hex(byte, width: 2)
    }

    /// The volume's hash: fscache_hash(0, [len][key][NUL] padded to 4 bytes).
    public static func volumeHash(volumeKey: String) -> UInt32 {
        let bytes = Array(volumeKey.utf8)
        var buffer: [UInt8] = [UInt8(truncatingIfNeeded: bytes.count)] + bytes + [0]
        buffer += [UInt8](repeating: 0, count: paddedLength(buffer.count) - buffer.count)
        return fscacheHash(salt: 0, bytes: buffer)
    }

    /// The cookie's hash: fscache_hash(volume hash, key padded to 4 bytes).
    public static func cookieHash(volumeKey: String, cookieKey: [UInt8]) -> UInt32 {
        fscacheHash(salt: volumeHash(volumeKey: volumeKey), bytes: padded(cookieKey))
    }

    /// fscache_hash over whole little-endian words of `bytes` (a trailing partial word is ignored, as in the
    /// kernel, whose callers always pad).
    public static func fscacheHash(salt: UInt32, bytes: [UInt8]) -> UInt32 {
        var x: UInt32 = 0
        var y = salt
        var index = 0
        while index + 4 <= bytes.count {
            let word =
                UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2]) << 16
                | UInt32(bytes[index + 3]) << 24
            x ^= word
            y ^= x
            x = rotateLeft(x, 7)
            x &+= y
            y = rotateLeft(y, 20)
            y &*= 9
            index += 4
        }
        return goldenRatioHash(y ^ goldenRatioHash(x))
    }

    /// The cooked file name of a cookie key (key.c).
    public static func fileName(cookieKey key: [UInt8]) -> String {
        if key.allSatisfy(isRenderedDirectly) {
            return "D" + String(decoding: key, as: UTF8.self)
        }
        let words = wordCount(key.count)
        let paddedKey = padded(key)
        let bigEndian = (0..<words).map { word(paddedKey, at: $0 * 4, bigEndian: true) }
        let littleEndian = (0..<words).map { word(paddedKey, at: $0 * 4, bigEndian: false) }
        let bigLength = bigEndian.reduce(0) { $0 + 1 + hexDigitCount($1) }
        let littleLength = littleEndian.reduce(0) { $0 + 1 + hexDigitCount($1) }
        let groups = (key.count + 2) / 3
        let base64Length = 2 + groups * 4
        if bigLength < base64Length || littleLength < base64Length {
            let useBig = bigLength <= littleLength
            var name = ""
            for (position, value) in (useBig ? bigEndian : littleEndian).enumerated() {
                name += position == 0 ? (useBig ? "S" : "T") : ","
                if value != 0 { name += String(value, radix: 16) }
            }
            return name
        }
        return "E" + String(groups * 3 - key.count) + base64(key)
    }

    // MARK: - Pieces

    private static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-")

    /// key.c's printable set: `!` (33) to `.` (46), and `0` (48) to DEL (127); space, `/` and controls are not.
    private static func isRenderedDirectly(_ byte: UInt8) -> Bool {
        (33...46).contains(byte) || (48...127).contains(byte)
    }

    private static func base64(_ key: [UInt8]) -> String {
        var out = ""
        var index = 0
        repeat {
            var accumulator = UInt32(key.isEmpty ? 0 : key[index])
            index += 1
            if index < key.count {
                accumulator |= UInt32(key[index]) << 8
                index += 1
                if index < key.count {
                    accumulator |= UInt32(key[index]) << 16
                    index += 1
                }
            }
            for _ in 0..<4 {
                out.append(alphabet[Int(accumulator & 63)])
                accumulator >>= 6
            }
        } while index < key.count
        return out
    }

    private static func hexDigitCount(_ value: UInt32) -> Int {
        value == 0 ? 0 : (32 - value.leadingZeroBitCount + 3) / 4
    }

    private static func word(_ bytes: [UInt8], at index: Int, bigEndian: Bool) -> UInt32 {
        let b = (0..<4).map { UInt32(bytes[index + $0]) }
        return bigEndian ? b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3] : b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24
    }

    private static func wordCount(_ length: Int) -> Int { (length + 3) / 4 }

    private static func paddedLength(_ length: Int) -> Int { wordCount(length) * 4 }

    private static func padded(_ bytes: [UInt8]) -> [UInt8] {
        bytes + [UInt8](repeating: 0, count: paddedLength(bytes.count) - bytes.count)
    }

    private static func rotateLeft(_ value: UInt32, _ count: UInt32) -> UInt32 {
        value << count | value >> (32 - count)
    }

    private static func goldenRatioHash(_ value: UInt32) -> UInt32 {
        value &* 0x61C8_8647
    }

    private static func hex(_ value: UInt8, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
