import Foundation
import TestFixtures
import TestThreads
import Testing

@testable import Archive

/// Builds tar archives byte by byte, so tests can produce exactly the hostile input they need.
struct TarWriter {
    var bytes: [UInt8] = []

    mutating func add(
        _ name: String, typeflag: Character = "0", data: [UInt8] = [], link: String = "", mode: Int = 0o644,
        sizeField: String? = nil, checksumDelta: Int = 0
    ) {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, length: Int) {
            for (i, byte) in text.utf8.prefix(length).enumerated() { header[offset + i] = byte }
        }
        func octal(_ value: Int, at offset: Int, length: Int) {
            let digits = String(value, radix: 8)
            put(String(repeating: "0", count: length - 1 - digits.count) + digits, at: offset, length: length - 1)
        }
        put(name, at: 0, length: 100)
        octal(mode, at: 100, length: 8)
        octal(0, at: 108, length: 8)
        octal(0, at: 116, length: 8)
        if let sizeField { put(sizeField, at: 124, length: 12) } else { octal(data.count, at: 124, length: 12) }
        octal(1_700_000_000, at: 136, length: 12)
        header[156] = typeflag.asciiValue ?? 0x30
        put(link, at: 157, length: 100)
        put("ustar", at: 257, length: 6)
        put("00", at: 263, length: 2)
        put("        ", at: 148, length: 8)
        let sum = header.reduce(0) { $0 + Int($1) } + checksumDelta
        let digits = String(sum, radix: 8)
        put(String(repeating: "0", count: 6 - digits.count) + digits, at: 148, length: 6)
        header[154] = 0
        header[155] = UInt8(ascii: " ")
        bytes += header
        bytes += data
        bytes += [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }

    mutating func pax(_ records: [String: String], for name: String, typeflag: Character = "x") {
        var payload: [UInt8] = []
        for (key, value) in records.sorted(by: { $0.key < $1.key }) {
            let body = " \(key)=\(value)\n"
            var length = body.utf8.count + 1
            while String(length).utf8.count + body.utf8.count != length { length += 1 }
            payload += Array("\(length)\(body)".utf8)
        }
        add("PaxHeaders/" + name, typeflag: typeflag, data: payload)
    }

    mutating func finish() { bytes += [UInt8](repeating: 0, count: 1024) }
}

func readAll(_ reader: TarReader) throws -> [(TarEntry, [UInt8])] {
    var result: [(TarEntry, [UInt8])] = []
    while let entry = try reader.next() {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try reader.readData(into: $0) }
            if n == 0 { break }
            data += buffer[0..<n]
        }
        result.append((entry, data))
    }
    return result
}

@Suite("Streaming tar reader", .ownThread)
struct TarReaderTests {
    static let fixture = ImageFixtures.directory + "/all-entry-type.tar"

    @Test("reads nydus's all-entry-type.tar the way GNU tar lists it, plain and gzipped")
    func fixture() throws {
        let plain = try readAll(TarReader.open(path: Self.fixture))
        #expect(
            plain.map(\.0.path) == [
                "tar", "tar/dir1", "tar/dir1/dir3", "tar/dir1/dir3/hardlink1.txt", "tar/dir1/dir3/xfile.txt",
                "tar/dir1/hardlink2.txt", "tar/dir2", "tar/dir2/hardlink3.txt", "tar/dir2/symlink1.txt",
            ])
        #expect(plain[0].0.kind == .directory && plain[0].0.mode == 0o755)
        #expect(plain[3].0.kind == .regular && plain[3].1.count == 15 && plain[3].0.size == 15)
        #expect(plain[4].0.kind == .hardlink && plain[4].0.linkTarget == "tar/dir1/dir3/hardlink1.txt")
        #expect(plain[8].0.kind == .symlink && plain[8].0.linkTarget == "../dir1/dir3/file1.txt")

