import LinuxKernel
import Logging
import OCI
import OCIRegistry
import RAFS
import RAFSBuilder
import SnapshotterAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `convert` and `inspect`, run by the daemon for snapctl (which knows only the API types). Needs no image
/// store: a conversion reads and writes OCI layouts (or a registry) in a work directory under `tmp/`.
final class ConversionService: Sendable {
    static let registryPrefix = "docker://"
    static let dockerArchivePrefix = "docker-archive:"
    let root: String
    let client: RegistryClient
    let logger: Logger

    init(root: String, client: RegistryClient, logger: Logger) {
        self.root = root
        self.client = client
        self.logger = logger
    }

    /// Converts an OCI image to the nydus-style layout; either end is a layout directory or `docker://REF`.
    /// `progress` hears the build's phases (the offline call shows them on a terminal).
    func convert(_ request: ConvertRequest, progress: (@Sendable (BuildProgress) -> Void)? = nil) async throws -> ConvertResponse {
        let started = monotonicNanoseconds()
        var options = ImageConverter.Options()
        if let chunkSize = request.chunkSize { options.build.chunkSize = chunkSize }
        if let compression = request.compression {
            guard let value = ChunkCompression(rawValue: compression) else {
                throw APIError.invalidArgument("compression \(compression) is not one of zstd, lz4, none")
            }
            options.build.compression = value
        }
        options.build.prefetchPaths = request.prefetch ?? []
        options.sourceReference = request.sourceTag
        options.targetReference = request.tag
        let transfer = LayoutTransfer(client: client)
        let work = FileSystem.join(root, "tmp", "convert-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
        try FileSystem.makeDirectories(work, mode: 0o700)
        defer { try? FileSystem.removeTree(work) }

        var source = request.source
        if request.source.hasPrefix(Self.registryPrefix) {
            let reference = try ImageReference(parsing: String(request.source.dropFirst(Self.registryPrefix.count)))
            source = FileSystem.join(work, "source")
            try await transfer.download(reference, to: source, tag: "source")
            options.sourceReference = "source"
            options.targetReference = request.tag ?? reference.tag ?? "latest"
        } else if request.source.hasPrefix(Self.dockerArchivePrefix) {
            // docker save's archive: imported into a layout first.
            // docker-archive:PATH[:REPO:TAG | :@INDEX], as skopeo names one image of an archive.
            let rest = request.source.dropFirst(Self.dockerArchivePrefix.count)
            let archive = String(rest.prefix { $0 != ":" })
            let select = rest.count > archive.count ? String(rest.dropFirst(archive.count + 1)) : nil
            try Self.requireAbsolute(archive, what: "docker-archive")
            let imported = FileSystem.join(work, "source")
            source = imported
            let named = try await runBlocking {
                try DockerArchive.importLayout(archive: archive, into: imported, tag: "source", select: select)
            }
            options.sourceReference = "source"
            options.targetReference = request.tag ?? named.flatMap { try? ImageReference(parsing: $0).tag } ?? "latest"
        } else {
            try Self.requireAbsolute(source, what: "source")
        }
        let pushTo: ImageReference?
        var destination = request.destination
        if request.destination.hasPrefix(Self.registryPrefix) {
            pushTo = try ImageReference(parsing: String(request.destination.dropFirst(Self.registryPrefix.count)))
            destination = FileSystem.join(work, "destination")
        } else {
            pushTo = nil
            try Self.requireAbsolute(destination, what: "destination")
        }
        let converter = ImageConverter(options: options, logger: logger)
        let input = source
        let output = destination
        let result = try await runBlocking { try converter.convert(source: input, destination: output, progress: progress) }
        if let pushTo { try await transfer.upload(layout: destination, manifest: result.manifestDescriptor, to: pushTo) }
        let blobs = result.build.blobs.map {
            BlobInfo(
                id: $0.blobID, storedSize: Int64($0.compressedSize), uncompressedSize: Int64($0.uncompressedSize),
                localBytes: Int64($0.uncompressedSize), backingFile: "")
        }
        logger.info(
            "image converted",
            metadata: [
                "convert.source": "\(request.source)", "convert.destination": "\(request.destination)",
                "image.digest": "\(result.manifestDescriptor.digest)",
            ])
        return ConvertResponse(
            manifestDigest: result.manifestDescriptor.digest.description, sourceManifestDigest: result.sourceManifest.digest.description,
            blobs: blobs, bootstrapSize: result.bootstrapLayer.size, seconds: Double(monotonicNanoseconds() - started) / 1e9)
    }

    /// Blocking: lists a bootstrap's tree and optionally verifies every chunk of the blobs in a directory.
    func inspect(_ request: InspectRequest) throws -> InspectResponse {
        try Self.requireAbsolute(request.bootstrap, what: "bootstrap")
        if let blobs = request.blobs { try Self.requireAbsolute(blobs, what: "blobs directory") }
        var verified: VerifySummary?
        if request.verify == true {
            guard let blobs = request.blobs else { throw APIError.invalidArgument("--verify needs --blobs DIR") }
            let report = try ImageInspector.verify(bootstrap: request.bootstrap, blobsDirectory: blobs)
            verified = VerifySummary(
                blobsChecked: report.blobsChecked, blobsMissing: report.blobsMissing, chunksChecked: report.chunksChecked,
                bytesChecked: report.bytesChecked)
        }
        let records = try ImageInspector(bootstrap: request.bootstrap, blobsDirectory: request.blobs).records()
        return InspectResponse(
            entries: records.map {
                InspectEntry(
                    path: $0.path, type: $0.type, mode: $0.mode, uid: $0.uid, gid: $0.gid, size: $0.size, sha256: $0.sha256,
                    target: $0.symlinkTarget ?? $0.device)
            },
            lines: records.map(\.line), verified: verified)
    }

    static func requireAbsolute(_ path: String, what: String) throws {
        guard path.hasPrefix("/") else {
            throw APIError.invalidArgument("\(what) \(path) must be an absolute path (or docker://REF where a registry is allowed)")
        }
    }
}
