import Digests
import LinuxKernel
import OCI
import OCIRegistry
import RAFS

extension ImagePuller {
    /// At most this much of a speculative bootstrap is held in memory; a larger one is fetched after the manifest.
    static let speculativeBootstrapBytes = 16 << 20

    /// The fetches a pull can start before its manifest arrives, when the caller named the image's layers
    /// (CRI does, bootstrap last): the bootstrap whole and the tail of each blob (where its meta lies, by a
    /// suffix range since sizes come with the manifest). The pull then needs one round trip after connecting
    /// instead of two. Nothing fetched here is trusted on its own: the bootstrap is used only when the manifest
    /// names the same digest and its bytes hash to it; tails only pass the checks every fetched meta passes
    /// (against the bootstrap).
    struct SpeculativeStart: Sendable {
        let bootstrapDigest: Digest
        let bootstrapTask: Task<[UInt8], any Error>
        let tails: [String: Task<[UInt8], any Error>]

        init?(layers: [Digest], reference: ImageReference, puller: ImagePuller) {
            guard let last = layers.last, layers.allSatisfy({ $0.algorithm == Digest.sha256Algorithm }) else { return nil }
            let client = puller.client
            bootstrapDigest = last
            bootstrapTask = Task {
                try await client.fetchBlobUnsized(
                    registry: reference.registry, repository: reference.repository, digest: last,
                    maximumBytes: ImagePuller.speculativeBootstrapBytes)
            }
            tails = puller.speculativeTails(of: Array(layers.dropLast()), reference: reference)
        }

        /// The bootstrap layer's bytes when the speculative fetch got the layer the manifest names, intact.
        func bootstrap(matching descriptor: Descriptor) async -> [UInt8]? {
            guard bootstrapDigest == descriptor.digest,
                let bytes = try? await bootstrapTask.value, Int64(bytes.count) == descriptor.size
            else { return nil }
            let digest = try? await runBlocking { Digest.sha256(of: bytes) }
            return digest == descriptor.digest ? bytes : nil
        }

        func cancel() {
            bootstrapTask.cancel()
            for tail in tails.values { tail.cancel() }
        }
    }
}
