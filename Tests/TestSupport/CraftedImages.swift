import Digests
import Foundation
import OCI
import RAFS
import RAFSBuilder

/// What an attacker publishes: test images copied into a `HostileRegistry`, honestly or with their blob
/// bytes, blob meta or bootstrap altered the way a hostile registry or image author could.
public enum CraftedImages {
    /// The image's data blob (test images have one layer, so one blob).
    public static func dataLayer(of image: NydusTestImage) -> Descriptor {
        image.result.manifest.layers.first { $0.mediaType == ImageConverter.nydusBlobMediaType }!
    }

    public static func bytes(of descriptor: Descriptor, in image: NydusTestImage) throws -> [UInt8] {
        let layout = try OCILayout(path: image.convertedLayout)
        return Array(try Data(contentsOf: URL(fileURLWithPath: layout.blobPath(descriptor.digest))))
    }

    /// Extracts the image's bootstrap into `directory` (as `image/image.boot`) and returns its path.
    public static func bootstrap(of image: NydusTestImage, into directory: String) throws -> String {
        let layout = try OCILayout(path: image.convertedLayout)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try RegistryTestSupport.run("/usr/bin/tar", ["-xzf", layout.blobPath(image.result.bootstrapLayer.digest), "-C", directory])
        return directory + "/" + NydusLayout.bootstrapEntry
    }

    /// The blob-table entry of the image's data blob.
    public static func blobEntry(of image: NydusTestImage, scratch: String) throws -> RafsBlobEntry {
        try ErofsImage(path: try bootstrap(of: image, into: scratch)).blobs[0]
    }

    /// Publishes the image as it is, except that its data blob is served as `dataBlob` (same digest).
    public static func publish(
        _ image: NydusTestImage, to registry: HostileRegistry, repository: String, tag: String, dataBlob: [UInt8]? = nil
    ) throws {
        let data = dataLayer(of: image)
        for descriptor in image.result.manifest.layers + [image.result.manifest.config] {
            let bytes = descriptor == data && dataBlob != nil ? dataBlob! : try bytes(of: descriptor, in: image)
            try registry.putBlob(repository: repository, digest: descriptor.digest.description, bytes: bytes)
        }
        let layout = try OCILayout(path: image.convertedLayout)
        try registry.putManifest(
            repository: repository, tag: tag, bytes: try layout.readBlob(image.result.manifestDescriptor.digest),
            mediaType: image.result.manifestDescriptor.mediaType)
    }

    /// Publishes `attacker` re-labelled so that its bootstrap, its manifest and the registry all call its data
    /// blob `victim`'s blob id: the attacker's own chunk bytes and chunk digests under the victim's blob id.
    /// The blob's tail (chunk infos, digests, ToC) is the victim's, copied from the public victim image, and
    /// the attacker's bootstrap records the victim's ToC digest, so that a blob meta fetched for either image
    /// passes a check against either bootstrap's blob table. Every chunk the attacker's image reads still
    /// verifies against the digests in the attacker's own chunk table. (Both images must have the same layout.)
    public static func publish(
        _ attacker: NydusTestImage, namingBlobOf victim: NydusTestImage, to registry: HostileRegistry, repository: String, tag: String,
        scratch: String
    ) throws {
        let data = dataLayer(of: attacker)
        let victimBlobID = dataLayer(of: victim).digest.encoded
        let victimEntry = try blobEntry(of: victim, scratch: scratch + "/victim")
        let bootPath = try bootstrap(of: attacker, into: scratch + "/boot")
        var boot = Array(try Data(contentsOf: URL(fileURLWithPath: bootPath)))
        // The blob table's entry 0 (`s_blob_table_offset` at 1152 + 8): the victim's ToC digest at 136.
        let table = blobTableEntryOffset(boot)
        boot.replaceSubrange(table + 136..<table + 168, with: victimEntry.tocDigest)
        var blob = try bytes(of: data, in: attacker)
        let victimBlob = try bytes(of: dataLayer(of: victim), in: victim)
        guard blob.count == victimBlob.count else { throw RegistryTestSupport.TestFailure("the two images' blobs differ in size") }
        let tail = Int(victimEntry.metaOffset)
        blob.replaceSubrange(tail..<blob.count, with: victimBlob[tail...])
        let from = Array(data.digest.encoded.utf8)
        let to = Array(victimBlobID.utf8)
        var replaced = 0
        var index = 0
        while index + from.count <= boot.count {
            if boot[index] == from[0], Array(boot[index..<index + from.count]) == from {
                boot.replaceSubrange(index..<index + from.count, with: to)
                replaced += 1
                index += from.count
            } else {
                index += 1
            }
        }
        guard replaced >= 2 else { throw RegistryTestSupport.TestFailure("blob id found \(replaced) times in the bootstrap") }
        var renamed = data
        renamed.digest = try Digest(parsing: "sha256:" + victimBlobID)
        try publish(
            attacker, bootstrap: boot, dataBlob: (renamed, blob), to: registry, repository: repository, tag: tag, scratch: scratch)
    }

    /// Publishes `image` with its bootstrap rewritten by `rewrite` (repacked as its bootstrap layer; the manifest
    /// names the new layer digest): what an image author can put in a bootstrap.
    public static func publish(
        _ image: NydusTestImage, rewritingBootstrap rewrite: (inout [UInt8]) throws -> Void, to registry: HostileRegistry,
        repository: String, tag: String, scratch: String
    ) throws {
        var boot = Array(try Data(contentsOf: URL(fileURLWithPath: try bootstrap(of: image, into: scratch + "/boot"))))
        try rewrite(&boot)
        try publish(image, bootstrap: boot, dataBlob: nil, to: registry, repository: repository, tag: tag, scratch: scratch)
    }

