import OCI
import OCIRegistry
import Synchronization

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

    public var identity: String { "\(registry)/\(repository)@\(digest)" }

    public func read(offset: UInt64, length: UInt64) async throws -> [UInt8] {
        let start = Int64(clamping: offset)
        let (end, overflow) = start.addingReportingOverflow(Int64(clamping: length))
        guard !overflow else { throw BlobStoreError.shortRead(blob: 0, offset: offset, expected: length, got: 0) }
        return try await client.fetchBlobRange(registry: registry, repository: repository, digest: digest, range: start..<end)
    }

    /// Streams the range with one ranged GET; each piece goes to `consumer` on the transfer thread as it
    /// arrives (on a thread at background CPU priority when `background` is set). The consumer's own error wins
    /// over the transfer's report of the stop.
    public func stream(offset: UInt64, length: UInt64, background: Bool, into consumer: any StoredBytesConsumer) async throws {
        let start = Int64(clamping: offset)
        let (end, overflow) = start.addingReportingOverflow(Int64(clamping: length))
        guard !overflow else { throw BlobStoreError.shortRead(blob: 0, offset: offset, expected: length, got: 0) }
        let stop = ConsumerStop()
        do {
            try await client.streamBlobRange(
                registry: registry, repository: repository, digest: digest, range: start..<end, background: background
            ) { bytes in
                do {
                    try consumer.receive(bytes)
                    return true
                } catch {
                    stop.record(error)
                    return false
                }
            }
        } catch {
            throw stop.error ?? error
        }
    }
}

/// The first error a consumer stopped a transfer with.
final class ConsumerStop: Sendable {
    private let first = Mutex<(any Error)?>(nil)

    func record(_ error: any Error) { first.withLock { if $0 == nil { $0 = error } } }
    var error: (any Error)? { first.withLock { $0 } }
}
