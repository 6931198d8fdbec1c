/// A GNU sparse file: its real size and the data segments the archive stores, in order; what lies between
/// them reads as zeros. The archive holds the segments' bytes back to back. `GNU tar --sparse` and bsdtar write
/// them for files with holes (VM images, database files, `/var/log/lastlog`).
///
/// Old GNU `S` entry (offsets in its 512-byte header; numbers octal, or base-256 as elsewhere):
///
///     386  4 x (12 offset, 12 numbytes)   the first segments
///     482  1                               isextended: extension blocks follow the header
///     483  12                              realsize
///
/// Each extension block: 21 x (12 offset, 12 numbytes) at 0, isextended at 504.
/// PAX 0.1: `GNU.sparse.map` = "offset,size,offset,size,...", `GNU.sparse.size`, `GNU.sparse.name`.
/// PAX 1.0: `GNU.sparse.realsize`, `GNU.sparse.name`; the entry's data starts with the map as decimal lines
/// (the segment count, then offset and size of each), padded to a whole block. PAX 0.0 repeats
/// `GNU.sparse.offset`/`numbytes` records, which no current tool writes; it is refused.
struct SparseFile: Equatable {
    struct Segment: Equatable {
        var offset: Int64
        var length: Int64
    }

    var realSize: Int64
    var segments: [Segment]
    /// Where the next read starts in the real file, and the first segment not wholly before it.
    var position: Int64 = 0
    var index = 0

    /// Most segments one file may have: the map is metadata and stays bounded like the rest.
    static let maximumSegments = 1 << 16

    /// The map must be ordered, inside the real size, and account for exactly the bytes the archive stores.
    func check(storedSize: Int64, limit: Int64, path: String) throws(ArchiveError) {
        guard realSize >= 0, realSize <= limit else { throw .absurdSize(path: path, size: realSize, limit: limit) }
        var end: Int64 = 0
        var stored: Int64 = 0
        for segment in segments {
            let (segmentEnd, overflow) = segment.offset.addingReportingOverflow(segment.length)
            guard segment.offset >= end, segment.length >= 0, !overflow, segmentEnd <= realSize else {
                throw .badPAXRecord(
                    path: path,
                    detail: "sparse segment \(segment.offset)+\(segment.length) overlaps another or passes the real size \(realSize)")
            }
            end = segmentEnd
            stored += segment.length
        }
        guard stored == storedSize else {
            throw .badPAXRecord(path: path, detail: "the sparse map accounts for \(stored) bytes, the archive stores \(storedSize)")
        }
    }

    /// A number of an old GNU sparse field: octal text, or base-256 when the top bit is set; nil when empty.
    static func number(_ bytes: ArraySlice<UInt8>, path: String) throws(ArchiveError) -> Int64? {
        if let first = bytes.first, first & 0x80 != 0 {
            var value: Int64 = 0
            for byte in bytes.dropFirst() {
                guard value <= (Int64.max >> 8) else { throw .badPAXRecord(path: path, detail: "a sparse map number overflows") }
                value = value << 8 | Int64(byte)
            }
            return value
        }
        let digits = bytes.drop { $0 == UInt8(ascii: " ") }.prefix { $0 != 0 && $0 != UInt8(ascii: " ") }
        if digits.isEmpty { return nil }
        guard let value = Int64(String(decoding: digits, as: UTF8.self), radix: 8) else {
            throw .badPAXRecord(path: path, detail: "a sparse map number is not octal")
        }
        return value
    }
}

extension TarReader {
    /// The map of an old GNU `S` entry: from its header, then from the extension blocks that follow it.
    func readGNUSparseMap(_ header: [UInt8], path: String) throws -> SparseFile {
        var segments: [SparseFile.Segment] = []
        func entries(_ block: [UInt8], at base: Int, count: Int) throws {
            for slot in 0..<count {
                let start = base + slot * 24
                guard let offset = try SparseFile.number(block[start..<(start + 12)], path: path),
                    let length = try SparseFile.number(block[(start + 12)..<(start + 24)], path: path)
                else { return }
                segments.append(SparseFile.Segment(offset: offset, length: length))
                guard segments.count <= SparseFile.maximumSegments else {
                    throw ArchiveError.badPAXRecord(path: path, detail: "more than \(SparseFile.maximumSegments) sparse segments")
                }
            }
        }
        try entries(header, at: 386, count: 4)
        let realSize = try SparseFile.number(header[483..<495], path: path) ?? 0
        var extended = header[482] != 0
        while extended {
            guard let block = try readBlock(allowEnd: false) else {
                throw ArchiveError.truncated(detail: "the archive ends inside a sparse map at byte \(offset)")
            }
            try entries(block, at: 0, count: 21)
            extended = block[504] != 0
        }
        return SparseFile(realSize: realSize, segments: segments)
    }