        let directory = NSTemporaryDirectory() + "tar-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let gz = directory + "/layer.tar.gz"
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/sh")
        gzip.arguments = ["-c", "gzip -c '\(Self.fixture)' > '\(gz)' && gzip -c '\(Self.fixture)' >> '\(gz)'"]
        try gzip.run()
        _ = gzip.waitForExit()
        // Two concatenated members read as one stream, as gzip -d does.
        let zipped = try readAll(TarReader.open(path: gz))
        #expect(zipped.map(\.0) == plain.map(\.0))
        #expect(zipped.map(\.1) == plain.map(\.1))
    }

    @Test("PAX records override the header: long paths, size, times, xattrs")
    func pax() throws {
        var tar = TarWriter()
        let longName = String(repeating: "d/", count: 80) + "file"
        tar.pax(["path": longName, "mtime": "1700000000.123456789", "SCHILY.xattr.user.k": "v", "uid": "70000"], for: "f")
        tar.add("short", data: Array("hello".utf8))
        tar.finish()
        let entries = try readAll(TarReader(MemoryByteSource(tar.bytes)))
        #expect(entries.count == 1)
        #expect(entries[0].0.path == longName)
        #expect(entries[0].0.mtimeNanoseconds == 123_456_789 && entries[0].0.uid == 70000)
        #expect(entries[0].0.xattrs == ["user.k": Array("v".utf8)])
        #expect(entries[0].1 == Array("hello".utf8))
    }

    @Test("whiteouts and opaque markers are recognized")
    func whiteouts() {
        #expect(TarEntry(path: "a/b/.wh.c", kind: .regular).whiteoutTarget == "a/b/c")
        #expect(TarEntry(path: ".wh.top", kind: .regular).whiteoutTarget == "top")
        #expect(TarEntry(path: "a/.wh..wh..opq", kind: .regular).isOpaqueMarker)
        #expect(TarEntry(path: "a/.wh..wh..opq", kind: .regular).whiteoutTarget == nil)
    }

    /// On 68766fa a leading slash was refused: umoci's layers (its root written as `/`) could not be read.
    @Test("member names and hard-link targets with a leading slash name paths under the layer's root")
    func leadingSlash() throws {
        var tar = TarWriter()
        tar.add("/", typeflag: "5")
        tar.add("/etc/passwd", data: [1, 2])
        tar.add("//usr/./bin/", typeflag: "5")
        tar.add("/usr/bin/h", typeflag: "1", link: "/etc/passwd")
        tar.finish()
        let entries = try readAll(TarReader(MemoryByteSource(tar.bytes), maximumEntrySize: 1 << 20))
        #expect(entries.map(\.0.path) == ["", "etc/passwd", "usr/bin", "usr/bin/h"])
        #expect(entries[3].0.linkTarget == "etc/passwd")
    }

    /// On 68766fa such an archive was "truncated": umoci 0.4 (Debian's) writes neither the last entry's
    /// padding nor the end blocks.
    @Test("an archive that ends right after its last entry's data reads whole; one that ends inside it does not")
    func missingPadding() throws {
        var tar = TarWriter()
        tar.add("a", data: [UInt8](repeating: 1, count: 700))
        tar.add("b", data: Array("inserted at /opt\n".utf8))
        tar.finish()
        let dataEnd = 512 + 1024 + 512 + 17
        let entries = try readAll(TarReader(MemoryByteSource(Array(tar.bytes.prefix(dataEnd))), maximumEntrySize: 1 << 20))
        #expect(entries.map(\.0.path) == ["a", "b"] && entries[1].1 == Array("inserted at /opt\n".utf8))
        #expect(throws: ArchiveError.self) {
            _ = try readAll(TarReader(MemoryByteSource(Array(tar.bytes.prefix(dataEnd - 1))), maximumEntrySize: 1 << 20))
        }
    }

    /// On 35f716b sparse entries were refused outright ("unsupported entry type S").
    @Test(
        "GNU sparse files read back whole, holes as zeros: GNU tar's old format and PAX 1.0, and bsdtar",
        arguments: ["gnu", "posix", "bsdtar"])
    func sparseFiles(format: String) throws {
        let directory = FileManager.default.temporaryDirectory.path + "/sparse-\(format)-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory + "/tree", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // 6 MiB with data at its start, in its middle and at its very end; holes between (and more than 4 segments,
        // so the old format needs an extension block).
        let path = directory + "/tree/disk.img"
        FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        var expected = [UInt8](repeating: 0, count: 6 << 20)
        for (index, at) in [0, 700_000, 1 << 20, 1_500_000, 2 << 20, 3_000_000, 4 << 20, (6 << 20) - 5000].enumerated() {
            let bytes = [UInt8](repeating: UInt8(index + 1), count: 5000)
            try handle.seek(toOffset: UInt64(at))
            handle.write(Data(bytes))
            expected.replaceSubrange(at..<(at + bytes.count), with: bytes)
        }
        try handle.close()
        let tarPath = directory + "/layer.tar"
        let process = Process()
        if format == "bsdtar" {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/bsdtar")
            process.arguments = ["--read-sparse", "-C", directory + "/tree", "-cf", tarPath, "disk.img"]
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
            process.arguments = ["--format=\(format)", "--sparse", "-C", directory + "/tree", "-cf", tarPath, "disk.img"]
        }
        try process.run()
        try #require(process.waitForExit().status == 0, "\(format) could not write the archive")
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: tarPath)))
        #expect(bytes.count < 1 << 20, "the archive stores the holes (\(bytes.count) bytes): not a sparse archive")
        let entries = try readAll(TarReader(MemoryByteSource(bytes), maximumEntrySize: 1 << 30))
        let file = try #require(entries.first { $0.0.path == "disk.img" })
        #expect(file.0.kind == .regular && file.0.size == Int64(expected.count))
        let same = file.1 == expected
        #expect(same, "\(format): the sparse file read back different bytes")
    }

    enum Hostile: String, CaseIterable {
        case dotDot, nestedDotDot, truncatedData, truncatedHeader, badChecksum, absurdSize, absurdPAX
        case hardlinkEscape, sparse, sparseShort, badGzip, nulInPath
        /// PAX headers before one entry, each under the 1 MiB limit, that add up to over 1 MiB.
        case paxFlood
        /// Global PAX headers whose records accumulate over the whole archive.
        case globalPAXFlood
    }

    @Test("hostile archives are refused with a clear error", arguments: Hostile.allCases)
    func hostile(_ kind: Hostile) throws {
        var tar = TarWriter()
        var bytes: [UInt8]
        switch kind {
        case .dotDot: tar.add("../evil", data: [1])
        case .nestedDotDot: tar.add("a/b/../../../x", data: [1])
        case .truncatedData, .truncatedHeader: tar.add("f", data: [UInt8](repeating: 7, count: 4000))
        case .badChecksum: tar.add("f", data: [1], checksumDelta: 5)
        case .absurdSize: tar.add("f", data: [], sizeField: "77777777777")
        case .absurdPAX:
            tar.pax(["size": "99999999999999"], for: "f")
            tar.add("f")
        case .hardlinkEscape: tar.add("l", typeflag: "1", link: "../../etc/shadow")
        case .sparse:
            // Segments that overlap: a map no tool writes.
            tar.pax(["GNU.sparse.map": "0,10,5,10", "GNU.sparse.size": "100", "GNU.sparse.major": "0", "GNU.sparse.minor": "1"], for: "s")
            tar.add("s", data: [UInt8](repeating: 1, count: 20))
        case .sparseShort:
            // A map that claims more bytes than the entry stores.
            tar.pax(["GNU.sparse.map": "0,10,50,30", "GNU.sparse.size": "100"], for: "s")
            tar.add("s", data: [UInt8](repeating: 1, count: 20))
        case .badGzip: break
        case .nulInPath:
            tar.pax(["path": "a\u{0}b"], for: "f")
            tar.add("f")
        case .paxFlood:
            let filler = String(repeating: "x", count: 4000)
            for index in 0..<400 { tar.pax(["comment.\(index)": filler], for: "f") }
            tar.add("f")
        case .globalPAXFlood:
            let filler = String(repeating: "x", count: 4000)
            for index in 0..<400 {
                tar.pax(["comment.\(index)": filler], for: "g\(index)", typeflag: "g")
                tar.add("f\(index)")
            }
        }
        tar.finish()
        bytes = tar.bytes
        if kind == .truncatedData { bytes = Array(bytes.prefix(512 + 1000)) }
        if kind == .truncatedHeader { bytes = Array(bytes.prefix(300)) }
        if kind == .badGzip { bytes = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3] + [UInt8](repeating: 0xff, count: 64) }
        let limit: Int64 = 1 << 30
        #expect(throws: ArchiveError.self) {
            let source = try LayerCompression.decompressing(MemoryByteSource(bytes))
            _ = try readAll(TarReader(source, maximumEntrySize: limit))
        }
    }
}
