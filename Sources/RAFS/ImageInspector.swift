import Digests
import LinuxKernel

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One entry of an image as `inspect` prints it.
public struct InspectRecord: Codable, Sendable, Equatable {
    public var path: String
    public var type: String
    /// Permission bits, set-id and sticky included (no type bits).
    public var mode: UInt16
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var nlink: UInt32
    /// Hex sha256 of a regular file's content (nil for other types, or when content was not read).
    public var sha256: String?
    public var symlinkTarget: String?
    /// "major:minor" for device nodes.
    public var device: String?

    /// `ls -l`-like text: type and permissions, uid:gid, size, sha256 or link target, path.
    public var line: String {
        var text = "\(Self.typeLetter(type))\(Self.permissionString(mode)) \(uid):\(gid) \(size)"
        if let sha256 { text += " sha256:\(sha256)" }
        if let device { text += " dev:\(device)" }
        text += " \(path)"
        if let symlinkTarget { text += " -> \(symlinkTarget)" }
        return text
    }

    static func typeLetter(_ type: String) -> String {
        switch type {
        case "directory": return "d"
        case "symlink": return "l"
        case "characterDevice": return "c"
        case "blockDevice": return "b"
        case "fifo": return "p"
        case "socket": return "s"
        default: return "-"
        }
    }

    static func permissionString(_ mode: UInt16) -> String {
        var out = ""
        let letters: [Character] = ["r", "w", "x"]
        for shift in stride(from: 6, through: 0, by: -3) {
            for bit in 0..<3 {
                let set = mode & (1 << UInt16(shift + 2 - bit)) != 0
                var letter: Character = set ? letters[bit] : "-"
                if bit == 2 {
                    let special: UInt16 = shift == 6 ? 0o4000 : shift == 3 ? 0o2000 : 0o1000
                    if mode & special != 0 { letter = shift == 0 ? (set ? "t" : "T") : (set ? "s" : "S") }
                }
                out.append(letter)
            }
        }
        return out
    }
}

/// What `verify` checked.
public struct VerifyReport: Sendable, Equatable, Codable {
    public var blobsChecked: [String]
    /// Blobs of the bootstrap not found in the directory (not checked).
    public var blobsMissing: [String]
    public var chunksChecked: Int
    public var bytesChecked: UInt64
}

/// Lists and verifies RAFS v6 images: one record per entry (with content digests read through the blobs),
/// and a full check of every chunk of every blob present.
public struct ImageInspector: Sendable {
    public let image: ErofsImage
    /// Where blobs are found by id (an output directory or a layout's `blobs/sha256`); nil reads no content.
    public let blobsDirectory: String?

    public init(bootstrap: String, blobsDirectory: String? = nil) throws(ImageFormatError) {
        image = try ErofsImage(path: bootstrap)
        self.blobsDirectory = blobsDirectory
    }

    /// The records of every entry, root first. Regular files get a sha256 when `blobsDirectory` holds their
    /// blobs.
    public func records() throws(ImageFormatError) -> [InspectRecord] {
        var readers: [UInt16: any ErofsDeviceReader] = [:]
        if let blobsDirectory {
            for index in image.blobs.indices where FileSystem.exists(blobsDirectory + "/" + image.blobs[index].blobID) {
                readers[UInt16(index + 1)] = try RafsBlob(image: image, index: index, directory: blobsDirectory)
            }
        }
        var records: [InspectRecord] = []
        try image.walk { (entry) throws(ImageFormatError) in
            var record = InspectRecord(
                path: entry.path, type: entry.type.rawValue, mode: entry.permissions, uid: entry.uid, gid: entry.gid,
                size: entry.size, nlink: entry.nlink, sha256: nil, symlinkTarget: entry.symlinkTarget, device: nil)
            if entry.type == .characterDevice || entry.type == .blockDevice { record.device = "\(entry.rdevMajor):\(entry.rdevMinor)" }
            if entry.type == .regular, blobsDirectory != nil {
                record.sha256 = try contentDigest(nid: entry.nid, readers: readers)
            }
            records.append(record)
        }
        return records
    }

    private func contentDigest(nid: UInt64, readers: [UInt16: any ErofsDeviceReader]) throws(ImageFormatError) -> String? {
        let inode = try image.inode(nid: nid)
        if inode.dataLayout == .chunkBased {
            // Only files whose every chunk can be read get a digest.
            for mapping in try image.chunkMappings(of: inode) where mapping.device != 0 && readers[mapping.device] == nil { return nil }
        }
        var hasher = SHA256()
        var offset: UInt64 = 0
        let step: UInt64 = 16 << 20
        while offset < inode.size {
            hasher.update(try image.readData(of: inode, offset: offset, count: Int(min(step, inode.size - offset)), devices: readers))
            offset += step
        }
        return hasher.finalize().hexString
    }

    /// One JSON document (an array of records).
    public static func json(_ records: [InspectRecord]) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(records))
    }

    /// Decompresses every chunk of every blob of the bootstrap found in `blobsDirectory` and checks its digest;
    /// throws at the first chunk that fails, naming the blob and chunk.
    public static func verify(bootstrap: String, blobsDirectory: String) throws(ImageFormatError) -> VerifyReport {
        let inspector = try ImageInspector(bootstrap: bootstrap, blobsDirectory: blobsDirectory)
        let image = inspector.image
        var report = VerifyReport(blobsChecked: [], blobsMissing: [], chunksChecked: 0, bytesChecked: 0)
        for (index, entry) in image.blobs.enumerated() {
            guard FileSystem.exists(blobsDirectory + "/" + entry.blobID) else {
                report.blobsMissing.append(entry.blobID)
                continue
            }
            let blob: RafsBlob
            blob = try RafsBlob(image: image, index: index, directory: blobsDirectory)
            guard blob.hasAllDigests else {
                throw .corruptChunk(blobID: entry.blobID, chunk: 0, reason: "the image records no digest for some chunks")
            }
            for chunk in blob.chunks {
                do throws(ImageFormatError) {
                    report.bytesChecked += UInt64(try blob.readChunk(chunk, verify: true).count)
                } catch {
                    throw .corruptChunk(blobID: entry.blobID, chunk: chunk.index, reason: "\(error)")
                }
                report.chunksChecked += 1
            }
            report.blobsChecked.append(entry.blobID)
        }
        return report
    }
}
