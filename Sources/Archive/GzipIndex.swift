import CZlib

/// A place inside a gzip member where inflating can start without the bytes before it: a deflate block
/// boundary, the bits of its last input byte still unused there, and the output history (up to 32 KiB) that
/// the blocks after it may refer back to. The idea is zlib's `examples/zran.c`; SOCI and nydus's zran mode
/// index gzip layers the same way.
public struct GzipCheckpoint: Equatable, Sendable {
    /// Input bytes consumed at the boundary (gzip header included). When `bits` is not 0, the byte before it
    /// still holds `bits` unused high bits that belong to the next block.
    public var compressedOffset: UInt64
    /// Output bytes produced before the boundary.
    public var uncompressedOffset: UInt64
    public var bits: UInt8
    /// The last `min(32 KiB, uncompressedOffset)` output bytes before the boundary.
    public var window: [UInt8]

    public init(compressedOffset: UInt64, uncompressedOffset: UInt64, bits: UInt8, window: [UInt8]) {
        self.compressedOffset = compressedOffset
        self.uncompressedOffset = uncompressedOffset
        self.bits = bits
        self.window = window
    }

    /// Where a fetch that inflates from this checkpoint starts: one byte early when bits of it are unused.
    public var fetchStart: UInt64 { compressedOffset - (bits > 0 ? 1 : 0) }
}

/// The checkpoints of one single-member gzip stream, about every `span` bytes of output, and how a range of
/// the output maps to a range of the input.
///
/// Encoded (little-endian), so that a reader can load the table and read one window at a time:
///
///     0   magic "ODGZIDX1"        8
///     8   span                    u64
///     16  compressed size         u64   (the whole gzip stream)
///     24  uncompressed size       u64
///     32  checkpoint count        u32
///     36  reserved (0)            u32
///     40  count x 32-byte entries:
///           +0  compressed offset   u64
///           +8  uncompressed offset u64
///           +16 window offset       u64   (from the start of the encoding)
///           +24 window size         u32   (at most 32768)
///           +28 bits                u8    (0...7)
///           +29 reserved            3
///     then the windows, in checkpoint order
public struct GzipIndex: Equatable, Sendable {
    /// Where a checkpoint's window lies in the encoding.
    public struct WindowLocation: Equatable, Sendable {
        public var offset: UInt64
        public var size: Int
    }

    public static let magic = Array("ODGZIDX1".utf8)
    public static let headerSize = 40
    public static let entrySize = 32
    /// The deflate window: no back-reference reaches further.
    public static let windowSize = Int(czlib_window_size())
    /// Most checkpoints accepted when decoding (a 1 TiB layer at a 1 MiB span).
    public static let maximumCheckpoints = 1 << 20

    public var span: UInt64
    public var compressedSize: UInt64
    public var uncompressedSize: UInt64
    public var checkpoints: [GzipCheckpoint]

    public init(span: UInt64, compressedSize: UInt64, uncompressedSize: UInt64, checkpoints: [GzipCheckpoint]) {
        self.span = span
        self.compressedSize = compressedSize
        self.uncompressedSize = uncompressedSize
        self.checkpoints = checkpoints
    }

    /// The last checkpoint at or before uncompressed `offset` (the first one is at 0, so there always is one).
    public func checkpoint(before offset: UInt64) -> Int {
        var low = 0
        var high = checkpoints.count
        while high - low > 1 {
            let middle = (low + high) / 2
            if checkpoints[middle].uncompressedOffset <= offset { low = middle } else { high = middle }
        }
        return low
    }

    /// The input bytes that suffice to produce the output up to uncompressed `end`: those before the first
    /// checkpoint at or after it (its block boundary lies in them), or the whole stream.
    public func compressedEnd(covering end: UInt64) -> UInt64 {
        for checkpoint in checkpoints[checkpoint(before: end)...] where checkpoint.uncompressedOffset >= end {
            return checkpoint.compressedOffset
        }
        return compressedSize
    }

    public func encoded() -> [UInt8] {
        var bytes = Self.magic
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        put(span)
        put(compressedSize)
        put(uncompressedSize)
        put(UInt32(checkpoints.count))
        put(UInt32(0))
        var windowOffset = UInt64(Self.headerSize + checkpoints.count * Self.entrySize)
        for checkpoint in checkpoints {
            put(checkpoint.compressedOffset)
            put(checkpoint.uncompressedOffset)
            put(windowOffset)
            put(UInt32(checkpoint.window.count))
            put(checkpoint.bits)
            bytes.append(contentsOf: [0, 0, 0])
            windowOffset += UInt64(checkpoint.window.count)
        }
        for checkpoint in checkpoints { bytes.append(contentsOf: checkpoint.window) }
        return bytes
    }

    /// Where each checkpoint's window lies in the encoding, when only the table was decoded
    /// (`init(decodingTable:encodedSize:)`: the windows are then read one at a time, by whoever holds the
    /// encoding); empty otherwise.
    public private(set) var windowLocations: [WindowLocation] = []