    /// The map of a PAX sparse entry (formats 0.1 and 1.0), nil when the records describe none. Format 1.0's
    /// map is read here from the start of the entry's data.
    func sparseFile(records: [String: String], path: String) throws -> SparseFile? {
        let major = records["GNU.sparse.major"]
        let minor = records["GNU.sparse.minor"]
        if major == "1" && minor == "0" {
            guard let text = records["GNU.sparse.realsize"], let realSize = Int64(text) else {
                throw ArchiveError.badPAXRecord(path: path, detail: "GNU sparse 1.0 entry without GNU.sparse.realsize")
            }
            return SparseFile(realSize: realSize, segments: try readSparseMapFromData(path: path))
        }
        if let map = records["GNU.sparse.map"] {
            guard let text = records["GNU.sparse.realsize"] ?? records["GNU.sparse.size"], let realSize = Int64(text) else {
                throw ArchiveError.badPAXRecord(path: path, detail: "GNU sparse 0.1 entry without its real size")
            }
            let numbers = try map.split(separator: ",").map { part throws(ArchiveError) -> Int64 in
                guard let value = Int64(part) else { throw .badPAXRecord(path: path, detail: "GNU.sparse.map holds \(part)") }
                return value
            }
            guard numbers.count % 2 == 0, numbers.count / 2 <= SparseFile.maximumSegments else {
                throw ArchiveError.badPAXRecord(path: path, detail: "GNU.sparse.map has \(numbers.count) numbers")
            }
            let segments = stride(from: 0, to: numbers.count, by: 2).map {
                SparseFile.Segment(offset: numbers[$0], length: numbers[$0 + 1])
            }
            return SparseFile(realSize: realSize, segments: segments)
        }
        if records["GNU.sparse.offset"] != nil || records["GNU.sparse.numblocks"] != nil || major != nil {
            throw ArchiveError.badPAXRecord(
                path: path, detail: "GNU sparse format \(major ?? "0").\(minor ?? "0") is not supported (0.1 and 1.0 are)")
        }
        return nil
    }

    /// Format 1.0's map: decimal lines at the start of the data, in whole blocks (counted out of `remaining`).
    private func readSparseMapFromData(path: String) throws -> [SparseFile.Segment] {
        var mapBytes: Int64 = 0
        var numbers: [Int64] = []
        var line: [UInt8] = []
        var wanted = 1
        // Each block's lines are parsed once, as it arrives; a number may span two blocks.
        while numbers.count < wanted {
            guard remaining >= Int64(Self.blockSize), mapBytes < Self.maximumMetadataSize else {
                throw ArchiveError.badPAXRecord(path: path, detail: "the GNU sparse 1.0 map does not end within the entry")
            }
            var block = [UInt8](repeating: 0, count: Self.blockSize)
            let n = try block.withUnsafeMutableBytes { try source.readFully(into: $0) }
            guard n == Self.blockSize else {
                throw ArchiveError.truncated(detail: "the archive ends inside a sparse map at byte \(offset)")
            }
            remaining -= Int64(n)
            offset += Int64(n)
            mapBytes += Int64(n)
            for byte in block where numbers.count < wanted {
                guard byte == UInt8(ascii: "\n") else {
                    line.append(byte)
                    continue
                }
                guard let value = Int64(String(decoding: line, as: UTF8.self)), value >= 0 else {
                    throw ArchiveError.badPAXRecord(path: path, detail: "the GNU sparse 1.0 map holds a non-number")
                }
                numbers.append(value)
                line = []
                if numbers.count == 1 {
                    guard value <= Int64(SparseFile.maximumSegments) else {
                        throw ArchiveError.badPAXRecord(path: path, detail: "more than \(SparseFile.maximumSegments) sparse segments")
                    }
                    wanted = 1 + 2 * Int(value)
                }
            }
        }
        return stride(from: 1, to: numbers.count, by: 2).map { SparseFile.Segment(offset: numbers[$0], length: numbers[$0 + 1]) }
    }

    /// `readData` for a sparse entry: zeros in holes, the stored bytes in segments.
    func readSparseData(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard var file = sparse, file.position < file.realSize, buffer.count > 0 else { return 0 }
        // Segments wholly behind the position (and empty ones it has reached) are done.
        while file.index < file.segments.count, file.segments[file.index].offset + file.segments[file.index].length <= file.position {
            file.index += 1
        }
        let n: Int
        if file.index < file.segments.count, file.segments[file.index].offset <= file.position {
            let segment = file.segments[file.index]
            let want = Int(min(Int64(buffer.count), segment.offset + segment.length - file.position))
            n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
            guard n > 0 else { throw ArchiveError.truncated(detail: "the archive ends inside an entry's data at byte \(offset)") }
            remaining -= Int64(n)
            offset += Int64(n)
        } else {
            let holeEnd = file.index < file.segments.count ? file.segments[file.index].offset : file.realSize
            n = Int(min(Int64(buffer.count), holeEnd - file.position))
            buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: n)
        }
        file.position += Int64(n)
        sparse = file
        return n
    }
}
