/// Stored bytes of one blob, read with ranged GETs from the registry it was pulled from: what the engine
/// fetches chunks through.
public struct RegistryBlobSource: BlobRangeSource {
    public let client: RegistryClient
    public let registry: String
    public let repository: String
    public let digest: Digest

    public init(client: RegistryClient, registry: String, repository: String, digest: Digest) {
        self.client = client
        self.registry = registry
        self.repository = repository
        self.digest = digest
    }

    public func read(offset: UInt64, length: UInt64) async throws -> [UInt8] {
        let start = Int64(clamping: offset)
        let (end, overflow) = start.addingReportingOverflow(Int64(clamping: length))
        guard !overflow else { throw FetchError.shortRead(blob: 0, offset: offset, expected: length, got: 0) }
        return try await client.fetchBlobRange(registry: registry, repository: repository, digest: digest, range: start..<end)
    }
}
