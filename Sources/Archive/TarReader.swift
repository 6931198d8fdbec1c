/// Reads a tar stream entry by entry without extracting it: POSIX ustar, PAX extended headers (`x`, `g`:
/// path, linkpath, size, uid, gid, mtime, SCHILY.xattr.*), GNU long names (`L`, `K`), base-256 numbers and GNU
/// sparse files (old GNU `S` entries, PAX formats 0.1 and 1.0; see `SparseFile`).
///
/// Hostile input is refused with a `ArchiveError`: bad checksums, absolute or `..` paths, sizes over the
/// limit, an archive that ends inside an entry. Nothing is ever written anywhere.
public final class TarReader {
    public static let blockSize = 512
    /// Largest PAX or GNU long-name payload accepted; also the most all such headers before one entry may
    /// add up to, and the most the global PAX records may hold, so that header after header cannot grow memory.
    public static let maximumMetadataSize: Int64 = 1 << 20

    let source: ByteSource
    let maximumEntrySize: Int64
    var offset: Int64 = 0
    /// Data bytes of the current entry not yet read, and its padding.
    var remaining: Int64 = 0
    /// The current entry's holes and data segments when it is a GNU sparse file; nil otherwise.
    var sparse: SparseFile?
    private var padding: Int64 = 0
    private var globalPAX: [String: [UInt8]] = [:]
    private var ended = false

    public init(_ source: ByteSource, maximumEntrySize: Int64 = 1 << 40) {
        self.source = source
        self.maximumEntrySize = maximumEntrySize
    }

    /// Opens a layer file, detecting gzip or zstd compression from its first bytes.
    public static func open(path: String, maximumEntrySize: Int64 = 1 << 40) throws -> TarReader {
        TarReader(try LayerCompression.decompressing(FileByteSource(path: path)), maximumEntrySize: maximumEntrySize)
    }

    /// The next entry, or nil at the end of the archive. Unread data of the previous entry is skipped.
    public func next() throws -> TarEntry? {
        if ended { return nil }
        try skipRemainder()
        var pax: [String: [UInt8]] = [:]
        var longName: String?
        var longLink: String?
        var metadataBytes: Int64 = 0
        while true {
            let headerOffset = offset
            guard let header = try readBlock(allowEnd: true) else {
                // EOF without the two zero blocks: accepted only on an entry boundary (as GNU tar does).
                ended = true
                return nil
            }
            if header.allSatisfy({ $0 == 0 }) {
                ended = true
                return nil
            }
            let fields = try TarHeader(header, offset: headerOffset)
            if [UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K")].contains(fields.typeflag) {
                metadataBytes += max(0, fields.size)
                guard metadataBytes <= Self.maximumMetadataSize else {
                    throw ArchiveError.absurdSize(path: fields.name, size: metadataBytes, limit: Self.maximumMetadataSize)
                }
            }
            switch fields.typeflag {
            case UInt8(ascii: "x"), UInt8(ascii: "g"):
                let records = try parsePAX(try readMetadata(size: fields.size, what: "PAX header", path: fields.name), path: fields.name)
                if fields.typeflag == UInt8(ascii: "g") {
                    globalPAX.merge(records) { $1 }
                    let globalBytes = globalPAX.reduce(0) { $0 + Int64($1.key.utf8.count + $1.value.count) }
                    guard globalBytes <= Self.maximumMetadataSize else {
                        throw ArchiveError.absurdSize(path: fields.name, size: globalBytes, limit: Self.maximumMetadataSize)
                    }
                } else {
                    pax.merge(records) { $1 }
                }
                continue
            case UInt8(ascii: "L"):
                longName = Self.cString(try readMetadata(size: fields.size, what: "GNU long name", path: fields.name))
                continue
            case UInt8(ascii: "K"):
                longLink = Self.cString(try readMetadata(size: fields.size, what: "GNU long link", path: fields.name))
                continue
            default:
                break
            }
            let records = globalPAX.merging(pax) { $1 }
            // An old GNU sparse entry: its map is in the header and the extension blocks that follow it.
            let gnuMap = fields.typeflag == UInt8(ascii: "S") ? try readGNUSparseMap(header, path: fields.name) : nil
            return try makeEntry(
                fields, records: records, longName: longName, longLink: longLink, headerOffset: headerOffset, gnuSparse: gnuMap)
        }
    }

