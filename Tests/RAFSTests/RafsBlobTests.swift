import Foundation
import LinuxKernel
import TestFixtures
import TestThreads
import Testing

@testable import Digests
@testable import RAFS

#if canImport(Glibc)
import Glibc
#endif

@Suite("RAFS data blob: chunk map, decompression, digests, materialize, kernel mount", .ownThread)
struct RafsBlobTests {
    static func open() throws -> (ErofsImage, RafsBlob) {
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        let blob = try RafsBlob(image: image, index: 0, directory: ImageFixtures.directory)
        return (image, blob)
    }

    @Test("blob meta chunk infos agree with the bootstrap's chunk table")
    func chunkInfos() throws {
        let (image, blob) = try Self.open()
        #expect(blob.chunks.count == 2)
        #expect(blob.metaHeader.entries == 2)
        let table = try image.rafsChunkTable()
        for row in table {
            let info = blob.chunks[Int(row.index)]
            #expect(info.compressedOffset == row.compressedOffset)
            #expect(info.compressedSize == row.compressedSize)
            #expect(info.uncompressedOffset == row.uncompressedOffset)
            #expect(info.uncompressedSize == row.uncompressedSize)
            #expect(info.isCompressed == (row.flags & 1 != 0))
            #expect(info.uncompressedOffset % 4096 == 0)
        }
    }

    @Test("ToC lists the blob's sections and each section matches its sha256")
    func toc() throws {
        let (_, blob) = try Self.open()
        #expect(Set(blob.toc.map(\.name)) == ["image.blob", "blob.meta", "blob.meta.header", "blob.digest"])
        for name in ["blob.meta", "blob.meta.header", "blob.digest"] {
            _ = try blob.tocSection(name)
        }
        let meta = try #require(blob.toc.first { $0.name == "blob.meta" })
        #expect(meta.compressedOffset == blob.entry.metaOffset)
    }

    @Test("every chunk decompresses and matches both digest sources")
    func everyChunk() throws {
        let (_, blob) = try Self.open()
        let inline = try blob.tocSection("blob.digest")
        for chunk in blob.chunks {
            let data = try blob.readChunk(chunk)
            #expect(data.count == Int(chunk.uncompressedSize))
            let digest = BLAKE3.hash(data)
            #expect(digest == blob.chunkDigests[Int(chunk.index)])
            #expect(digest == Array(inline[Int(chunk.index) * 32..<Int(chunk.index + 1) * 32]))
        }
        // The blob opened without the bootstrap's table falls back to the inline digests.
        let alone = try RafsBlob(path: ImageFixtures.blob, entry: blob.entry)
        #expect(alone.chunkDigests == blob.chunkDigests)
    }

    @Test("uncompressed ranges map to the chunks holding them")
    func rangeMapping() throws {
        let (_, blob) = try Self.open()
        let sorted = blob.chunks.sorted { $0.uncompressedOffset < $1.uncompressedOffset }
        #expect(blob.chunks(coveringUncompressed: 0, length: 1).map(\.index) == [sorted[0].index])
        #expect(blob.chunks(coveringUncompressed: 0, length: blob.deviceSize).count == 2)
        let gap = sorted[0].uncompressedEnd
        #expect(blob.chunks(coveringUncompressed: gap, length: 1).isEmpty || gap >= sorted[1].uncompressedOffset)
        #expect(blob.chunks(coveringUncompressed: sorted[1].uncompressedOffset + 5, length: 10).map(\.index) == [sorted[1].index])
    }

    @Test("chunk-based files map to device 1 and read through the blob")
    func fileChunks() throws {
        let (image, blob) = try Self.open()
        for entry in try image.entries() where entry.type == .regular {
            let inode = try image.lookup(entry.path)
            let mappings = try image.chunkMappings(of: inode)
            #expect(mappings.count == 1)
            let mapping = try #require(mappings.first)
            #expect(mapping.device == 1)
            let index = try #require(mapping.index)
            #expect(index.rafsBlobIndex == 0)
            let info = blob.chunks[Int(index.rafsChunkInfoIndex)]
            #expect(mapping.deviceOffset == info.uncompressedOffset)
            #expect(UInt64(info.uncompressedSize) == entry.size)
            let data = try image.readFile(entry.path, devices: [1: blob])
            #expect(data == (try blob.readChunk(info)))
        }
    }

    static var kernelMountAvailable: Bool {
        getuid() == 0 && ((try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8))?.contains("erofs") ?? false)
    }

    @Test(
        "materialized blob mounts with the kernel's EROFS (file-backed, device=) and matches the reader",
        .enabled(if: kernelMountAvailable, "needs root and a kernel with erofs (file-backed mounts, Linux 6.12+)")
    )
    func materializeAndMount() throws {
        let (image, blob) = try Self.open()
        let scratch = try ImageFixtures.scratchDirectory("mount")
        defer { ImageFixtures.cleanup(scratch) }
        let devicePath = scratch + "/" + blob.entry.blobID
        let report = try blob.materialize(to: devicePath)
        #expect(report.chunks == 2)
        #expect(report.fileSize == 36864)
        var st = stat()
        #expect(lstat(devicePath, &st) == 0)
        #expect(UInt64(st.st_size) == blob.entry.uncompressedSize)
        // Holes stay holes: fewer blocks allocated than the file spans.
        #expect(Int64(st.st_blocks) * 512 <= Int64(st.st_size))

        let device = try ImageFile(path: devicePath)
        let mountPoint = scratch + "/mnt"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        try Mounter.mount(
            KernelMount(
                type: "erofs", source: ImageFixtures.bootstrap,
                options: ["ro", "device=\(devicePath)"]), at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }

        let entries = try image.entries()
        #expect(entries.count == 3)
        for entry in entries {
            let path = mountPoint + entry.path
            var kernel = stat()
            try #require(lstat(path, &kernel) == 0, "lstat \(path)")
            #expect(UInt16(kernel.st_mode) == entry.mode, "\(entry.path) mode")
            #expect(kernel.st_uid == entry.uid, "\(entry.path) uid")
            #expect(kernel.st_gid == entry.gid, "\(entry.path) gid")
            #expect(UInt64(kernel.st_nlink) == UInt64(entry.nlink), "\(entry.path) nlink")
            #expect(UInt64(kernel.st_mtim.tv_sec) == entry.mtime, "\(entry.path) mtime")
            if entry.type != .directory { #expect(UInt64(kernel.st_size) == entry.size, "\(entry.path) size") }
            switch entry.type {
            case .regular:
                let throughKernel = try ImageFixtures.bytes(path)
                #expect(throughKernel == (try image.readFile(entry.path, devices: [1: blob])), "\(entry.path) via blob")
                #expect(throughKernel == (try image.readFile(entry.path, devices: [1: device])), "\(entry.path) via file")
            case .symlink:
                #expect(try FileManager.default.destinationOfSymbolicLink(atPath: path) == entry.symlinkTarget)
            case .directory:
                let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
                let expected = try image.directoryEntries(of: try image.inode(nid: entry.nid))
                    .map(\.name).filter { $0 != "." && $0 != ".." }.sorted()
                #expect(names == expected)
            default:
                break
            }
        }
    }
}
