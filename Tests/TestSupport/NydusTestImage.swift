import Foundation
import OCI
import OCIRegistry
import RAFSBuilder

/// A nydus-style test image: a tree of files written to disk, packed by GNU tar into one OCI layer, put in an
/// OCI layout, converted by the project's converter, and pushed by the project's client.
public struct NydusTestImage {
    public let directory: String
    /// Relative path -> content of every regular file in the image.
    public let files: [String: [UInt8]]
    public let sourceLayout: String
    public let convertedLayout: String
    public let result: ConvertResult

    /// Stored bytes of every blob of the converted image (data blobs and bootstrap layer).
    public var storedBytes: Int64 { result.manifest.layers.reduce(0) { $0 + $1.size } }
    /// Stored bytes of the data blobs only.
    public var dataBlobBytes: Int64 {
        result.manifest.layers.filter { $0.mediaType == ImageConverter.nydusBlobMediaType }.reduce(0) { $0 + $1.size }
    }

    public init(
        directory: String, files: [String: [UInt8]], tag: String = "v1", chunkSize: UInt32 = 1 << 20, prefetch: [String] = [],
        compression: ChunkCompression = .zstd
    ) throws {
        self.directory = directory
        self.files = files
        let tree = directory + "/tree"
        for (path, bytes) in files {
            let full = tree + "/" + path
            try FileManager.default.createDirectory(
                atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: full))
        }
        let tar = directory + "/layer.tar"
        try RegistryTestSupport.run(
            "/usr/bin/tar", ["--sort=name", "--mtime=@1700000000", "--owner=0", "--group=0", "-cf", tar, "-C", tree, "."])
        sourceLayout = directory + "/oci"
        let layout = try OCILayout.create(at: sourceLayout)
        let layerBytes = Array(try Data(contentsOf: URL(fileURLWithPath: tar)))
        let layer = try layout.writeBlob(layerBytes, mediaType: MediaType.ociLayer)
        let configBytes = Array(
            """
            {"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["\(layer.digest)"]}}
            """.utf8)
        let config = try layout.writeBlob(configBytes, mediaType: MediaType.ociConfig)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let manifestBytes = Array(try encoder.encode(ImageManifest(config: config, layers: [layer])))
        var manifest = try layout.writeBlob(manifestBytes, mediaType: MediaType.ociManifest)
        manifest.annotations = [OCILayout.refNameAnnotation: tag]
        try layout.writeIndex(ImageIndex(manifests: [manifest]))
        convertedLayout = directory + "/nydus"
        var options = ImageConverter.Options()
        options.build.chunkSize = chunkSize
        options.build.compression = compression
        options.build.syncOutput = false
        options.build.prefetchPaths = prefetch
        result = try ImageConverter(options: options).convert(source: sourceLayout, destination: convertedLayout)
    }

    /// Pushes the converted image's blobs, config and manifest with the project's client.
    public func push(with client: RegistryClient, registry: String, repository: String, tag: String) async throws {
        let layout = try OCILayout(path: convertedLayout)
        for descriptor in result.manifest.layers + [result.manifest.config] {
            try await client.pushBlob(
                registry: registry, repository: repository, descriptor: descriptor, from: .file(path: layout.blobPath(descriptor.digest)))
        }
        let manifestBytes = try layout.readBlob(result.manifestDescriptor.digest)
        try await client.pushManifest(
            registry: registry, repository: repository, reference: tag, bytes: manifestBytes, mediaType: result.manifestDescriptor.mediaType
        )
    }

    /// A deterministic test tree: `smallCount` small files of 3-60 KiB, `big` MiB of incompressible data in
    /// one file, and a few text files.
    public static func files(smallCount: Int, bigMiB: Int, seed: UInt64 = 7) -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        for index in 0..<smallCount {
            let size = 3 * 1024 + Int((UInt64(index) &* 2_654_435_761 &+ seed) % (57 * 1024))
            files["etc/small/file-\(index).bin"] = RegistryTestSupport.randomBytes(size, seed: seed &+ UInt64(index))
        }
        files["usr/lib/big.bin"] = RegistryTestSupport.randomBytes(bigMiB << 20, seed: seed &* 31)
        files["etc/hostname"] = Array("ondemand\n".utf8)
        files["usr/share/doc/README"] = Array(String(repeating: "lazy loading reads only what is needed\n", count: 500).utf8)
        return files
    }
}