    /// Offset in the (uncompressed) archive of the current entry's next data byte, or nil for a sparse entry,
    /// whose data is not one run of the archive.
    public var dataOffset: Int64? { sparse == nil ? offset : nil }

    /// Reads the current entry's data; 0 at its end.
    public func readData(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if sparse != nil { return try readSparseData(into: buffer) }
        guard remaining > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), remaining))
        let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        guard n > 0 else { throw ArchiveError.truncated(detail: "the archive ends inside an entry's data at byte \(offset)") }
        remaining -= Int64(n)
        offset += Int64(n)
        return n
    }

    // MARK: - Internals

    private func makeEntry(
        _ fields: TarHeader,
        records raw: [String: [UInt8]],
        longName: String?,
        longLink: String?,
        headerOffset: Int64,
        gnuSparse: SparseFile?
    ) throws -> TarEntry {
        // Values stay bytes until here: xattr values are binary (capabilities, ACLs), the rest is text.
        let records = raw.mapValues { String(decoding: $0, as: UTF8.self) }
        // PAX sparse files carry their real name apart (the header names a GNUSparseFile.<pid> stand-in).
        let rawPath = records["GNU.sparse.name"] ?? records["path"] ?? longName ?? fields.name
        let rawLink = records["linkpath"] ?? longLink ?? fields.linkName
        let kind: TarEntry.Kind
        switch fields.typeflag {
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): kind = rawPath.hasSuffix("/") ? .directory : .regular
        case UInt8(ascii: "S"): kind = .regular
        case UInt8(ascii: "1"): kind = .hardlink
        case UInt8(ascii: "2"): kind = .symlink
        case UInt8(ascii: "3"): kind = .characterDevice
        case UInt8(ascii: "4"): kind = .blockDevice
        case UInt8(ascii: "5"): kind = .directory
        case UInt8(ascii: "6"): kind = .fifo
        default: throw ArchiveError.unsupportedEntry(path: rawPath, typeflag: fields.typeflag)
        }
        var size = fields.size
        if let text = records["size"] {
            guard let value = Int64(text), value >= 0 else { throw ArchiveError.badPAXRecord(path: rawPath, detail: "size \(text)") }
            size = value
        }
        guard size <= maximumEntrySize else { throw ArchiveError.absurdSize(path: rawPath, size: size, limit: maximumEntrySize) }
        var entry = TarEntry(path: try Self.normalize(rawPath), kind: kind)
        entry.mode = fields.mode & 0o7777
        entry.uid = try Self.id(records["uid"], fallback: fields.uid, name: "uid", path: rawPath)
        entry.gid = try Self.id(records["gid"], fallback: fields.gid, name: "gid", path: rawPath)
        entry.mtimeSeconds = fields.mtime
        if let text = records["mtime"] {
            let parts = text.split(separator: ".", maxSplits: 1)
            guard let seconds = Int64(parts[0]) else { throw ArchiveError.badPAXRecord(path: rawPath, detail: "mtime \(text)") }
            entry.mtimeSeconds = seconds
            if parts.count == 2 {
                let digits = String(parts[1].prefix(9))
                let padded = digits + String(repeating: "0", count: 9 - digits.count)
                guard let nanos = UInt32(padded) else { throw ArchiveError.badPAXRecord(path: rawPath, detail: "mtime \(text)") }
                entry.mtimeNanoseconds = nanos
            }
        }
        switch kind {
        case .hardlink: entry.linkTarget = try Self.normalize(rawLink)
        case .symlink:
            guard !rawLink.isEmpty, !rawLink.utf8.contains(0) else {
                throw ArchiveError.unsafePath(rawPath, reason: "symlink with an empty or NUL-containing target")
            }
            entry.linkTarget = rawLink
        default: break
        }
        entry.deviceMajor = UInt32(truncatingIfNeeded: fields.deviceMajor)
        entry.deviceMinor = UInt32(truncatingIfNeeded: fields.deviceMinor)
        for (key, value) in raw where key.hasPrefix("SCHILY.xattr.") {
            entry.xattrs[String(key.dropFirst("SCHILY.xattr.".count))] = value
        }
        // Only regular files carry data; anything else with a size is skipped over.
        entry.size = kind == .regular ? size : 0
        remaining = size
        padding = (Int64(Self.blockSize) - size % Int64(Self.blockSize)) % Int64(Self.blockSize)
        sparse = nil
        if kind != .regular { try skipRemainder() }
        if kind == .regular, let map = try gnuSparse ?? sparseFile(records: records, path: rawPath) {
            try map.check(storedSize: remaining, limit: maximumEntrySize, path: rawPath)
            sparse = map
            entry.size = map.realSize
        }
        return entry
    }

    /// Normalizes a member path (or a hard link's target, which names a member) to a path relative to the
    /// layer's root: strips `./` and leading slashes, collapses `//` and `.`; refuses `..` components and NUL
    /// bytes. A leading slash names the layer's root, as containerd and Docker apply layers: umoci writes the
    /// root itself as `/` and `umoci insert` at a path writes absolute names.
    static func normalize(_ raw: String) throws(ArchiveError) -> String {
        if raw.utf8.contains(0) { throw .unsafePath(raw, reason: "contains a NUL byte") }
        var parts: [Substring] = []
        for part in raw.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { throw .unsafePath(raw, reason: "contains a .. component") }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }

    private static func id(_ text: String?, fallback: Int64, name: String, path: String) throws(ArchiveError) -> UInt32 {
        let value = text.flatMap { Int64($0) } ?? fallback
        if text != nil && Int64(text!) == nil { throw .badPAXRecord(path: path, detail: "\(name) \(text!)") }
        guard value >= 0 && value <= Int64(UInt32.max) else { throw .badPAXRecord(path: path, detail: "\(name) \(value) out of range") }
        return UInt32(value)
    }

    private static func cString(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Parses `"<len> <key>=<value>\n"` records.
    private func parsePAX(_ bytes: [UInt8], path: String) throws -> [String: [UInt8]] {
        var records: [String: [UInt8]] = [:]
        var index = 0
        while index < bytes.count {
            if bytes[index] == 0 { break }
            guard let space = bytes[index...].firstIndex(of: UInt8(ascii: " ")),
                let length = Int(String(decoding: bytes[index..<space], as: UTF8.self)),
                length > space - index, index + length <= bytes.count, bytes[index + length - 1] == UInt8(ascii: "\n")
            else { throw ArchiveError.badPAXRecord(path: path, detail: "malformed record at byte \(index)") }
            let record = bytes[(space + 1)..<(index + length - 1)]
            guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else {
                throw ArchiveError.badPAXRecord(path: path, detail: "record without = at byte \(index)")
            }
            let key = String(decoding: record[record.startIndex..<equals], as: UTF8.self)
            records[key] = Array(record[(equals + 1)...])
            index += length
        }
        return records
    }

    private func readMetadata(size: Int64, what: String, path: String) throws -> [UInt8] {
        guard size <= Self.maximumMetadataSize else {
            throw ArchiveError.absurdSize(path: path, size: size, limit: Self.maximumMetadataSize)
        }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        let n = try bytes.withUnsafeMutableBytes { try source.readFully(into: $0) }
        guard n == Int(size) else { throw ArchiveError.truncated(detail: "the archive ends inside a \(what)") }
        offset += size
        remaining = 0
        padding = (Int64(Self.blockSize) - size % Int64(Self.blockSize)) % Int64(Self.blockSize)
        try skipRemainder()
        return bytes
    }

    private func skipRemainder() throws {
        var total = remaining + padding
        guard total > 0 else { return }
        var scratch = [UInt8](repeating: 0, count: 64 * 1024)
        while total > 0 {
            let want = Int(min(Int64(scratch.count), total))
            let n = try scratch.withUnsafeMutableBytes { try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want])) }
            if n == 0 && total <= padding {
                // Every data byte is there; only the last entry's padding (and the end blocks) are missing, as in
                // the layers umoci 0.4 writes: the archive ends here.
                ended = true
                break
            }
            guard n > 0 else { throw ArchiveError.truncated(detail: "the archive ends inside an entry at byte \(offset)") }
            total -= Int64(n)
            offset += Int64(n)
        }
        remaining = 0
        padding = 0
    }

    func readBlock(allowEnd: Bool) throws -> [UInt8]? {
        var block = [UInt8](repeating: 0, count: Self.blockSize)
        let n = try block.withUnsafeMutableBytes { try source.readFully(into: $0) }
        if n == 0 && allowEnd { return nil }
        guard n == Self.blockSize else { throw ArchiveError.truncated(detail: "the archive ends inside a header at byte \(offset)") }
        offset += Int64(n)
        return block
    }
}

