import Foundation
import LinuxKernel
import TestThreads
import Testing

@testable import Digests
@testable import OCIRegistry

#if canImport(Glibc)
import Glibc
#endif

@Suite("PipelinedBlobWriter: staged hashing and (direct) writes of downloaded blobs", .ownThread)
struct PipelinedBlobWriterTests {
    /// Deterministic bytes that differ at every offset.
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        return (0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    /// Feeds `data` in pieces of varying size, as curl's write callback does.
    static func feed(_ data: [UInt8], to writer: PipelinedBlobWriter) throws {
        var offset = 0
        var step = 1
        try data.withUnsafeBytes { raw in
            while offset < raw.count {
                let n = min(step, raw.count - offset)
                try writer.append(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + n]))
                offset += n
                step = step * 7 % 600_011 + 1
            }
        }
    }

    /// Sizes around every boundary: empty, under a block, one block, a stage and one byte more, just under
    /// and over the O_DIRECT threshold with an unaligned tail, and a whole number of stages.
    @Test(
        "the file and the digest match what was appended",
        arguments: [0, 1, 4095, 4096, 4 << 20, (4 << 20) + 1, (16 << 20) - 1, (17 << 20) + 123, 40 << 20])
    func roundTrip(size: Int) throws {
        let dir = try DiskTempDirectory.make()
        defer { try? FileSystem.removeTree(dir) }
        let data = Self.bytes(size, seed: UInt64(size) + 11)
        let path = dir + "/blob"
        let writer = try PipelinedBlobWriter(path: path, expectedSize: Int64(size))
        try Self.feed(data, to: writer)
        let digest = try writer.finish()
        #expect(digest == SHA256.hash(data))
        #expect(try FileSystem.readFile(path) == data)
        // Large blobs go around the page cache on a disk file system (our temp dirs are on one).
        #expect(writer.isDirect == (Int64(size) >= PipelinedBlobWriter.directMinimumBytes && size % 4096 == 0))
    }

    @Test("a blob without a known size is written through the page cache")
    func unknownSize() throws {
        let dir = try DiskTempDirectory.make()
        defer { try? FileSystem.removeTree(dir) }
        let data = Self.bytes(9 << 20, seed: 5)
        let writer = try PipelinedBlobWriter(path: dir + "/blob", expectedSize: nil)
        try Self.feed(data, to: writer)
        #expect(try writer.finish() == SHA256.hash(data))
        #expect(!writer.isDirect)
        #expect(try FileSystem.readFile(dir + "/blob") == data)
    }

    /// A write that fails on a writer thread (the disk is full) reaches the transfer as an error, and neither
    /// side waits forever for a stage that will never come back.
    @Test("a full file system fails the blob with ENOSPC instead of hanging")
    func diskFull() throws {
        guard geteuid() == 0 else {
            print("skipped: mounting a small tmpfs needs root")
            return
        }
        let dir = try DiskTempDirectory.make()
        defer {
            umount2(dir, Int32(MNT_DETACH))
            try? FileSystem.removeTree(dir)
        }
        guard mount("tmpfs", dir, "tmpfs", 0, "size=8m") == 0 else {
            Issue.record("mount tmpfs: errno \(errno)")
            return
        }
        let data = Self.bytes(40 << 20, seed: 9)
        let writer = try PipelinedBlobWriter(path: dir + "/blob", expectedSize: Int64(data.count))
        var failure: SyscallError?
        do {
            try Self.feed(data, to: writer)
            _ = try writer.finish()
        } catch let error as SyscallError {
            failure = error
        }
        #expect(failure?.errno == ENOSPC)
        #expect(failure?.subject == dir + "/blob")
    }
}

/// A fresh temp dir on the host's disk file system (not a tmpfs), so O_DIRECT is available.
enum DiskTempDirectory {
    static func make() throws -> String {
        var template = Array("/var/tmp/blob-writer-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw SyscallError(call: "mkdtemp", errno: errno) }
        return String(cString: dir)
    }
}
