#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Media types of OCI image-spec 1.1 and Docker schema 2.
public enum MediaType {
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let ociEmpty = "application/vnd.oci.empty.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"

    public static let indexTypes: Set<String> = [ociIndex, dockerManifestList]
    public static let manifestTypes: Set<String> = [ociManifest, dockerManifest]
    /// The Accept list containerd sends (schema 1 is never asked for).
    package static let manifestAccept = [dockerManifest, dockerManifestList, ociManifest, ociIndex, "*/*"].joined(separator: ", ")
}

/// An OCI content descriptor.
public struct Descriptor: Codable, Sendable, Hashable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var urls: [String]?
    public var annotations: [String: String]?
    public var platform: Platform?
    public var artifactType: String?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil, platform: Platform? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.platform = platform
    }
}

/// The platform of an index entry, with containerd's architecture normalisation for matching.
public struct Platform: Codable, Sendable, Hashable, CustomStringConvertible {
    public var architecture: String
    public var os: String
    public var variant: String?
    public var osVersion: String?
    public var osFeatures: [String]?

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    public init(os: String = "linux", architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// The platform this process runs on.
    public static var current: Platform {
        #if arch(x86_64)
        return Platform(architecture: "amd64")
        #elseif arch(arm64)
        return Platform(architecture: "arm64")
        #else
        return Platform(architecture: "unknown")
        #endif
    }

    /// containerd's normalisation: x86_64→amd64 (v1→none), aarch64→arm64 (v8→none), armhf→arm/v7, armel→arm/v6,
    /// plain arm→v7.
    public var normalized: Platform {
        var p = self
        p.os = os.lowercased()
        var variant = self.variant?.lowercased()
        switch architecture.lowercased() {
        case "x86_64", "x86-64", "amd64":
            p.architecture = "amd64"
            if variant == "v1" { variant = nil }
        case "aarch64", "arm64":
            p.architecture = "arm64"
            if variant == "v8" { variant = nil }
        case "armhf":
            p.architecture = "arm"
            variant = "v7"
        case "armel":
            p.architecture = "arm"
            variant = "v6"
        case "arm":
            p.architecture = "arm"
            if variant == nil || variant == "" { variant = "v7" }
        case "i386": p.architecture = "386"
        default: p.architecture = architecture.lowercased()
        }
        p.variant = (variant?.isEmpty ?? true) ? nil : variant
        return p
    }

    /// True when `other` (an index entry) can run here: same OS and architecture after normalisation and, when
    /// this platform names a variant, the same variant.
    public func matches(_ other: Platform) -> Bool {
        let a = normalized
        let b = other.normalized
        guard a.os == b.os, a.architecture == b.architecture else { return false }
        if let v = a.variant { return b.variant == nil || b.variant == v }
        return true
    }

    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }
}

/// An image manifest (OCI or Docker schema 2).
public struct ImageManifest: Codable, Sendable, Hashable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(mediaType: String = MediaType.ociManifest, config: Descriptor, layers: [Descriptor], annotations: [String: String]? = nil) {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

/// An image index or Docker manifest list.
public struct ImageIndex: Codable, Sendable, Hashable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
    public var annotations: [String: String]?

    public init(mediaType: String = MediaType.ociIndex, manifests: [Descriptor]) {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.manifests = manifests
    }

    /// The first entry whose platform matches (image-index.md: "the first matching entry SHOULD be used").
    public func select(_ platform: Platform) -> Descriptor? {
        manifests.first { entry in
            guard MediaType.manifestTypes.contains(entry.mediaType), let p = entry.platform else { return false }
            return platform.matches(p)
        }
    }
}

/// Bounds that a manifest's claims must respect before anything is downloaded.
public struct ManifestLimits: Sendable {
    /// The largest manifest body read (distribution-spec: registries should accept at least 4 MB).
    public var maxManifestBytes = 4 << 20
    public var maxConfigBytes: Int64 = 64 << 20
    public var maxLayerBytes: Int64 = 1 << 40
    public var maxLayers = 1024
    public var maxIndexEntries = 4096
    public init() {}
}

/// A manifest or index as fetched: its exact bytes, its descriptor and the decoded document.
public struct FetchedManifest: Sendable {
    public enum Content: Sendable {
        case manifest(ImageManifest)
        case index(ImageIndex)
    }
    public var descriptor: Descriptor
    public var bytes: [UInt8]
    public var content: Content

    /// Decodes `bytes` as `mediaType` and checks the sizes it claims against `limits`.
    package static func decode(
        bytes: [UInt8], mediaType rawType: String, digest: Digest, url: String, limits: ManifestLimits
    )
        throws(OCIError) -> FetchedManifest
    {
        var mediaType = rawType.split(separator: ";").first.map { String($0).trimmedWhitespace } ?? ""
        struct Probe: Decodable {
            var mediaType: String?
            var manifests: [Descriptor]?
            var config: Descriptor?
        }
        let decoder = JSONDecoder()
        let data = Data(bytes)
        let probe: Probe
        do { probe = try decoder.decode(Probe.self, from: data) } catch {
            throw .invalidManifest(source: url, reason: "not JSON a manifest: \(error)")
        }
        if let declared = probe.mediaType {
            if !mediaType.isEmpty, mediaType != "application/json", declared != mediaType {
                throw .invalidManifest(source: url, reason: "mediaType \(declared) differs from Content-Type \(mediaType)")
            }
            mediaType = declared
        } else if !(MediaType.indexTypes.contains(mediaType) || MediaType.manifestTypes.contains(mediaType)) {
            mediaType = probe.manifests != nil ? MediaType.ociIndex : MediaType.ociManifest
        }
        let descriptor = Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
        do {
            if MediaType.indexTypes.contains(mediaType) {
                let index = try decoder.decode(ImageIndex.self, from: data)
                guard index.manifests.count <= limits.maxIndexEntries else {
                    throw OCIError.absurdManifest(source: url, reason: "\(index.manifests.count) index entries")
                }
                for entry in index.manifests where entry.size < 0 || entry.size > Int64(limits.maxManifestBytes) {
                    throw OCIError.absurdManifest(source: url, reason: "entry \(entry.digest) claims \(entry.size) bytes")
                }
                return FetchedManifest(descriptor: descriptor, bytes: bytes, content: .index(index))
            }
            guard MediaType.manifestTypes.contains(mediaType) else {
                throw OCIError.unsupportedMediaType(source: url, mediaType: mediaType)
            }
            let manifest = try decoder.decode(ImageManifest.self, from: data)
            guard manifest.schemaVersion == 2 else {
                throw OCIError.invalidManifest(source: url, reason: "schemaVersion \(manifest.schemaVersion)")
            }
            guard manifest.config.size >= 0, manifest.config.size <= limits.maxConfigBytes else {
                throw OCIError.absurdManifest(source: url, reason: "config claims \(manifest.config.size) bytes")
            }
            guard manifest.layers.count <= limits.maxLayers else {
                throw OCIError.absurdManifest(source: url, reason: "\(manifest.layers.count) layers")
            }
            for layer in manifest.layers where layer.size < 0 || layer.size > limits.maxLayerBytes {
                throw OCIError.absurdManifest(source: url, reason: "layer \(layer.digest) claims \(layer.size) bytes")
            }
            return FetchedManifest(descriptor: descriptor, bytes: bytes, content: .manifest(manifest))
        } catch let error as OCIError {
            throw error
        } catch {
            throw .invalidManifest(source: url, reason: "\(error)")
        }
    }
}
