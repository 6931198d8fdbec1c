import Archive
import Digests
import Foundation
import LinuxKernel
import OCI

/// `docker save` output (and `skopeo copy ... docker-archive:`) turned into an OCI image layout, so the
/// converter takes it like any layout. The archive is read once, streaming: each member is copied to a file
/// while its sha256 is taken, then `manifest.json` (`[{"Config", "RepoTags", "Layers"}]`) names the config
/// and the layers in order. Layers keep their bytes; their media type follows their compression (docker saves
/// them uncompressed). Docker 25+ archives are also OCI layouts; they are read the same way, by their
/// `manifest.json`.
public enum DockerArchive {
    struct ManifestEntry: Decodable {
        var config: String
        var repoTags: [String]?
        var layers: [String]

        enum CodingKeys: String, CodingKey {
            case config = "Config"
            case repoTags = "RepoTags"
            case layers = "Layers"
        }
    }

    /// Writes an OCI layout at `destination` holding one image of the archive, tagged `tag`: the one `select`
    /// names (one of its `RepoTags`, or `@N` for the N-th image, from 0, as skopeo's `docker-archive:PATH:REF`
    /// and `:@N`), or the only one. Returns the image's first repository tag, if the archive names one.
    @discardableResult
    public static func importLayout(archive: String, into destination: String, tag: String, select: String? = nil) throws -> String? {
        let layout = try OCILayout.create(at: destination)
        let staging = destination + "/staging"
        try FileSystem.makeDirectories(staging, mode: 0o700)
        defer { try? FileSystem.removeTree(staging) }
        // Member path -> its file under staging, digest and size.
        var members: [String: (file: String, digest: Digest, size: Int64)] = [:]
        /// Links to members (docker 25+ keeps the legacy `<id>/layer.tar` names as symlinks into `blobs/`).
        var links: [String: String] = [:]
        let reader = try TarReader(FileByteSource(path: archive))
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while let entry = try reader.next() {
            switch entry.kind {
            case .hardlink: links[entry.path] = entry.linkTarget
            case .symlink: links[entry.path] = resolve(entry.linkTarget, from: entry.path)
            default: break
            }
            guard entry.kind == .regular else { continue }
            let file = staging + "/\(members.count)"
            let fd = try retryingSyscall("open", file) { open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
            defer { close(fd) }
            var hasher = SHA256()
            var written: UInt64 = 0
            while true {
                let n = try buffer.withUnsafeMutableBytes { try reader.readData(into: $0) }
                if n == 0 { break }
                try buffer.withUnsafeBytes { raw in
                    let piece = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                    hasher.update(piece)
                    try FileSystem.writeAll(fd, piece, at: written, path: file)
                }
                written += UInt64(n)
            }
            let digest = Digest(sha256: hasher.finalize())
            members[entry.path] = (file, digest, Int64(written))
        }
        guard let manifestFile = members["manifest.json"] else {
            throw BuildError.invalidOptions(reason: "\(archive) is not a docker-archive: it has no manifest.json (docker save writes one)")
        }
        let entries: [ManifestEntry]
        do {
            entries = try JSONDecoder().decode([ManifestEntry].self, from: Data(try FileSystem.readFile(manifestFile.file)))
        } catch {
            throw BuildError.invalidOptions(reason: "\(archive): manifest.json is not docker save's: \(error)")
        }
        guard !entries.isEmpty else { throw BuildError.invalidOptions(reason: "\(archive): manifest.json lists no image") }
        let image = try choose(select, from: entries, archive: archive)
        func blob(_ name: String, mediaType: (String) throws -> String) throws -> Descriptor {
            var normalized = name.hasPrefix("./") ? String(name.dropFirst(2)) : name
            for _ in 0..<8 where members[normalized] == nil {
                guard let target = links[normalized] else { break }
                normalized = target
            }
            guard let member = members[normalized] else {
                throw BuildError.invalidOptions(reason: "\(archive): manifest.json names \(name), which the archive does not hold")
            }
            let type = try mediaType(member.file)
            if !FileSystem.exists(layout.blobPath(member.digest)) {
                try layout.moveBlob(from: member.file, digest: member.digest, size: member.size)
            }
            return Descriptor(mediaType: type, digest: member.digest, size: member.size)
        }
        let config = try blob(image.config) { _ in MediaType.ociConfig }
        let layers = try image.layers.map { name in try blob(name, mediaType: layerMediaType) }
        var manifest = try layout.writeBlob(
            try OCILayout.encode(ImageManifest(config: config, layers: layers)), mediaType: MediaType.ociManifest)
        manifest.annotations = [OCILayout.refNameAnnotation: tag]
        try layout.writeIndex(ImageIndex(manifests: [manifest]))
        return image.repoTags?.first
    }

    /// The image `select` names, or the only one; an archive of several images needs a name.
    static func choose(_ select: String?, from entries: [ManifestEntry], archive: String) throws -> ManifestEntry {
        let names = entries.enumerated().map { index, entry in (entry.repoTags ?? []).first ?? "@\(index)" }
        guard let select else {
            guard entries.count == 1 else {
                throw BuildError.invalidOptions(
                    reason:
                        "\(archive) holds \(entries.count) images (\(names.joined(separator: ", "))); name one: docker-archive:PATH:REPO:TAG or docker-archive:PATH:@INDEX"
                )
            }
            return entries[0]
        }
        if select.hasPrefix("@") {
            guard let index = Int(select.dropFirst()), entries.indices.contains(index) else {
                throw BuildError.invalidOptions(reason: "\(archive) has no image \(select) (it holds \(entries.count), from @0)")
            }
            return entries[index]
        }
        let wanted = (try? ImageReference(parsing: select).description) ?? select
        guard
            let entry = entries.first(where: { entry in
                (entry.repoTags ?? []).contains { $0 == select || (try? ImageReference(parsing: $0).description) == wanted }
            })
        else {
            throw BuildError.invalidOptions(reason: "\(archive) has no image tagged \(select); it holds \(names.joined(separator: ", "))")
        }
        return entry
    }

    /// A symlink's target as a member path: relative to the link's directory (an absolute one to the archive's
    /// root), `.` and `..` resolved by name; `..` never climbs above the root. (Foundation's `standardizingPath`
    /// leaves `..` in relative paths.)
    static func resolve(_ target: String, from link: String) -> String {
        var parts = target.hasPrefix("/") ? [] : link.split(separator: "/").dropLast().map(String.init)
        for part in target.split(separator: "/") where part != "." {
            if part == ".." { _ = parts.popLast() } else { parts.append(String(part)) }
        }
        return parts.joined(separator: "/")
    }

    /// A layer's media type from its first bytes: gzip, zstd, or a plain tar.
    static func layerMediaType(_ file: String) throws -> String {
        let fd = try retryingSyscall("open", file) { open(file, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 4)
        let n = head.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4) }
        if n >= 2 && head[0] == 0x1f && head[1] == 0x8b { return MediaType.ociLayerGzip }
        if n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] { return MediaType.ociLayerZstd }
        return MediaType.ociLayer
    }
}
