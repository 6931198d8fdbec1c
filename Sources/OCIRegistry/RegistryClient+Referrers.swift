import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The distribution spec's referrers: artifacts that name a manifest as their `subject`. Registries with the
/// API answer `GET /v2/<name>/referrers/<digest>`; the others (Debian's `docker-registry` 2.8) are served by the
/// spec's fallback, an image index under the tag `<alg>-<hex>` of the subject that the pusher maintains.
extension RegistryClient {
    /// The fallback tag of `subject`'s referrers index (`sha256-<hex>`).
    public static func referrersTag(of subject: Digest) -> String { "\(subject.algorithm)-\(subject.encoded)" }

    /// The descriptors of the manifests that refer to `subject`, of `artifactType` when given: from the
    /// referrers API, or from the fallback tag when the registry lacks the API. None: an empty list.
    public func referrers(
        registry: String, repository: String, subject: Digest, artifactType: String? = nil
    ) async throws(RegistryError) -> [Descriptor] {
        // Both at once: a registry without the API answers the first with 404, and the pull waits one round trip
        // instead of two.
        async let fromTag: Result<ImageIndex?, RegistryError> = {
            do throws(RegistryError) {
                return .success(try await self.referrersFromTag(registry: registry, repository: repository, subject: subject))
            } catch {
                return .failure(error)
            }
        }()
        let entries: [Descriptor]
        if let api = try await referrersFromAPI(registry: registry, repository: repository, subject: subject, artifactType: artifactType) {
            entries = api
        } else {
            entries = try await fromTag.get()?.manifests ?? []
        }
        guard let artifactType else { return entries }
        return entries.filter { $0.artifactType == artifactType }
    }

    /// nil when the registry has no referrers API (404 or 405 for the route itself).
    private func referrersFromAPI(
        registry: String, repository: String, subject: Digest, artifactType: String?
    ) async throws(RegistryError) -> [Descriptor]? {
        try await withEndpoints(registry: registry, capability: .pull) { endpoint throws(RegistryError) -> [Descriptor]? in
            let scope = Self.pullScope(repository)
            var path = "/\(repository)/referrers/\(subject)"
            if let artifactType {
                // Media types hold `/` and `+`; everything outside unreserved characters is percent-encoded.
                let encoded = artifactType.utf8.map { byte -> String in
                    let unreserved =
                        (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7a) || "-._~".utf8.contains(byte)
                    return unreserved ? String(UnicodeScalar(byte)) : "%" + String(byte, radix: 16, uppercase: true).leftPadded(2)
                }.joined()
                path += "?artifactType=\(encoded)"
            }
            var call = Call(path: path, scope: scope)
            call.headers = [("Accept", MediaType.ociIndex)]
            call.memoryLimit = configuration.limits.maxManifestBytes
            let response = try await send(call, registry: registry, endpoint: endpoint)
            if response.status == 404 || response.status == 405 || response.status == 400 { return nil }
            guard response.status == 200 else { throw error(for: response, method: "GET", scope: scope, host: endpoint.host) }
            do throws(OCIError) {
                let fetched = try FetchedManifest.decode(
                    bytes: response.body, mediaType: MediaType.ociIndex, digest: Digest.sha256(of: response.body),
                    url: response.effectiveURL, limits: configuration.limits)
                guard case .index(let index) = fetched.content else { return nil }
                return index.manifests
            } catch {
                throw .format(error)
            }
        }
    }

    /// The fallback tag's index, nil when the tag does not exist.
    private func referrersFromTag(registry: String, repository: String, subject: Digest) async throws(RegistryError) -> ImageIndex? {
        let reference = ImageReference(registry: registry, repository: repository, tag: Self.referrersTag(of: subject))
        do throws(RegistryError) {
            let fetched = try await fetchManifest(reference)
            guard case .index(let index) = fetched.content else {
                throw .format(.invalidManifest(source: reference.description, reason: "the referrers tag names a manifest, not an index"))
            }
            return index
        } catch {
            if case .notFound = error { return nil }
            throw error
        }
    }

    /// Pushes an artifact manifest that names a subject, by digest, and makes it discoverable: a registry with
    /// the referrers API lists it by itself; for the others the fallback tag's index gets its descriptor (read,
    /// extended, written back: a concurrent pusher may lose the race, as the spec's fallback allows).
    /// - Returns: the artifact manifest's descriptor as listed.
    @discardableResult
    public func pushReferrer(
        registry: String, repository: String, manifest bytes: [UInt8], artifactType: String, subject: Digest,
        annotations: [String: String]? = nil
    ) async throws(RegistryError) -> Descriptor {
        let digest = Digest.sha256(of: bytes)
        try await pushManifest(
            registry: registry, repository: repository, reference: digest.description, bytes: bytes, mediaType: MediaType.ociManifest)
        var descriptor = Descriptor(mediaType: MediaType.ociManifest, digest: digest, size: Int64(bytes.count), annotations: annotations)
        descriptor.artifactType = artifactType
        if try await referrersFromAPI(registry: registry, repository: repository, subject: subject, artifactType: nil) != nil {
            return descriptor
        }
        var index = try await referrersFromTag(registry: registry, repository: repository, subject: subject) ?? ImageIndex(manifests: [])
        guard !index.manifests.contains(where: { $0.digest == digest }) else { return descriptor }
        index.manifests.append(descriptor)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(index) else {
            throw .format(.invalidManifest(source: Self.referrersTag(of: subject), reason: "the referrers index cannot be encoded"))
        }
        try await pushManifest(
            registry: registry, repository: repository, reference: Self.referrersTag(of: subject), bytes: [UInt8](data),
            mediaType: MediaType.ociIndex)
        return descriptor
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
