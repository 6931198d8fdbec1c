/// One slot of the EROFS device table (`extra_devices` slots from byte `devt_slotoff * 128`), 128 bytes.
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 64 | tag (RAFS v6: the blob id, 64 hex characters) |
/// | 64 | 4 | blocks (device size in fs blocks) |
/// | 68 | 4 | mapped_blkaddr (start in a flat address space, 0 when unused) |
/// | 72 | 56 | reserved |
public struct ErofsDeviceSlot: Equatable, Sendable {
    public static let size = 128

    public var tag: [UInt8]
    public var blocks: UInt32
    public var mappedBlockAddress: UInt32

    public init(decoding raw: LittleEndianBytes, at offset: Int = 0) throws(ImageFormatError) {
        tag = try raw.slice(offset, 64)
        blocks = try raw.u32(offset + 64)
        mappedBlockAddress = try raw.u32(offset + 68)
    }

    /// The tag as text up to its first NUL: nydus writes the blob id there.
    public var tagString: String {
        let end = tag.firstIndex(of: 0) ?? tag.count
        return String(decoding: tag[..<end], as: UTF8.self)
    }
}