/// The fixed 512-byte ustar header.
///
///     offset size field          offset size field
///     0      100  name           257    6    magic ("ustar\0" or GNU "ustar ")
///     100    8    mode           263    2    version
///     108    8    uid            265    32   uname
///     116    8    gid            297    32   gname
///     124    12   size           329    8    devmajor
///     136    12   mtime          337    8    devminor
///     148    8    chksum         345    155  prefix (POSIX ustar only)
///     156    1    typeflag
///     157    100  linkname
///
/// Numbers are octal text, or big-endian base-256 when the first byte has its top bit set (GNU).
struct TarHeader {
    var name: String
    var mode: UInt32
    var uid: Int64
    var gid: Int64
    var size: Int64
    var mtime: Int64
    var typeflag: UInt8
    var linkName: String
    var deviceMajor: Int64
    var deviceMinor: Int64

    init(_ block: [UInt8], offset: Int64) throws(ArchiveError) {
        func text(_ start: Int, _ length: Int) -> String {
            String(decoding: block[start..<(start + length)].prefix { $0 != 0 }, as: UTF8.self)
        }
        func number(_ start: Int, _ length: Int, _ field: String) throws(ArchiveError) -> Int64 {
            let bytes = block[start..<(start + length)]
            if let first = bytes.first, first & 0x80 != 0 {
                guard first == 0x80 else { throw .badHeader(offset: offset, detail: "negative base-256 \(field)") }
                var value: Int64 = 0
                for byte in bytes.dropFirst() {
                    guard value <= (Int64.max >> 8) else { throw .badHeader(offset: offset, detail: "\(field) overflows") }
                    value = value << 8 | Int64(byte)
                }
                return value
            }
            let digits = bytes.prefix { $0 != 0 && $0 != UInt8(ascii: " ") }.drop { $0 == UInt8(ascii: " ") }
            let trimmed = bytes.drop { $0 == UInt8(ascii: " ") }.prefix { $0 != 0 && $0 != UInt8(ascii: " ") }
            let chosen = trimmed.isEmpty ? digits : trimmed
            if chosen.isEmpty { return 0 }
            guard let value = Int64(String(decoding: chosen, as: UTF8.self), radix: 8) else {
                throw .badHeader(offset: offset, detail: "\(field) is not an octal number")
            }
            return value
        }
        let stored = try number(148, 8, "checksum")
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for (index, byte) in block.enumerated() {
            let value = (148..<156).contains(index) ? UInt8(ascii: " ") : byte
            unsigned += Int64(value)
            signed += Int64(Int8(bitPattern: value))
        }
        guard stored == unsigned || stored == signed else {
            throw .badHeader(offset: offset, detail: "checksum \(stored) does not match the header (\(unsigned))")
        }
        let isUSTAR = block[257..<262].elementsEqual("ustar".utf8)
        let isPOSIX = isUSTAR && block[262] == 0
        let prefix = isPOSIX ? text(345, 155) : ""
        let shortName = text(0, 100)
        name = prefix.isEmpty ? shortName : prefix + "/" + shortName
        mode = UInt32(truncatingIfNeeded: try number(100, 8, "mode"))
        uid = try number(108, 8, "uid")
        gid = try number(116, 8, "gid")
        size = try number(124, 12, "size")
        mtime = try number(136, 12, "mtime")
        typeflag = block[156]
        linkName = text(157, 100)
        deviceMajor = isUSTAR ? try number(329, 8, "devmajor") : 0
        deviceMinor = isUSTAR ? try number(337, 8, "devminor") : 0
        guard size >= 0 else { throw .badHeader(offset: offset, detail: "negative size") }
    }
}

/// Compression of a layer stream, detected from its magic bytes.
public enum LayerCompression: String, Sendable {
    case none
    case gzip
    case zstd

    static let gzipMagic: [UInt8] = [0x1f, 0x8b]
    static let zstdMagic: [UInt8] = [0x28, 0xb5, 0x2f, 0xfd]

    /// Wraps `source` in the decompressor its first bytes call for.
    public static func decompressing(_ source: ByteSource) throws -> ByteSource {
        var head = [UInt8](repeating: 0, count: 4)
        let n = try head.withUnsafeMutableBytes { try source.readFully(into: $0) }
        head.removeLast(4 - n)
        let stream = PrefixedByteSource(prefix: head, rest: source)
        if head.starts(with: gzipMagic) { return try GzipByteSource(stream) }
        if head.starts(with: zstdMagic) { return try ZstdByteSource(stream) }
        return stream
    }
}
