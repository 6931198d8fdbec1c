import LinuxKernel

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An OCI image layout directory (image-spec `image-layout.md`): `oci-layout`, `index.json` and
/// content-addressed `blobs/<alg>/<hex>`. Reads verify digests; writes go through a temporary name and a
/// rename, so a blob path only ever holds complete, matching content.
public struct OCILayout: Sendable {
    public let path: String

    public static let layoutFileName = "oci-layout"
    public static let indexFileName = "index.json"
    public static let layoutVersion = "1.0.0"
    /// `index.json` annotation naming an image (a tag).
    public static let refNameAnnotation = "org.opencontainers.image.ref.name"
    /// Largest JSON document (index, manifest, config) read.
    public static let maximumDocumentSize: Int64 = 64 << 20

    /// Opens an existing layout, checking its `oci-layout` file.
    public init(path: String) throws(OCIError) {
        self.path = path
        let marker = path + "/" + Self.layoutFileName
        guard FileSystem.exists(marker) else { throw .notALayout(path: path, reason: "no \(Self.layoutFileName) file") }
    }

    private init(creating path: String) {
        self.path = path
    }

    /// Creates the directories, `oci-layout` and an empty `index.json` (an existing layout is reused).
    public static func create(at path: String) throws(OCIError) -> OCILayout {
        let layout = OCILayout(creating: path)
        do throws(SyscallError) {
            try FileSystem.makeDirectories(path + "/blobs/sha256")
            let marker = path + "/" + layoutFileName
            if !FileSystem.exists(marker) {
                try FileSystem.writeFileAtomically(marker, Array("{\"imageLayoutVersion\":\"\(layoutVersion)\"}".utf8))
            }
        } catch {
            throw .io(path: path, error)
        }
        if !FileSystem.exists(path + "/" + indexFileName) { try layout.writeIndex(ImageIndex(manifests: [])) }
        return layout
    }

    public func blobPath(_ digest: Digest) -> String { path + "/blobs/\(digest.algorithm)/\(digest.encoded)" }

    /// The directory holding sha256 blobs: nydus blob files are found there by blob id.
    public var sha256Directory: String { path + "/blobs/sha256" }

    // MARK: Index

    public func readIndex() throws(OCIError) -> ImageIndex {
        try decode(ImageIndex.self, file: path + "/" + Self.indexFileName)
    }

    public func writeIndex(_ index: ImageIndex) throws(OCIError) {
        let file = path + "/" + Self.indexFileName
        let bytes = try Self.encode(index)
        do throws(SyscallError) { try FileSystem.writeFileAtomically(file, bytes) } catch { throw .io(path: file, error) }
    }

    // MARK: Blobs

    /// A blob's bytes, checked against its digest (sha256 only) and `limit`.
    public func readBlob(_ digest: Digest, limit: Int64 = OCILayout.maximumDocumentSize) throws(OCIError) -> [UInt8] {
        let file = blobPath(digest)
        guard FileSystem.exists(file) else { throw .blobMissing(digest: digest.description) }
        let bytes: [UInt8]
        do throws(SyscallError) { bytes = try FileSystem.readFile(file) } catch { throw .io(path: file, error) }
        guard Int64(bytes.count) <= limit else { throw .tooLarge(digest: digest.description, size: Int64(bytes.count), limit: limit) }
        if digest.algorithm == Digest.sha256Algorithm {
            let found = Digest.sha256(of: bytes)
            guard found == digest else { throw .digestMismatch(digest: digest.description, found: found.description) }
        }
        return bytes
    }

    /// Stores `bytes` as a blob and returns its descriptor.
    @discardableResult
    public func writeBlob(_ bytes: [UInt8], mediaType: String, annotations: [String: String]? = nil) throws(OCIError) -> Descriptor {
        let digest = Digest.sha256(of: bytes)
        let file = blobPath(digest)
        if !FileSystem.exists(file) {
            do throws(SyscallError) { try FileSystem.writeFileAtomically(file, bytes) } catch { throw .io(path: file, error) }
        }
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count), annotations: annotations)
    }

    /// Moves a file whose sha256 is `digest` into the layout (same filesystem: a rename).
    public func moveBlob(from source: String, digest: Digest, size: Int64) throws(OCIError) {
        let file = blobPath(digest)
        do throws(SyscallError) { try FileSystem.rename(source, file) } catch { throw .io(path: file, error) }
    }

    /// Decodes a JSON blob.
    public func readJSON<T: Decodable>(_ type: T.Type, _ digest: Digest) throws(OCIError) -> T {
        let bytes = try readBlob(digest)
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
            throw .invalidJSON(path: blobPath(digest), reason: "\(error)")
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, file: String) throws(OCIError) -> T {
        let bytes: [UInt8]
        do throws(SyscallError) { bytes = try FileSystem.readFile(file) } catch { throw .io(path: file, error) }
        guard Int64(bytes.count) <= Self.maximumDocumentSize else {
            throw .tooLarge(digest: file, size: Int64(bytes.count), limit: Self.maximumDocumentSize)
        }
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch { throw .invalidJSON(path: file, reason: "\(error)") }
    }

    /// Canonical JSON for documents this project writes: sorted keys, no escaped slashes.
    package static func encode<T: Encodable>(_ value: T) throws(OCIError) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do { return Array(try encoder.encode(value)) } catch { throw .invalidJSON(path: "(encoding)", reason: "\(error)") }
    }

    // MARK: Selection

    /// The image manifest `reference` names (a `ref.name` annotation in `index.json`), or the only one; an
    /// image index on the way is resolved to the entry for `platform` (or its only manifest).
    public func resolveManifest(reference: String?, platform: Platform) throws(OCIError) -> (Descriptor, ImageManifest) {
        let index = try readIndex()
        var candidates = index.manifests
        if let reference {
            candidates = candidates.filter { $0.annotations?[Self.refNameAnnotation] == reference }
            guard !candidates.isEmpty else { throw .noMatchingManifest(reason: "no index.json entry is named \(reference)") }
        }
        guard
            var descriptor = candidates.count == 1
                ? candidates.first : candidates.first(where: { $0.platform.map(platform.matches) ?? false })
        else {
            throw .noMatchingManifest(reason: "index.json has \(candidates.count) entries; name one with a reference")
        }
        if MediaType.indexTypes.contains(descriptor.mediaType) {
            let nested = try readJSON(ImageIndex.self, descriptor.digest)
            let manifests = nested.manifests.filter { MediaType.manifestTypes.contains($0.mediaType) }
            guard let chosen = manifests.count == 1 ? manifests.first : nested.select(platform) else {
                throw .noMatchingManifest(reason: "the image index has no manifest for \(platform)")
            }
            descriptor = chosen
        }
        guard MediaType.manifestTypes.contains(descriptor.mediaType) else {
            throw .noMatchingManifest(reason: "media type \(descriptor.mediaType) is not an image manifest")
        }
        return (descriptor, try readJSON(ImageManifest.self, descriptor.digest))
    }
}