    /// The offset of blob-table entry `index` in a RAFS v6 bootstrap (`s_blob_table_offset`, at 1152 + 8).
    public static func blobTableEntryOffset(_ boot: [UInt8], index: Int = 0) -> Int {
        u64(boot, at: 1152 + 8) + index * RafsBlobEntry.size
    }

    /// The offset of EROFS device slot `index` (device `index + 1`): `devt_slotoff` (superblock byte 88) * 128.
    public static func deviceSlotOffset(_ boot: [UInt8], index: Int = 0) -> Int {
        (Int(boot[1024 + 88]) | Int(boot[1024 + 89]) << 8) * 128 + index * 128
    }

    /// Stores `value` little-endian at `offset`.
    public static func put(_ value: UInt64, into bytes: inout [UInt8], at offset: Int, width: Int = 8) {
        for index in 0..<width { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
    }

    /// Publishes `image` with `boot` as its bootstrap (repacked) and, if given, its data layer renamed and replaced.
    private static func publish(
        _ image: NydusTestImage, bootstrap boot: [UInt8], dataBlob: (dataDescriptor: Descriptor, bytes: [UInt8])?,
        to registry: HostileRegistry, repository: String, tag: String, scratch: String
    ) throws {
        let bootPath = scratch + "/boot/" + NydusLayout.bootstrapEntry
        try FileManager.default.createDirectory(atPath: scratch + "/boot/image", withIntermediateDirectories: true)
        try Data(boot).write(to: URL(fileURLWithPath: bootPath))
        let layerPath = scratch + "/bootstrap.tar.gz"
        try RegistryTestSupport.run(
            "/usr/bin/tar",
            ["--owner=0", "--group=0", "--mtime=@1700000000", "-czf", layerPath, "-C", scratch + "/boot", NydusLayout.bootstrapEntry])
        let layer = Array(try Data(contentsOf: URL(fileURLWithPath: layerPath)))

        var bootDescriptor = image.result.bootstrapLayer
        bootDescriptor.digest = try Digest(parsing: "sha256:" + SHA256.hash(layer).hexString)
        bootDescriptor.size = Int64(layer.count)
        let data = dataLayer(of: image)
        var manifest = image.result.manifest
        manifest.layers = manifest.layers.map {
            $0 == data ? (dataBlob?.dataDescriptor ?? data) : $0 == image.result.bootstrapLayer ? bootDescriptor : $0
        }
        try registry.putBlob(
            repository: repository, digest: (dataBlob?.dataDescriptor ?? data).digest.description,
            bytes: try dataBlob?.bytes ?? bytes(of: data, in: image))
        try registry.putBlob(repository: repository, digest: bootDescriptor.digest.description, bytes: layer)
        try registry.putBlob(
            repository: repository, digest: manifest.config.digest.description, bytes: try bytes(of: manifest.config, in: image))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try registry.putManifest(
            repository: repository, tag: tag, bytes: Array(try encoder.encode(manifest)),
            mediaType: image.result.manifestDescriptor.mediaType)
    }

    /// The little-endian u64 at `offset`, as an Int (bootstrap offsets).
    public static func u64(_ bytes: [UInt8], at offset: Int) -> Int {
        var value: UInt64 = 0
        for index in 0..<8 { value |= UInt64(bytes[offset + index]) << (8 * UInt64(index)) }
        return Int(value)
    }

    /// How a tampered blob meta places chunks.
    public enum MetaTampering: String, Sendable, CaseIterable {
        /// Chunks `i` and `j` trade uncompressed places: each still verifies, at the other's offset.
        case swapPlaces
        /// Chunk `j` takes chunk `i`'s place: nothing describes `j`'s range any more.
        case duplicatePlace
        /// The meta is cut short by one chunk entry (its header no longer where the blob table says).
        case truncated
        /// The meta gains one chunk entry (a copy of entry `i`) after its last.
        case extended
    }

    /// The stored blob with its chunk-info array tampered (the meta must be stored uncompressed, v1 entries).
    public static func tamperMeta(
        _ blob: [UInt8], entry: RafsBlobEntry, _ tampering: MetaTampering, i: Int = 0, j: Int = 1
    )
        throws -> [UInt8]
    {
        guard entry.metaCompressorRaw == 0, !entry.features.contains(.chunkInfoV2) else {
            throw RegistryTestSupport.TestFailure("the meta of \(entry.blobID) is compressed or v2; build the image without compression")
        }
        var out = blob
        let base = Int(entry.metaOffset)
        let size = BlobChunkInfo.v1Size
        let wordI = Array(blob[base + i * size..<base + i * size + 8])
        let wordJ = Array(blob[base + j * size..<base + j * size + 8])
        switch tampering {
        case .swapPlaces:
            out.replaceSubrange(base + i * size..<base + i * size + 8, with: wordJ)
            out.replaceSubrange(base + j * size..<base + j * size + 8, with: wordI)
        case .duplicatePlace:
            out.replaceSubrange(base + j * size..<base + j * size + 8, with: wordI)
        case .truncated:
            let end = base + Int(entry.metaCompressedSize)
            out.removeSubrange(end - size..<end)
        case .extended:
            let end = base + Int(entry.metaCompressedSize)
            out.insert(contentsOf: blob[base + i * size..<base + (i + 1) * size], at: end)
        }
        return out
    }
}
