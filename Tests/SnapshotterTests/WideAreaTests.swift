import Foundation
import LinuxKernel
import SnapshotterAPI
import TestSupport
import TestThreads
import Testing

/// The whole product over an emulated wide-area link (`LinkEmulator`, the short profile: 10 ms RTT,
/// 100 Mbit/s): real TCP through a shaped veth and a delay line, the daemon's pull and its lazy reads.
@Suite(
    "Lazy images over an emulated wide-area link", .serialized,
    .enabled(if: LinkEmulator.available, "needs root, ip and tc (iproute2)"), .ownThread)
struct WideAreaTests {
    @Test(
        "pull and lazy reads through a 10 ms / 100 Mbit/s link: right bytes, at most the link's rate, a stall mid-body resumed",
        .timeLimit(.minutes(4)))
    func lazyReadsOverTheLink() async throws {
        LinkEmulator.removeStale()
        let setup = try await LazyImageTests.Setup("wan", frontEnd: "fanotify", bigMiB: 16, readahead: 16 << 20, readerTimeout: 20)
        defer { setup.tearDown() }
        let profile = LinkEmulator.Profile.short
        let link = try LinkEmulator(profile: profile, upstreamPort: setup.proxy.port)
        defer { link.stop() }
        let reference = "127.0.0.1:\(link.port)/lazy:v1"
        let pullStarted = monotonicNanoseconds()
        let pulled = try setup.harness.client().pull(reference: reference)
        let pullMilliseconds = Double(monotonicNanoseconds() - pullStarted) / 1e6
        #expect(pulled.pulled)
        #expect(pullMilliseconds >= profile.rttMilliseconds, "a pull through the link took \(pullMilliseconds) ms")
        _ = try setup.harness.client().prepare(key: "w1", image: reference)
        let target = setup.harness.directory + "/w1"
        _ = try setup.harness.client().mount(key: "w1", target: target)

        let big = try #require(setup.image.files["usr/lib/big.bin"])
        let before = setup.blobBytesServed
        let started = monotonicNanoseconds()
        #expect(try LazyImageTests.read(target + "/usr/lib/big.bin").get() == big, "the big file through the link")
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        try await setup.waitForRegistryQuiet()
        let moved = Double(setup.blobBytesServed - before)
        print(
            "wan (\(profile)): pull \(Int(pullMilliseconds)) ms; \(Int(moved)) stored bytes in \(seconds) s = \(moved / seconds / 1e6) MB/s"
        )
        // Everything crossed the shaped link: no faster than its rate.
        #expect(moved / seconds <= profile.bytesPerSecond * 1.2, "\(moved / seconds / 1e6) MB/s through a \(profile)")
        for (path, bytes) in setup.image.files where !path.hasSuffix("big.bin") {
            #expect(try LazyImageTests.read(target + "/" + path).get() == bytes, "\(path) differs")
        }
        // The engine measured the link (what sizes read-ahead on long fat links): a round trip of at least its RTT.
        let metrics = try setup.harness.client().metrics()
        let line = metrics.split(separator: "\n").first {
            $0.hasPrefix("snapshotter_link_round_trip_seconds{registry=\"127.0.0.1:\(link.port)\"}")
        }
        let roundTrip = line.flatMap { Double($0.split(separator: " ").last ?? "") }
        #expect((roundTrip ?? 0) >= profile.rttMilliseconds / 1000, "measured round trip: \(line.map(String.init) ?? "none")")

        // A registry that stalls mid-body behind the link: the read resumes, right bytes, within the timeout.
        try setup.harness.client().unmount(target: target)
        try setup.harness.client().remove(key: "w1")
        try setup.harness.client().removeImage(reference: reference)
        _ = try setup.harness.client().pull(reference: reference)
        _ = try setup.harness.client().prepare(key: "w2", image: reference)
        let second = setup.harness.directory + "/w2"
        _ = try setup.harness.client().mount(key: "w2", target: second)
        try setup.setProxyMode("stall")
        let stallStarted = monotonicNanoseconds()
        #expect(try LazyImageTests.read(second + "/usr/lib/big.bin").get() == big, "the big file after a stall")
        let stallSeconds = Double(monotonicNanoseconds() - stallStarted) / 1e9
        #expect(stallSeconds < 20, "the read took \(stallSeconds) s")
    }
}
