import Archive
import LinuxKernel
import RAFS

/// One indexed layer as published (`ZranLayout.packageMediaType`): what a puller needs to serve the layer's
/// blob lazily. Layout (little-endian):
///
///     0   magic "ODZRANP1"        8
///     8   meta start              u64   (where the blob's meta sections start: the layer's tar size)
///     16  blob size               u64   (the blob file: meta start + the meta sections)
///     24  gzip index length       u64
///     32  the encoded `GzipIndex`
///     ..  the blob's bytes from meta start to its end (chunk infos, digests, ToC)
public struct ZranPackage: Sendable {
    public static let magic = Array("ODZRANP1".utf8)
    public static let headerSize = 32

    public var metaStart: UInt64
    public var blobSize: UInt64
    public var gzipIndex: [UInt8]
    public var meta: [UInt8]

    public init(metaStart: UInt64, blobSize: UInt64, gzipIndex: [UInt8], meta: [UInt8]) {
        self.metaStart = metaStart
        self.blobSize = blobSize
        self.gzipIndex = gzipIndex
        self.meta = meta
    }

    /// The package of a blob a gzip-indexed build wrote.
    public init(built blob: BuiltBlob) throws {
        guard let indexPath = blob.gzipIndexPath, let metaStart = blob.metaStart else {
            throw BuildError.invalidOptions(reason: "blob \(blob.blobID) was not built with a gzip index")
        }
        let file = try ImageFile(path: blob.path)
        self.init(
            metaStart: metaStart, blobSize: file.size, gzipIndex: try FileSystem.readFile(indexPath),
            meta: try file.read(at: metaStart, count: Int(file.size - metaStart), what: "blob meta"))
    }

    /// The header from a package's first bytes (at least `headerSize`), checked against the package's size.
    public static func header(
        _ bytes: [UInt8], packageSize: UInt64
    ) throws(ArchiveError) -> (metaStart: UInt64, blobSize: UInt64, indexLength: UInt64) {
        guard bytes.count >= headerSize, Array(bytes[0..<8]) == magic, packageSize >= UInt64(headerSize) else {
            throw ArchiveError.badGzipIndex(detail: "not a zran package (bad magic)")
        }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        let (metaStart, blobSize, indexLength) = (u64(8), u64(16), u64(24))
        let available = packageSize - UInt64(headerSize)
        guard indexLength <= available, blobSize >= metaStart, blobSize - metaStart == available - indexLength else {
            throw ArchiveError.badGzipIndex(
                detail: "zran package parts do not add up (index \(indexLength), meta \(metaStart)..<\(blobSize), \(packageSize) bytes)")
        }
        return (metaStart, blobSize, indexLength)
    }

    public func encoded() -> [UInt8] {
        var bytes = Self.magic
        for value in [metaStart, blobSize, UInt64(gzipIndex.count)] {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        return bytes + gzipIndex + meta
    }
}

/// Builds the gzip index of a plain OCI image: the merged RAFS bootstrap, its gzip tar layer, and one
/// package per layer that holds file data. Layers must be gzip (one member each) and digest-checked.
public struct ZranIndexBuilder: Sendable {
    /// Checkpoints about every 2 MiB of tar: a cold read inflates 1 MiB on average before its bytes, and a
    /// 1 GiB layer's index holds ~16 MiB of windows.
    public static let defaultSpan: UInt64 = 2 << 20

    public var options: BuildOptions

    public init(span: UInt64 = Self.defaultSpan, chunkSize: UInt32 = 1 << 20) {
        options = BuildOptions(chunkSize: chunkSize, compression: .none)
        options.gzipIndexSpan = span
    }

    /// What an index build produced.
    public struct Result: Sendable {
        /// The gzip tar holding `image/image.boot`.
        public var bootstrapLayer: [UInt8]
        public var bootstrapPath: String
        /// One per blob, in blob-table order: the package's bytes, the blob id, the layer digest and how many
        /// checkpoints its index holds.
        public var packages: [(blobID: String, layerDigest: String, bytes: [UInt8], checkpoints: Int)]
        public var build: BuildResult
    }

    public func build(layers: [LayerInput], workDirectory: String, progress: (@Sendable (BuildProgress) -> Void)? = nil) throws -> Result {
        let built = try ImageBuilder(options: options).build(layers: layers, outputDirectory: workDirectory, progress: progress)
        let bootstrap = try ImageFile(path: built.bootstrapPath)
        let tar = BootstrapLayer.tar(bootstrap: try bootstrap.read(at: 0, count: Int(bootstrap.size), what: "bootstrap"))
        var packages: [(blobID: String, layerDigest: String, bytes: [UInt8], checkpoints: Int)] = []
        for blob in built.blobs {
            guard let digest = blob.layerDigest else { continue }
            let package = try ZranPackage(built: blob)
            let checkpoints = (try GzipIndex.tableSize(prefix: package.gzipIndex) - GzipIndex.headerSize) / GzipIndex.entrySize
            packages.append((blob.blobID, digest, package.encoded(), checkpoints))
        }
        return Result(
            bootstrapLayer: try GzipCompressor.compress(tar), bootstrapPath: built.bootstrapPath, packages: packages, build: built)
    }
}
