import LinuxKernel
import Logging
import OCI

extension RegistryClient {
    static func pushScope(_ repository: String) -> String { "repository:\(repository):pull,push" }

    /// Where blob content to push comes from.
    public enum BlobSource: Sendable {
        case bytes([UInt8])
        /// A file, read as it is sent.
        case file(path: String)
    }

    /// How a blob goes up.
    public enum UploadMode: Sendable {
        /// POST, then one PUT with the whole body.
        case monolithic
        /// POST, PATCH chunks of `chunkBytes` (Content-Range `<start>-<end>`), then PUT `?digest=`.
        case chunked(chunkBytes: Int)
        /// Monolithic up to `configuration.uploadChunkBytes`, chunked above.
        case automatic
    }

    /// Pushes a blob unless the registry already has it. `descriptor` must state the content's digest and size;
    /// the registry verifies them.
    /// - Returns: true when bytes were uploaded, false when the blob was already there.
    @discardableResult
    public func pushBlob(
        registry: String, repository: String, descriptor: Descriptor, from source: BlobSource,
        mode: UploadMode = .automatic
    ) async throws(RegistryError) -> Bool {
        if try await blobSize(registry: registry, repository: repository, digest: descriptor.digest) == descriptor.size {
            return false
        }
        let endpoint = try pushEndpoint(registry)
        let scope = Self.pushScope(repository)
        let log = logger.with(["registry.host": "\(endpoint.host)", "blob.digest": "\(descriptor.digest)"])
        let start = try await send(
            Call(method: "POST", path: "/\(repository)/blobs/uploads/", scope: scope),
            registry: registry, endpoint: endpoint)
        guard start.status == 202, var location = start.headers["Location"] else {
            throw error(for: start, method: "POST", scope: scope, host: endpoint.host)
        }
        location = absolute(location, endpoint: endpoint)
        let chunk: Int?
        switch mode {
        case .monolithic: chunk = nil
        case .chunked(let bytes): chunk = max(bytes, 1)
        case .automatic: chunk = descriptor.size > Int64(configuration.uploadChunkBytes) ? configuration.uploadChunkBytes : nil
        }
        var finalBody = RequestBody.none
        if let chunk {
            var offset: Int64 = 0
            while offset < descriptor.size {
                let length = min(Int64(chunk), descriptor.size - offset)
                var call = Call(method: "PATCH", path: location, absolute: true, scope: scope)
                call.headers = [
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", "\(offset)-\(offset + length - 1)"),
                ]
                call.body = body(source, offset: offset, length: length)
                call.bounded = false
                let response = try await send(call, registry: registry, endpoint: endpoint)
                guard response.status == 202, let next = response.headers["Location"] else {
                    throw error(for: response, method: "PATCH", scope: scope, host: endpoint.host)
                }
                location = absolute(next, endpoint: endpoint)
                offset += length
            }
        } else {
            finalBody = body(source, offset: 0, length: descriptor.size)
        }
        let separator = location.contains("?") ? "&" : "?"
        var put = Call(
            method: "PUT", path: location + separator + "digest=" + Self.percentEncode(descriptor.digest.description),
            absolute: true, scope: scope)
        put.headers = [("Content-Type", "application/octet-stream")]
        put.body = finalBody
        put.bounded = false
        let done = try await send(put, registry: registry, endpoint: endpoint)
        guard done.status == 201 else { throw error(for: done, method: "PUT", scope: scope, host: endpoint.host) }
        log.debug("blob pushed", metadata: ["blob.size": "\(descriptor.size)", "upload.chunked": "\(chunk != nil)"])
        return true
    }

    /// `PUT /v2/<name>/manifests/<reference>` with the exact bytes; `Content-Type` is `mediaType`.
    /// - Returns: the manifest's digest (checked against the registry's `Docker-Content-Digest`).
    @discardableResult
    public func pushManifest(
        registry: String, repository: String, reference: String, bytes: [UInt8],
        mediaType: String
    ) async throws(RegistryError) -> Digest {
        let endpoint = try pushEndpoint(registry)
        let scope = Self.pushScope(repository)
        var call = Call(method: "PUT", path: "/\(repository)/manifests/\(reference)", scope: scope)
        call.headers = [("Content-Type", mediaType)]
        call.body = .bytes(bytes)
        let response = try await send(call, registry: registry, endpoint: endpoint)
        guard response.status == 201 else { throw error(for: response, method: "PUT", scope: scope, host: endpoint.host) }
        let digest = Digest.sha256(of: bytes)
        if let header = response.headers["Docker-Content-Digest"], let claimed = try? Digest(parsing: header), claimed != digest {
            throw .digestMismatch(url: response.effectiveURL, expected: digest, found: claimed)
        }
        return digest
    }

    private func pushEndpoint(_ registry: String) throws(RegistryError) -> RegistryEndpoint {
        guard let endpoint = try configuration.endpoints(for: registry).last(where: { $0.capabilities.contains(.push) }) else {
            throw .invalidConfiguration(path: configuration.hostsDirectory ?? registry, reason: "no endpoint of \(registry) can push")
        }
        return endpoint
    }

    private func body(_ source: BlobSource, offset: Int64, length: Int64) -> RequestBody {
        switch source {
        case .bytes(let bytes): return .bytes(Array(bytes[Int(offset)..<Int(offset + length)]))
        case .file(let path): return .file(path: path, offset: offset, length: length)
        }
    }

    /// `Location` may be relative; it is used exactly as given otherwise (it carries `_state`).
    private func absolute(_ location: String, endpoint: RegistryEndpoint) -> String {
        location.hasPrefix("http://") || location.hasPrefix("https://") ? location : endpoint.baseURL + location
    }
}
