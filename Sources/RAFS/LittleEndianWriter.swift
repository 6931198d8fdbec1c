/// The writing counterpart of `LittleEndianBytes`: a growable byte buffer that on-disk structs encode
/// themselves into, field by field at explicit offsets, independent of host layout.
public struct LittleEndianWriter: Sendable {
    public private(set) var bytes: [UInt8]

    /// A zero-filled buffer of `count` bytes.
    public init(count: Int) {
        bytes = [UInt8](repeating: 0, count: count)
    }

    public var count: Int { bytes.count }

    /// Grows the buffer with zeros so that `offset + length` bytes exist.
    @inline(__always)
    private mutating func reserve(_ offset: Int, _ length: Int) {
        if offset + length > bytes.count { bytes.append(contentsOf: repeatElement(0, count: offset + length - bytes.count)) }
    }

    public mutating func u8(_ value: UInt8, at offset: Int) {
        reserve(offset, 1)
        bytes[offset] = value
    }

    public mutating func u16(_ value: UInt16, at offset: Int) {
        reserve(offset, 2)
        bytes[offset] = UInt8(truncatingIfNeeded: value)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
    }

    public mutating func u32(_ value: UInt32, at offset: Int) {
        reserve(offset, 4)
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index))) }
    }

    public mutating func u64(_ value: UInt64, at offset: Int) {
        reserve(offset, 8)
        for index in 0..<8 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
    }

    /// Copies `value` at `offset`, truncated or zero-padded to `length` bytes when a length is given.
    public mutating func raw(_ value: some Collection<UInt8>, at offset: Int, length: Int? = nil) {
        let size = length ?? value.count
        reserve(offset, size)
        var position = offset
        for byte in value.prefix(size) {
            bytes[position] = byte
            position += 1
        }
    }

    /// Appends `value` at the end.
    public mutating func append(_ value: some Collection<UInt8>) {
        bytes.append(contentsOf: value)
    }

    /// Pads with zeros to a multiple of `alignment`.
    public mutating func align(to alignment: Int) {
        let remainder = bytes.count % alignment
        if remainder != 0 { bytes.append(contentsOf: repeatElement(0, count: alignment - remainder)) }
    }
}
