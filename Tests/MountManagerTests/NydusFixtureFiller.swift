import Foundation
import LinuxKernel
import MountManager
import RAFS
import Synchronization
import TestFixtures

#if canImport(Glibc)
import Glibc
#endif

/// The nydus conformance fixture (`ImageFixtures.directory`): a RAFS v6 bootstrap
/// whose one extra device is the compressed data blob `be7d77…`.
enum NydusFixture {
    static let directory = ImageFixtures.directory
    static let bootstrap = directory + "/rafs-v6-2.2.boot"
    static let blobID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"

    static var available: Bool {
        FileManager.default.fileExists(atPath: bootstrap) && FileManager.default.fileExists(atPath: directory + "/" + blobID)
    }

    static func open() throws -> (image: ErofsImage, blob: RafsBlob) {
        let image = try ErofsImage(path: bootstrap)
        return (image, try RafsBlob(image: image, index: 0, directory: directory))
    }

    /// Every regular file and its content read straight through the blob (decompressed, digest-checked).
    static func expectedFiles(image: ErofsImage, blob: RafsBlob) throws -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        for entry in try image.entries() where entry.type == .regular {
            files[entry.path] = try image.readFile(entry.path, devices: [1: blob])
        }
        return files
    }
}

/// Fills ranges of an uncompressed backing file by materializing the covering chunks from a RAFS blob (what
/// the on-demand engine does from a registry); fails ranges overlapping `failing`.
final class RafsChunkFiller: RangeFiller {
    let blob: RafsBlob
    let target: String
    let failing: Range<UInt64>?
    let calls = Mutex(0)

    init(blob: RafsBlob, target: String, failing: Range<UInt64>? = nil) {
        self.blob = blob
        self.target = target
        self.failing = failing
    }

    struct Refused: Error {}

    func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws {
        calls.withLock { $0 += 1 }
        if let failing, failing.overlaps(offset..<(offset + length)) { throw Refused() }
        let size = blob.entry.uncompressedSize
        guard offset < size else { return }
        let bytes = try blob.readDevice(at: offset, count: Int(min(length, size - offset)))
        let fd = try retryingSyscall("open", target) { open(target, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        try retryingSyscall("pwrite", target) { bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) } }
    }
}
