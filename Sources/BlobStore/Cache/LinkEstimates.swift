import Synchronization

/// What the engine has measured of the link to each place it fetches from (a registry host): the round trip
/// (a GET's time to its first byte) and the rate (a long GET's bytes over its time after the first byte), as
/// moving averages. Their product, the bandwidth-delay product, is what must be in flight to keep the link
/// busy: read-ahead windows grow to a few of them where that is more than the configured window.
public final class LinkEstimates: Sendable {
    /// One place's averages.
    public struct Estimate: Equatable, Sendable {
        public var roundTripSeconds: Double
        public var bytesPerSecond: Double
        public var samples: Int

        /// Bytes in flight that keep the link busy for one round trip.
        public var bandwidthDelayBytes: UInt64 {
            guard roundTripSeconds > 0, bytesPerSecond > 0 else { return 0 }
            return UInt64(min(roundTripSeconds * bytesPerSecond, Double(UInt64.max >> 1)))
        }
    }

    /// Weight of a new sample in the averages.
    static let weight = 0.25
    /// GETs shorter than this say little about the rate (their time is mostly the round trip).
    static let rateSampleBytes: UInt64 = 512 << 10

    private let estimates = Mutex<[String: Estimate]>([:])

    public init() {}

    /// The place a source fetches from: its registry host (`identity` up to the first `/`).
    public static func place(of identity: String) -> String {
        let trimmed = identity.hasPrefix("gzip-index:") ? identity.dropFirst("gzip-index:".count) : identity[...]
        return String(trimmed.prefix { $0 != "/" })
    }

    /// Records one successful GET of `bytes`, whose first byte came `firstByteSeconds` after it was sent and
    /// which ended `totalSeconds` after it was sent.
    public func record(place: String, bytes: UInt64, firstByteSeconds: Double, totalSeconds: Double) {
        guard firstByteSeconds >= 0, totalSeconds >= firstByteSeconds else { return }
        let streaming = totalSeconds - firstByteSeconds
        let rate = bytes >= Self.rateSampleBytes && streaming > 0 ? Double(bytes) / streaming : nil
        estimates.withLock { estimates in
            guard var estimate = estimates[place] else {
                estimates[place] = Estimate(roundTripSeconds: firstByteSeconds, bytesPerSecond: rate ?? 0, samples: 1)
                return
            }
            estimate.roundTripSeconds += Self.weight * (firstByteSeconds - estimate.roundTripSeconds)
            if let rate {
                estimate.bytesPerSecond =
                    estimate.bytesPerSecond == 0 ? rate : estimate.bytesPerSecond + Self.weight * (rate - estimate.bytesPerSecond)
            }
            estimate.samples += 1
            estimates[place] = estimate
        }
    }

    /// The estimates as Prometheus gauges, one series per place.
    public func prometheusText(prefix: String = "snapshotter") -> String {
        let all = estimates.withLock { $0 }.sorted { $0.key < $1.key }
        guard !all.isEmpty else { return "" }
        var lines: [String] = []
        func gauge(_ name: String, _ help: String, _ value: (Estimate) -> String) {
            lines.append("# HELP \(prefix)_\(name) \(help)")
            lines.append("# TYPE \(prefix)_\(name) gauge")
            for (place, estimate) in all { lines.append("\(prefix)_\(name){registry=\"\(place)\"} \(value(estimate))") }
        }
        gauge("link_round_trip_seconds", "Measured time to a GET's first byte (moving average).") { "\($0.roundTripSeconds)" }
        gauge("link_bytes_per_second", "Measured rate of long GETs after their first byte (moving average).") { "\($0.bytesPerSecond)" }
        gauge("link_bandwidth_delay_bytes", "Their product: what must be in flight to keep the link busy.") { "\($0.bandwidthDelayBytes)" }
        return lines.joined(separator: "\n") + "\n"
    }

    public func estimate(place: String) -> Estimate? {
        estimates.withLock { $0[place] }
    }

    /// The read-ahead window for `place`: `configured`, or `multiple` bandwidth-delay products when that is
    /// more, at most `ceiling`. 0 (read-ahead off) stays 0.
    public func readaheadWindow(place: String, configured: UInt64, multiple: UInt64, ceiling: UInt64) -> UInt64 {
        guard configured > 0, let estimate = estimate(place: place) else { return configured }
        let (scaled, overflow) = estimate.bandwidthDelayBytes.multipliedReportingOverflow(by: multiple)
        return max(configured, min(overflow ? ceiling : scaled, ceiling))
    }
}