    /// Decodes and checks an encoding: checkpoints in increasing order inside the stream, the first at the
    /// start of the output, windows inside the encoding and no larger than what precedes their checkpoint.
    public init(decoding bytes: [UInt8]) throws(ArchiveError) {
        try self.init(decodingTable: bytes, encodedSize: UInt64(bytes.count))
        checkpoints = zip(checkpoints, windowLocations).map { checkpoint, location in
            var full = checkpoint
            full.window = Array(bytes[Int(location.offset)..<Int(location.offset) + location.size])
            return full
        }
        windowLocations = []
    }

    /// The size of the header and table of an encoding whose first bytes are `prefix` (at least `headerSize`).
    public static func tableSize(prefix: [UInt8]) throws(ArchiveError) -> Int {
        guard prefix.count >= headerSize, Array(prefix[0..<8]) == magic else { throw .badGzipIndex(detail: "not a gzip index (bad magic)") }
        let count = (0..<4).reduce(0) { $0 | Int(prefix[32 + $1]) << (8 * $1) }
        guard count >= 1, count <= maximumCheckpoints else { throw .badGzipIndex(detail: "\(count) checkpoints") }
        return headerSize + count * entrySize
    }

    /// Decodes the header and the table only (`bytes` holds at least them; the whole encoding is
    /// `encodedSize` bytes): checkpoints without their windows, whose places are in `windowLocations`.
    public init(decodingTable bytes: [UInt8], encodedSize: UInt64) throws(ArchiveError) {
        func bad(_ detail: String) -> ArchiveError { .badGzipIndex(detail: detail) }
        guard bytes.count >= Self.headerSize, Array(bytes[0..<8]) == Self.magic else { throw bad("not a gzip index (bad magic)") }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
        span = u64(8)
        compressedSize = u64(16)
        uncompressedSize = u64(24)
        let count = Int(u32(32))
        guard count >= 1, count <= Self.maximumCheckpoints, Self.headerSize + count * Self.entrySize <= bytes.count,
            UInt64(bytes.count) <= encodedSize
        else {
            throw bad("\(count) checkpoints do not fit in \(bytes.count) bytes")
        }
        var checkpoints: [GzipCheckpoint] = []
        var locations: [WindowLocation] = []
        checkpoints.reserveCapacity(count)
        for index in 0..<count {
            let at = Self.headerSize + index * Self.entrySize
            let (compressed, uncompressed, windowOffset) = (u64(at), u64(at + 8), u64(at + 16))
            let windowSize = UInt64(u32(at + 24))
            let bits = bytes[at + 28]
            guard bits < 8, compressed <= compressedSize, uncompressed <= uncompressedSize, windowSize <= UInt64(Self.windowSize),
                windowSize <= uncompressed, windowOffset <= encodedSize, windowSize <= encodedSize - windowOffset
            else { throw bad("checkpoint \(index) is out of range") }
            if let previous = checkpoints.last {
                guard compressed > previous.compressedOffset, uncompressed > previous.uncompressedOffset else {
                    throw bad("checkpoint \(index) does not follow checkpoint \(index - 1)")
                }
            } else {
                guard uncompressed == 0, bits == 0 else { throw bad("the first checkpoint is not at the start of the output") }
            }
            guard compressed > 0 || bits == 0 else { throw bad("checkpoint \(index) has unused bits before the stream") }
            checkpoints.append(GzipCheckpoint(compressedOffset: compressed, uncompressedOffset: uncompressed, bits: bits, window: []))
            locations.append(WindowLocation(offset: windowOffset, size: Int(windowSize)))
        }
        self.checkpoints = checkpoints
        windowLocations = locations
    }
}

/// Collects checkpoints while a `GzipByteSource` inflates a stream.
public final class GzipIndexRecorder {
    public let span: UInt64
    private(set) var checkpoints: [GzipCheckpoint] = []
    private(set) var compressedSize: UInt64 = 0
    private(set) var uncompressedSize: UInt64 = 0
    /// Why the stream cannot be indexed (several members), if it cannot.
    private(set) var refusal: String?
    private var ended = false

    public init(span: UInt64) {
        self.span = max(span, 64 << 10)
    }

    /// Called at every block boundary the inflater stops at.
    func boundary(compressed: UInt64, uncompressed: UInt64, bits: UInt8, window: () -> [UInt8]) {
        guard refusal == nil else { return }
        if let last = checkpoints.last {
            guard uncompressed >= last.uncompressedOffset + span else { return }
        } else {
            guard uncompressed == 0 else { return }
        }
        checkpoints.append(GzipCheckpoint(compressedOffset: compressed, uncompressedOffset: uncompressed, bits: bits, window: window()))
    }

    func memberEnded(compressed: UInt64, uncompressed: UInt64) {
        if ended { refusal = "the stream has several gzip members" }
        ended = true
        compressedSize = compressed
        uncompressedSize = uncompressed
    }

    /// The index of the whole stream, once it has been read to its end.
    public func finish() throws(ArchiveError) -> GzipIndex {
        if let refusal { throw .badGzipIndex(detail: "cannot index: \(refusal)") }
        guard ended, !checkpoints.isEmpty else { throw .badGzipIndex(detail: "cannot index: the gzip stream was not read to its end") }
        return GzipIndex(span: span, compressedSize: compressedSize, uncompressedSize: uncompressedSize, checkpoints: checkpoints)
    }
}
