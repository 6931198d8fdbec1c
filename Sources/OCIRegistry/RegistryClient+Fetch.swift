import LinuxKernel
import Logging
import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An image resolved for one platform.
public struct ResolvedImage: Sendable {
    public var reference: ImageReference
    /// The index or manifest list the tag pointed at, if any.
    public var index: FetchedManifest?
    public var manifest: FetchedManifest
    public var imageManifest: ImageManifest {
        guard case .manifest(let m) = manifest.content else { preconditionFailure("resolve returns manifests only") }
        return m
    }
}

extension RegistryClient {
    static func pullScope(_ repository: String) -> String { "repository:\(repository):pull" }

    /// `GET /v2/<name>/manifests/<reference>`: the manifest or index, verified against the reference's digest
    /// and the `Docker-Content-Digest` header, and checked against `configuration.limits`.
    public func fetchManifest(_ reference: ImageReference) async throws(RegistryError) -> FetchedManifest {
        try await withEndpoints(registry: reference.registry, capability: reference.digest == nil ? .resolve : .pull) {
            endpoint throws(RegistryError) in
            try await fetchManifest(reference, endpoint: endpoint)
        }
    }

    private func fetchManifest(_ reference: ImageReference, endpoint: RegistryEndpoint) async throws(RegistryError) -> FetchedManifest {
        let scope = Self.pullScope(reference.repository)
        var call = Call(path: "/\(reference.repository)/manifests/\(reference.reference)", scope: scope)
        call.headers = [("Accept", MediaType.manifestAccept)]
        call.memoryLimit = configuration.limits.maxManifestBytes
        let response = try await send(call, registry: reference.registry, endpoint: endpoint)
        guard response.status == 200 else { throw error(for: response, method: "GET", scope: scope, host: endpoint.host) }
        let url = response.effectiveURL
        let found = Digest.sha256(of: response.body)
        if let expected = reference.digest {
            guard expected.algorithm == Digest.sha256Algorithm else { throw .format(.unsupportedDigest(expected)) }
            guard expected == found else { throw .digestMismatch(url: url, expected: expected, found: found) }
        }
        if let header = response.headers["Docker-Content-Digest"], let claimed = try? Digest(parsing: header),
            claimed.algorithm == Digest.sha256Algorithm, claimed != found
        {
            throw .digestMismatch(url: url, expected: claimed, found: found)
        }
        do throws(OCIError) {
            return try FetchedManifest.decode(
                bytes: response.body, mediaType: response.headers["Content-Type"] ?? "",
                digest: found, url: url, limits: configuration.limits)
        } catch {
            throw .format(error)
        }
    }

