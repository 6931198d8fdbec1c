/// A bounds-checked little-endian view of a byte buffer. The on-disk structs decode themselves through this
/// one type, byte by byte, so nothing depends on host struct layout or alignment.
///
/// Structs are decoded only after the caller has read exactly their size; reading a field past the end is
/// a programming error in a decoder, reported as `ImageFormatError.truncated` rather than trapping.
public struct LittleEndianBytes: Sendable {
    public let bytes: [UInt8]
    /// What the bytes are, for error messages.
    public let what: String

    public init(_ bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.what = what
    }

    public var count: Int { bytes.count }

    @inline(__always)
    private func check(_ offset: Int, _ length: Int) throws(ImageFormatError) {
        guard offset >= 0, length >= 0, offset <= bytes.count, length <= bytes.count - offset else {
            throw .truncated(
                what: what, needed: UInt64(max(0, offset)) + UInt64(max(0, length)),
                available: UInt64(bytes.count))
        }
    }

    public func u8(_ offset: Int) throws(ImageFormatError) -> UInt8 {
        try check(offset, 1)
        return bytes[offset]
    }

    public func u16(_ offset: Int) throws(ImageFormatError) -> UInt16 {
        try check(offset, 2)
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    public func u32(_ offset: Int) throws(ImageFormatError) -> UInt32 {
        try check(offset, 4)
        var value: UInt32 = 0
        for index in (0..<4).reversed() { value = value << 8 | UInt32(bytes[offset + index]) }
        return value
    }

    public func u64(_ offset: Int) throws(ImageFormatError) -> UInt64 {
        try check(offset, 8)
        var value: UInt64 = 0
        for index in (0..<8).reversed() { value = value << 8 | UInt64(bytes[offset + index]) }
        return value
    }

    public func slice(_ offset: Int, _ length: Int) throws(ImageFormatError) -> [UInt8] {
        try check(offset, length)
        return Array(bytes[offset..<offset + length])
    }

    /// A fixed-size text field: the bytes up to the first NUL, as UTF-8 (invalid sequences repaired).
    public func cString(_ offset: Int, _ length: Int) throws(ImageFormatError) -> String {
        let field = try slice(offset, length)
        let end = field.firstIndex(of: 0) ?? field.count
        return String(decoding: field[..<end], as: UTF8.self)
    }
}
