import Foundation
import TestFixtures
import TestThreads
import Testing

@testable import Archive

/// Checkpoints of real gzip output (`gzip` and `pigz`-style levels), and inflating any range from them.
@Suite(.ownThread) struct GzipIndexTests {
    /// Compressible but not trivial data: text-like runs mixed with pseudo-random bytes.
    static func sample(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        let words = ["lib", "usr", "bin", "share", "locale", "python3", "site-packages", "/", "\n", " "].map { Array($0.utf8) }
        while bytes.count < count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            if state >> 60 < 3 {
                for _ in 0..<16 {
                    bytes.append(UInt8(truncatingIfNeeded: state >> 17))
                    state = state &* 2_862_933_555_777_941_757 &+ 3
                }
            } else {
                bytes += words[Int(state >> 33) % words.count]
            }
        }
        return Array(bytes.prefix(count))
    }

    static func gzip(_ bytes: [UInt8], level: String, in directory: String) throws -> [UInt8] {
        let path = directory + "/data"
        try ImageFixtures.write(bytes, to: path)
        let result = try ImageFixtures.run("/bin/gzip", [level, "-n", "-f", path])
        #expect(result.status == 0, "gzip: \(result.error)")
        return try ImageFixtures.bytes(path + ".gz")
    }

    static func index(of compressed: [UInt8], span: UInt64) throws -> (GzipIndex, [UInt8]) {
        let recorder = GzipIndexRecorder(span: span)
        let source = try GzipByteSource(MemoryByteSource(compressed), recording: recorder)
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 100_000)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
            if n == 0 { break }
            output += buffer[0..<n]
        }
        return (try recorder.finish(), output)
    }

    /// What a ranged fetch from the index's checkpoint gives, fed in pieces of `piece` bytes.
    static func inflate(_ compressed: [UInt8], index: GzipIndex, start: UInt64, length: UInt64, piece: Int) throws -> [UInt8] {
        let checkpoint = index.checkpoints[index.checkpoint(before: start)]
        let from = Int(checkpoint.fetchStart)
        let to = Int(index.compressedEnd(covering: start + length))
        let inflater = try GzipRangeInflater(from: checkpoint, start: start, length: length)
        var out: [UInt8] = []
        var at = from
        while at < to, !inflater.isDone {
            let end = min(to, at + piece)
            try compressed.withUnsafeBytes { raw in
                try inflater.feed(UnsafeRawBufferPointer(rebasing: raw[at..<end])) { out += $0 }
            }
            at = end
        }
        return out
    }

    @Test(arguments: ["-1", "-6", "-9"])
    func anyRangeInflatesFromItsCheckpoint(level: String) throws {
        let directory = try ImageFixtures.scratchDirectory("gzidx")
        defer { ImageFixtures.cleanup(directory) }
        let data = Self.sample(count: 6 << 20, seed: 7)
        let compressed = try Self.gzip(data, level: level, in: directory)
        let (index, output) = try Self.index(of: compressed, span: 256 << 10)
        #expect(output == data)
        #expect(index.uncompressedSize == UInt64(data.count))
        #expect(index.compressedSize == UInt64(compressed.count))
        #expect(index.checkpoints.count >= 16, "a checkpoint about every 256 KiB of 6 MiB")
        #expect(index.checkpoints.contains { $0.bits != 0 }, "some boundaries fall inside a byte")
        #expect(try GzipIndex(decoding: index.encoded()) == index)
        var state: UInt64 = 99
        for round in 0..<40 {
            state = state &* 6_364_136_223_846_793_005 &+ 1
            let start = (state >> 20) % UInt64(data.count)
            let length = min(UInt64(data.count) - start, 1 + (state >> 5) % (700 << 10))
            let piece = [1, 7, 4096, 65_536, 1 << 20][round % 5]
            let got = try Self.inflate(compressed, index: index, start: start, length: length, piece: piece)
            #expect(got == Array(data[Int(start)..<Int(start + length)]), "range \(start)+\(length) in pieces of \(piece)")
        }
        // The very end, and a range starting exactly at a checkpoint.
        let last = index.checkpoints[index.checkpoints.count - 1]
        let tail = try Self.inflate(
            compressed, index: index, start: last.uncompressedOffset, length: UInt64(data.count) - last.uncompressedOffset, piece: 9000)
        #expect(tail == Array(data[Int(last.uncompressedOffset)...]))
    }

    @Test func severalMembersAreRefused() throws {
        let directory = try ImageFixtures.scratchDirectory("gzidx")
        defer { ImageFixtures.cleanup(directory) }
        let one = try Self.gzip(Self.sample(count: 300_000, seed: 1), level: "-6", in: directory)
        let two = try Self.gzip(Self.sample(count: 300_000, seed: 2), level: "-6", in: directory)
        #expect(throws: ArchiveError.self) { try Self.index(of: one + two, span: 64 << 10) }
    }

    @Test func hostileEncodingsAreRefused() throws {
        let directory = try ImageFixtures.scratchDirectory("gzidx")
        defer { ImageFixtures.cleanup(directory) }
        let compressed = try Self.gzip(Self.sample(count: 1 << 20, seed: 3), level: "-6", in: directory)
        let (index, _) = try Self.index(of: compressed, span: 64 << 10)
        let good = index.encoded()
        var badMagic = good
        badMagic[0] = 0
        var hugeCount = good
        hugeCount[32] = 0xff
        hugeCount[33] = 0xff
        var outOfOrder = index
        outOfOrder.checkpoints.swapAt(1, 2)
        var windowPastEnd = good
        windowPastEnd[GzipIndex.headerSize + GzipIndex.entrySize + 16 + 6] = 1
        for bytes in [badMagic, hugeCount, outOfOrder.encoded(), windowPastEnd, Array(good.prefix(50))] {
            #expect(throws: ArchiveError.self) { try GzipIndex(decoding: bytes) }
        }
    }
}
