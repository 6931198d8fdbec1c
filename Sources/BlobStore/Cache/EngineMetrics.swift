import Synchronization

/// Counters and a latency histogram of the fetch engine, rendered in Prometheus text format.
public final class EngineMetrics: Sendable {
    public struct Snapshot: Equatable, Sendable {
        public var bytesFetched: UInt64 = 0
        public var fetches: UInt64 = 0
        public var chunksFetched: UInt64 = 0
        public var hits: UInt64 = 0
        public var misses: UInt64 = 0
        public var failures: UInt64 = 0
        public var latencyBuckets = [UInt64](repeating: 0, count: EngineMetrics.bucketBounds.count + 1)
        public var latencySumSeconds: Double = 0
        public var chunksEvicted: UInt64 = 0
        public var bytesEvicted: UInt64 = 0
        public var evictionPasses: UInt64 = 0
        /// Passes that could not free what was wanted (everything left pinned, in use or in its grace).
        public var evictionsShort: UInt64 = 0
        public var evictionSeconds: Double = 0
    }

    /// Upper bounds of the fetch-latency buckets, in seconds.
    public static let bucketBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func recordHits(_ count: Int) { state.withLock { $0.hits += UInt64(count) } }
    func recordMisses(_ count: Int) { state.withLock { $0.misses += UInt64(count) } }
    func recordFailure() { state.withLock { $0.failures += 1 } }

    func recordEviction(chunks: Int, bytes: UInt64, nanoseconds: UInt64, short: Bool) {
        state.withLock { state in
            state.chunksEvicted += UInt64(chunks)
            state.bytesEvicted += bytes
            state.evictionPasses += 1
            if short { state.evictionsShort += 1 }
            state.evictionSeconds += Double(nanoseconds) / 1e9
        }
    }

    func recordFetch(bytes: Int, chunks: Int, seconds: Double) {
        state.withLock { state in
            state.bytesFetched += UInt64(bytes)
            state.fetches += 1
            state.chunksFetched += UInt64(chunks)
            state.latencySumSeconds += seconds
            let bucket = Self.bucketBounds.firstIndex { seconds <= $0 } ?? Self.bucketBounds.count
            state.latencyBuckets[bucket] += 1
        }
    }

    /// Prometheus text exposition (version 0.0.4).
    public func prometheusText(prefix: String = "snapshotter") -> String {
        let s = snapshot
        var lines: [String] = []
        func counter(_ name: String, _ help: String, _ value: UInt64) {
            lines.append("# HELP \(prefix)_\(name) \(help)")
            lines.append("# TYPE \(prefix)_\(name) counter")
            lines.append("\(prefix)_\(name) \(value)")
        }
        counter("fetch_bytes_total", "Stored (compressed) blob bytes fetched from registries.", s.bytesFetched)
        counter("fetch_requests_total", "Ranged GETs made for chunks.", s.fetches)
        counter("fetch_chunks_total", "Chunks fetched, verified and written.", s.chunksFetched)
        counter("chunk_hits_total", "Chunks a reader needed that were already local.", s.hits)
        counter("chunk_misses_total", "Chunks a reader needed that had to be fetched.", s.misses)
        counter("fetch_failures_total", "Fetches that failed (network, digest, timeout).", s.failures)
        counter(
            "evicted_chunks_total", "Chunks evicted from backing files to stay inside the cache budget or free a full disk.",
            s.chunksEvicted)
        counter("evicted_bytes_total", "Uncompressed bytes evicted.", s.bytesEvicted)
        counter("eviction_passes_total", "Eviction passes.", s.evictionPasses)
        counter(
            "eviction_short_total", "Eviction passes that freed less than wanted (the rest pinned, in use or recent).", s.evictionsShort)
        lines.append("# HELP \(prefix)_eviction_seconds_total Time spent choosing and punching evicted chunks.")
        lines.append("# TYPE \(prefix)_eviction_seconds_total counter")
        lines.append("\(prefix)_eviction_seconds_total \(s.evictionSeconds)")
        let name = "\(prefix)_fetch_duration_seconds"
        lines.append("# HELP \(name) Latency of one ranged GET including verification and write.")
        lines.append("# TYPE \(name) histogram")
        var cumulative: UInt64 = 0
        for (index, bound) in Self.bucketBounds.enumerated() {
            cumulative += s.latencyBuckets[index]
            lines.append("\(name)_bucket{le=\"\(bound)\"} \(cumulative)")
        }
        cumulative += s.latencyBuckets[Self.bucketBounds.count]
        lines.append("\(name)_bucket{le=\"+Inf\"} \(cumulative)")
        lines.append("\(name)_sum \(s.latencySumSeconds)")
        lines.append("\(name)_count \(cumulative)")
        return lines.joined(separator: "\n") + "\n"
    }
}