    /// Resolves a tag or digest to the image manifest for `platform`, going through an index if there is one.
    public func resolve(_ reference: ImageReference, platform: Platform = .current) async throws(RegistryError) -> ResolvedImage {
        let top = try await fetchManifest(reference)
        switch top.content {
        case .manifest:
            return ResolvedImage(reference: reference, index: nil, manifest: top)
        case .index(let index):
            guard let entry = index.select(platform) else {
                throw .noMatchingPlatform(
                    reference: reference.description, platform: platform.description,
                    available: index.manifests.compactMap { $0.platform?.description })
            }
            var child = reference
            child.digest = entry.digest
            let manifest = try await fetchManifest(child)
            guard case .manifest = manifest.content else {
                throw .format(.invalidManifest(source: child.description, reason: "index entry \(entry.digest) is not an image manifest"))
            }
            return ResolvedImage(reference: reference, index: top, manifest: manifest)
        }
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: the blob's size, or nil when the registry does not have it.
    public func blobSize(registry: String, repository: String, digest: Digest) async throws(RegistryError) -> Int64? {
        try await withEndpoints(registry: registry, capability: .pull) { endpoint throws(RegistryError) in
            let scope = Self.pullScope(repository)
            let response = try await send(
                Call(method: "HEAD", path: "/\(repository)/blobs/\(digest)", scope: scope),
                registry: registry, endpoint: endpoint)
            if response.status == 404 { return nil }
            guard response.status == 200 else { throw error(for: response, method: "HEAD", scope: scope, host: endpoint.host) }
            return response.headers["Content-Length"].flatMap { Int64($0) }
        }
    }

    /// Downloads a blob to `path`, hashing while writing, resuming with `Range` after dropped connections.
    /// The content lands in `<path>.partial` and is renamed to `path` (after fsync) only when its size and
    /// digest match `descriptor`; on any failure the partial file is removed and nothing is left at `path`.
    /// - Returns: the number of bytes stored.
    @discardableResult
    public func fetchBlob(
        registry: String, repository: String, descriptor: Descriptor, to path: String
    ) async throws(RegistryError) -> Int64 {
        guard descriptor.digest.algorithm == Digest.sha256Algorithm else { throw .format(.unsupportedDigest(descriptor.digest)) }
        guard descriptor.size >= 0, descriptor.size <= configuration.limits.maxLayerBytes else {
            throw .format(.absurdManifest(source: descriptor.digest.description, reason: "blob size \(descriptor.size)"))
        }
        let partial = path + ".partial"
        do {
            return try await withEndpoints(registry: registry, capability: .pull) { endpoint throws(RegistryError) in
                try await fetchBlob(
                    registry: registry, repository: repository, descriptor: descriptor, partial: partial,
                    path: path, endpoint: endpoint)
            }
        } catch {
            unlink(partial)
            throw error
        }
    }

    private func fetchBlob(
        registry: String, repository: String, descriptor: Descriptor, partial: String, path: String,
        endpoint: RegistryEndpoint
    ) async throws(RegistryError) -> Int64 {
        let sink = try BlobSink(path: partial, expectedSize: descriptor.size)
        let scope = Self.pullScope(repository)
        var call = Call(path: "/\(repository)/blobs/\(descriptor.digest)", scope: scope, sink: sink)
        call.bounded = false
        let log = logger.with(["registry.host": "\(endpoint.host)", "blob.digest": "\(descriptor.digest)"])
        var response = try await send(call, registry: registry, endpoint: endpoint)
        // A connection that closes cleanly before the end is a short body: resume it like a dropped one.
        var shortRetries = 0
        while (200...206).contains(response.status), sink.written < descriptor.size, shortRetries < configuration.retry.maxAttempts {
            shortRetries += 1
            log.info("short blob body, resuming", metadata: ["blob.resume_offset": "\(sink.written)"])
            response = try await send(call, registry: registry, endpoint: endpoint)
        }
        guard response.status == 200 || response.status == 206 else {
            throw error(for: response, method: "GET", scope: scope, host: endpoint.host)
        }
        let url = response.effectiveURL
        guard sink.written == descriptor.size else { throw .sizeMismatch(url: url, expected: descriptor.size, found: sink.written) }
        let found = try sink.finish()
        guard found == descriptor.digest else {
            log.warning("blob digest mismatch, discarded", metadata: ["blob.found": "\(found)"])
            throw .digestMismatch(url: url, expected: descriptor.digest, found: found)
        }
        do { try FileSystem.rename(partial, path) } catch { throw .io(path: path, reason: error.description) }
        log.debug("blob stored", metadata: ["blob.size": "\(sink.written)", "http.version": "\(response.httpVersion)"])
        return sink.written
    }

    /// Reads `range` of a blob into memory (`Range: bytes=a-b`, expecting 206).
    /// Nothing is verified: the caller checks chunk digests.
    public func fetchBlobRange(
        registry: String, repository: String, digest: Digest, range: Range<Int64>
    ) async throws(RegistryError) -> [UInt8] {
        guard !range.isEmpty else { return [] }
        let (body, url) = try await blobBytes(
            registry: registry, repository: repository, digest: digest, range: "bytes=\(range.lowerBound)-\(range.upperBound - 1)",
            memoryLimit: Int(range.count) + 1, accepted: [206])
        guard body.count == range.count else { throw .sizeMismatch(url: url, expected: Int64(range.count), found: Int64(body.count)) }
        return body
    }

    /// A blob whose size is not known yet, whole, in memory, or an error when it is larger than `maximumBytes`.
    /// Nothing is verified: the caller checks the bytes against the descriptor it learns later (a speculative
    /// fetch started before the manifest arrived).
    public func fetchBlobUnsized(
        registry: String, repository: String, digest: Digest, maximumBytes: Int
    ) async throws(RegistryError) -> [UInt8] {
        try await blobBytes(
            registry: registry, repository: repository, digest: digest, range: nil, memoryLimit: maximumBytes, accepted: [200]
        ).body
    }

    /// The last `count` bytes of a blob whose size is not known yet (`Range: bytes=-count`): all of it when it is
    /// shorter. Nothing is verified.
    public func fetchBlobSuffix(registry: String, repository: String, digest: Digest, count: Int) async throws(RegistryError) -> [UInt8] {
        guard count > 0 else { return [] }
        let (body, url) = try await blobBytes(
            registry: registry, repository: repository, digest: digest, range: "bytes=-\(count)", memoryLimit: count + 1,
            accepted: [200, 206])
        guard body.count <= count else { throw .sizeMismatch(url: url, expected: Int64(count), found: Int64(body.count)) }
        return body
    }

    /// One GET of a blob into memory, `range` its Range header (nil: the whole blob), at most `memoryLimit`
    /// bytes, answered with one of the `accepted` statuses; the body and where it came from.
    private func blobBytes(
        registry: String, repository: String, digest: Digest, range: String?, memoryLimit: Int, accepted: Set<Int>
    ) async throws(RegistryError) -> (body: [UInt8], url: String) {
        try await withEndpoints(registry: registry, capability: .pull) { endpoint throws(RegistryError) in
            let scope = Self.pullScope(repository)
            var call = Call(path: "/\(repository)/blobs/\(digest)", scope: scope)
            if let range { call.headers = [("Range", range)] }
            call.memoryLimit = memoryLimit
            let response = try await send(call, registry: registry, endpoint: endpoint)
            guard accepted.contains(response.status) else { throw error(for: response, method: "GET", scope: scope, host: endpoint.host) }
            return (response.body, response.effectiveURL)
        }
    }

    /// Streams `range` of a blob to `receiver` as its bytes arrive (`Range: bytes=a-b`, expecting 206). A
    /// dropped connection is resumed from the first byte not yet delivered, so `receiver` sees every byte once,
    /// in order. `receiver` runs on the transfer thread and returns false to stop the transfer (the call then
    /// throws `.cancelled`). Nothing is verified: the caller checks chunk digests. A `background` transfer
    /// runs at background CPU priority.
    public func streamBlobRange(
        registry: String, repository: String, digest: Digest, range: Range<Int64>, background: Bool = false,
        receiver: @escaping (UnsafeRawBufferPointer) -> Bool
    ) async throws(RegistryError) {
        guard !range.isEmpty else { return }
        let sink = RangeStreamSink(url: digest.description, range: range, receiver: receiver)
        try await withEndpoints(registry: registry, capability: .pull) { endpoint throws(RegistryError) in
            let scope = Self.pullScope(repository)
            var call = Call(path: "/\(repository)/blobs/\(digest)", scope: scope, sink: sink)
            call.background = background
            // Readers wait on these bytes: a stalled body is resumed on a new connection within seconds.
            call.stallSeconds = configuration.timeouts.rangeStallSeconds
            let response = try await send(call, registry: registry, endpoint: endpoint)
            guard response.status == 206 else { throw error(for: response, method: "GET", scope: scope, host: endpoint.host) }
            guard sink.delivered == Int64(range.count) else {
                throw .sizeMismatch(url: response.effectiveURL, expected: Int64(range.count), found: sink.delivered)
            }
        }
    }

    /// `GET /v2/<name>/tags/list`.
    public func listTags(registry: String, repository: String) async throws(RegistryError) -> [String] {
        try await withEndpoints(registry: registry, capability: .resolve) { endpoint throws(RegistryError) in
            let scope = Self.pullScope(repository)
            let response = try await send(Call(path: "/\(repository)/tags/list", scope: scope), registry: registry, endpoint: endpoint)
            guard response.status == 200 else { throw error(for: response, method: "GET", scope: scope, host: endpoint.host) }
            struct Body: Decodable { var tags: [String]? }
            guard let body = try? JSONDecoder().decode(Body.self, from: Data(response.body)) else {
                throw .unexpectedStatus(url: response.effectiveURL, method: "GET", status: 200, errors: [])
            }
            return body.tags ?? []
        }
    }
}
