import Digests
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Turns file data into stored chunks, in batches: each batch is hashed and compressed on all cores, then
/// appended to the current layer's blob in order. A chunk whose sha256 is already stored, in this blob or an
/// earlier one, is not stored again: the file refers to the existing copy.
final class ChunkPipeline {
    private struct Pending {
        var data: [UInt8]
        var inode: TreeInode
        var position: Int
        var fileOffset: UInt64
        /// Where the chunk's bytes already lie when its blob's data is stored elsewhere.
        var storedAt: UInt64?
    }

    /// Hash and compression result of one pending chunk.
    private struct Processed: Sendable {
        var digest: [UInt8]
        /// nil: store the data as is (no compression, or compression did not help, or already stored).
        var compressed: [UInt8]?
    }

    /// The compressors, one per worker; each worker only ever touches its own.
    private final class Workers: @unchecked Sendable {
        // @unchecked: worker `w` uses only `compressors[w]`, and the array itself is never mutated.
        let compressors: [ChunkCompressor]
        init(_ compressors: [ChunkCompressor]) { self.compressors = compressors }
    }

    /// Results written by workers at distinct indexes.
    private final class Results: @unchecked Sendable {
        // @unchecked: each index is written by exactly one worker, and read only after all have finished.
        let slots: UnsafeMutableBufferPointer<Processed?>
        init(count: Int) {
            slots = .allocate(capacity: count)
            slots.initialize(repeating: nil)
        }
        deinit {
            slots.deinitialize()
            slots.deallocate()
        }
    }

    private let workers: Workers
    private let batchBytes: Int
    private var pending: [Pending] = []
    private var pendingBytes = 0
    private var stored: [DigestKey: ChunkLocation] = [:]
    private(set) var dedupedChunks = 0

    init(options: BuildOptions) throws(BuildError) {
        let count = max(1, options.threads ?? Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        var compressors: [ChunkCompressor] = []
        for _ in 0..<count { compressors.append(try ChunkCompressor(algorithm: options.compression, level: options.zstdLevel)) }
        workers = Workers(compressors)
        batchBytes = max(Int(options.chunkSize) * count * 2, 8 << 20)
    }

    /// Queues chunk `position` of `inode` (its bytes at `fileOffset`); flushes into `blob` when a batch is full.
    func add(
        _ data: [UInt8], inode: TreeInode, position: Int, fileOffset: UInt64, storedAt: UInt64? = nil, blob: BlobWriter
    ) throws(BuildError) {
        pending.append(Pending(data: data, inode: inode, position: position, fileOffset: fileOffset, storedAt: storedAt))
        pendingBytes += data.count
        if pendingBytes >= batchBytes || pending.count >= 4096 { try flush(into: blob) }
    }

    /// Processes every queued chunk and appends the new ones to `blob`.
    func flush(into blob: BlobWriter) throws(BuildError) {
        guard !pending.isEmpty else { return }
        let datas = pending.map(\.data)
        let results = Results(count: datas.count)
        let workers = self.workers
        let count = min(workers.compressors.count, datas.count)
        let known = stored
        let failure = FailureBox()
        let work: @Sendable (Int) -> Void = { worker in
            var index = worker
            while index < datas.count {
                let data = datas[index]
                let digest = SHA256.hash(data)
                var compressed: [UInt8]?
                if known[DigestKey(digest)] == nil {
                    do throws(BuildError) {
                        compressed = try withBytes(data) { (raw) throws(BuildError) in try workers.compressors[worker].compress(raw) }
                    } catch {
                        failure.record(error)
                    }
                }
                results.slots[index] = Processed(digest: digest, compressed: compressed)
                index += count
            }
        }
        if count == 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: count, execute: work) }
        if let error = failure.error { throw error }

        for (index, item) in pending.enumerated() {
            guard let processed = results.slots[index] else { continue }
            let key = DigestKey(processed.digest)
            let location: ChunkLocation
            if let existing = stored[key] {
                location = existing
                dedupedChunks += 1
            } else {
                let bytes = processed.compressed ?? item.data
                location = try withBytes(bytes) { (raw) throws(BuildError) in
                    try blob.append(
                        stored: raw, size: item.data.count, compressed: processed.compressed != nil, digest: processed.digest,
                        fileOffset: item.fileOffset, storedAt: item.storedAt)
                }
                stored[key] = location
            }
            item.inode.chunks[item.position] = location
        }
        pending.removeAll(keepingCapacity: true)
        pendingBytes = 0
    }
}

/// A sha256 digest as a cheap dictionary key.
struct DigestKey: Hashable, Sendable {
    let a: UInt64
    let b: UInt64
    let c: UInt64
    let d: UInt64

    init(_ digest: [UInt8]) {
        func word(_ at: Int) -> UInt64 {
            var value: UInt64 = 0
            for index in 0..<8 { value |= UInt64(digest[at + index]) << (8 * UInt64(index)) }
            return value
        }
        a = word(0)
        b = word(8)
        c = word(16)
        d = word(24)
    }
}

/// The first error a worker hit.
private final class FailureBox: Sendable {
    private let stored = Mutex<BuildError?>(nil)

    func record(_ error: BuildError) {
        stored.withLock { if $0 == nil { $0 = error } }
    }

    var error: BuildError? { stored.withLock { $0 } }
}
