import Archive
import LinuxKernel
import OCI
import OCIRegistry
import RAFS
import RAFSBuilder

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ImagePuller {
    /// The first bytes of a package fetched at pull: its header and, for layers up to a few GiB, its whole
    /// checkpoint table (32 bytes a checkpoint).
    static let packagePrefixBytes: Int64 = 64 << 10
    /// Its last bytes, fetched alongside: the blob meta of a layer of up to a few thousand chunks.
    static let packageSuffixBytes: Int64 = 256 << 10

    /// What a pull takes of a zran package: its header, its index's header and checkpoint table, and the blob
    /// meta at its end, by range (one round trip for most layers, two for the largest). The windows, 32 KiB a
    /// checkpoint (16 MiB for a 1 GiB layer), stay in the registry until a read starts inflating at their
    /// checkpoint. Nothing here is taken on trust: the meta must pass the bootstrap's checks, and a table or
    /// window that lies can only make inflated chunks fail their digests (EIO), never change what readers get.
    struct PackageParts {
        var metaStart: UInt64
        var blobSize: UInt64
        var indexLength: UInt64
        /// The package's bytes from its start through its index table.
        var head: [UInt8]
        var meta: [UInt8]
        /// The whole package, when the first ranges covered it (a small layer's): its windows are local too.
        var whole: [UInt8]?

        /// Writes the parts at their places in a sparse file of the package's size: a `.zran` file whose
        /// windows are holes until fetched.
        func write(to path: String, packageSize: UInt64) throws {
            let fd = try retryingSyscall("open", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
            defer { close(fd) }
            try retryingSyscall("ftruncate", path) { ftruncate(fd, off_t(packageSize)) }
            if let whole {
                try FileSystem.writeAll(fd, whole, at: 0, path: path)
            } else {
                try FileSystem.writeAll(fd, head, at: 0, path: path)
                try FileSystem.writeAll(fd, meta, at: packageSize - UInt64(meta.count), path: path)
            }
            try retryingSyscall("fsync", path) { fsync(fd) }
        }
    }

    func packageParts(_ package: Descriptor, registry: String, repository: String) async throws -> PackageParts {
        let size = package.size
        guard size >= Int64(ZranPackage.headerSize) + Int64(GzipIndex.headerSize) else {
            throw ArchiveError.badGzipIndex(detail: "package \(package.digest) of \(size) bytes is too small")
        }
        let client = self.client
        let digest = package.digest
        let fetch: @Sendable (Range<Int64>) async throws -> [UInt8] = { range in
            range.isEmpty ? [] : try await client.fetchBlobRange(registry: registry, repository: repository, digest: digest, range: range)
        }
        let prefixEnd = min(size, Self.packagePrefixBytes)
        let suffixStart = max(prefixEnd, size - Self.packageSuffixBytes)
        async let suffixTask = fetch(suffixStart..<size)
        var head = try await fetch(0..<prefixEnd)
        let suffix = try await suffixTask
        let header = try ZranPackage.header(Array(head[0..<ZranPackage.headerSize]), packageSize: UInt64(size))
        let indexStart = ZranPackage.headerSize
        let tableSize = try GzipIndex.tableSize(prefix: Array(head[indexStart..<min(head.count, indexStart + GzipIndex.headerSize)]))
        let metaLength = header.blobSize - header.metaStart
        guard UInt64(tableSize) <= header.indexLength, UInt64(tableSize) <= UInt64(ImagePuller.maximumMetaBytes),
            metaLength <= UInt64(ImagePuller.maximumMetaBytes)
        else {
            throw ArchiveError.badGzipIndex(
                detail: "package \(digest): a table of \(tableSize) bytes or a meta of \(metaLength) bytes; refusing to fetch that much")
        }
        let headEnd = Int64(indexStart + tableSize)
        let metaStart = size - Int64(metaLength)
        // What the first two ranges left out lies between them: the rest of a long table, the start of a long
        // meta; fetched at once (one GET when they touch).
        var pieces = [(start: Int64(0), bytes: head), (start: suffixStart, bytes: suffix)]
        let missingHead = prefixEnd..<max(prefixEnd, min(headEnd, suffixStart))
        let missingMeta = max(metaStart, prefixEnd)..<max(max(metaStart, prefixEnd), suffixStart)
        if !missingHead.isEmpty, !missingMeta.isEmpty, missingMeta.lowerBound <= missingHead.upperBound {
            pieces.append((missingHead.lowerBound, try await fetch(missingHead.lowerBound..<missingMeta.upperBound)))
        } else {
            async let headPart = fetch(missingHead)
            let metaPart = try await fetch(missingMeta)
            pieces.append((missingHead.lowerBound, try await headPart))
            pieces.append((missingMeta.lowerBound, metaPart))
        }
        head = try Self.bytes(0..<headEnd, from: pieces, package: digest)
        let meta = try Self.bytes(metaStart..<size, from: pieces, package: digest)
        return PackageParts(
            metaStart: header.metaStart, blobSize: header.blobSize, indexLength: header.indexLength, head: head, meta: meta,
            whole: prefixEnd == suffixStart ? try Self.bytes(0..<size, from: pieces, package: digest) : nil)
    }

    /// `range` of the package out of fetched pieces (each a start and its bytes) that cover it together.
    private static func bytes(_ range: Range<Int64>, from pieces: [(start: Int64, bytes: [UInt8])], package: Digest) throws -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(range.count)
        var position = range.lowerBound
        while position < range.upperBound {
            guard
                let piece = pieces.first(where: { $0.start <= position && position < $0.start + Int64($0.bytes.count) })
            else { throw ArchiveError.badGzipIndex(detail: "package \(package): byte \(position) was not fetched (short answers)") }
            let from = Int(position - piece.start)
            let to = Int(min(range.upperBound, piece.start + Int64(piece.bytes.count)) - piece.start)
            result += piece.bytes[from..<to]
            position += Int64(to - from)
        }
        return result
    }
}
