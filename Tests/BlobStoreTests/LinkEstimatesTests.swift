import Logging
import RAFS
import TestFixtures
import TestThreads
import Testing

@testable import BlobStore

@Suite("Link estimates: round trip, rate and the read-ahead window they size", .ownThread)
struct LinkEstimatesTests {
    @Test("a long link's bandwidth-delay product sizes the window; a near one leaves the configured window; off stays off")
    func window() {
        let links = LinkEstimates()
        let configured: UInt64 = 16 << 20
        // Nothing measured yet: the configured window.
        #expect(links.readaheadWindow(place: "far", configured: configured, multiple: 4, ceiling: 256 << 20) == configured)
        // 100 ms to the first byte, then 64 MiB in 0.5 s (128 MiB/s): 12.8 MiB in flight keep the link busy.
        links.record(place: "far", bytes: 64 << 20, firstByteSeconds: 0.1, totalSeconds: 0.6)
        let far = try! #require(links.estimate(place: "far"))
        #expect(abs(far.roundTripSeconds - 0.1) < 1e-9 && abs(far.bytesPerSecond - Double(128 << 20)) < 1)
        #expect(links.readaheadWindow(place: "far", configured: configured, multiple: 4, ceiling: 256 << 20) == 4 * far.bandwidthDelayBytes)
        #expect(links.readaheadWindow(place: "far", configured: configured, multiple: 4, ceiling: 32 << 20) == 32 << 20)
        #expect(links.readaheadWindow(place: "far", configured: 0, multiple: 4, ceiling: 256 << 20) == 0)
        // 1 ms and 100 MiB/s: 100 KiB in flight; the configured 16 MiB is more.
        links.record(place: "near", bytes: 8 << 20, firstByteSeconds: 0.001, totalSeconds: 0.081)
        #expect(links.readaheadWindow(place: "near", configured: configured, multiple: 4, ceiling: 256 << 20) == configured)
        // A short GET moves the round trip, not the rate; samples are averaged.
        links.record(place: "far", bytes: 4096, firstByteSeconds: 0.2, totalSeconds: 0.2)
        let moved = try! #require(links.estimate(place: "far"))
        #expect(
            moved.roundTripSeconds > 0.1 && moved.roundTripSeconds < 0.2 && moved.bytesPerSecond == far.bytesPerSecond && moved.samples == 2
        )
        #expect(links.prometheusText().contains("snapshotter_link_round_trip_seconds{registry=\"far\"}"))
    }

    @Test("places are registry hosts, also behind a gzip index")
    func places() {
        #expect(LinkEstimates.place(of: "registry.example:5000/library/app@sha256:ab") == "registry.example:5000")
        #expect(LinkEstimates.place(of: "gzip-index:ghcr.io/o/r@sha256:ab") == "ghcr.io")
    }

    @Test("the engine measures each GET it makes: a source that answers after 100 ms has a round trip of at least that")
    func engineMeasures() async throws {
        try #require(ImageFixtures.available, "nydus fixtures are missing")
        let setup = try BlobEngineTests.setUp("links")
        defer { ImageFixtures.cleanup(setup.directory) }
        let source = FileRangeSource(path: ImageFixtures.blob, fault: .delay(.milliseconds(100)))
        let engine = BlobEngine(logger: Logger(label: "test"))
        try engine.register(id: 1, rafs: setup.rafs, backingPath: setup.backing, source: source)
        #expect(engine.links.estimate(place: source.identity) == nil)
        try await engine.ensure(blobID: 1, offset: 0, length: setup.rafs.deviceSize)
        // Readers are released chunk by chunk; the GET is measured once it is over.
        let place = LinkEstimates.place(of: source.identity)
        for _ in 0..<1000 where engine.links.estimate(place: place) == nil { try await Task.sleep(for: .milliseconds(10)) }
        let measured = try #require(engine.links.estimate(place: place))
        #expect(measured.roundTripSeconds >= 0.1 && measured.samples == 1)
    }
}
