import Foundation
import LinuxKernel
import TestSupport
import TestThreads
import Testing

/// A registry mirror (containerd's hosts.toml) failing while lazy reads go through it, with the real daemon,
/// kernel and docker-registry: the reads fall back to the server behind it and get the image's own bytes.
@Suite("Lazy reads when the mirror fails", .ownThread)
struct MirrorFallbackTests {
    /// `stop`: the mirror is gone (connection refused); `503`: it refuses every blob GET; `drop`: it cuts the
    /// first blob GET at half its body.
    @Test(
        "a mirror that goes away, answers 503 or cuts a body mid-read: the read completes from the server with the image's bytes",
        .timeLimit(.minutes(5)), arguments: ["stop", "503", "drop"])
    func mirrorFails(fault: String) async throws {
        let work = try RegistryTestSupport.tempDirectory("mirror-\(fault)")
        defer { try? FileSystem.removeTree(work) }
        let hostsDirectory = work + "/certs.d"
        try FileSystem.makeDirectories(hostsDirectory)
        try RegistryTestSupport.write(work + "/config.toml", "[registry]\nhosts_dir = \"\(hostsDirectory)\"\n")
        let setup = try await LazyImageTests.Setup(
            "mirror-\(fault)", frontEnd: "fanotify", readerTimeout: 30, daemonArguments: ["--config", work + "/config.toml"])
        defer { setup.tearDown() }
        let mirror = try PythonHelper.faultProxy(upstreamPort: setup.registry.port, mode: "pass")
        defer { mirror.stop() }
        // The image's registry is the setup's proxy (the server); the mirror is another proxy of the same registry.
        let server = "127.0.0.1:\(setup.proxy.port)"
        try FileSystem.makeDirectories(hostsDirectory + "/" + server)
        try RegistryTestSupport.write(
            hostsDirectory + "/\(server)/hosts.toml",
            """
            server = "http://\(server)"

            [host."http://127.0.0.1:\(mirror.port)"]
              capabilities = ["pull", "resolve"]
            """)

        // Pull and first reads go to the mirror only.
        let target = try setup.pullAndMount(key: "m1")
        let big = try #require(setup.image.files["usr/lib/big.bin"])
        #expect(try LazyImageTests.read(target + "/usr/lib/big.bin", count: 65536).get() == Array(big[0..<65536]))
        #expect(mirror.blobGetsStarted > 0, "the mirror served nothing")
        let serverGets = setup.blobGets
        #expect(serverGets == 0, "\(serverGets) blob GETs went to the server while the mirror worked")

        switch fault {
        case "stop": mirror.stop()
        default: try Data(fault.utf8).write(to: URL(fileURLWithPath: mirror.logPath + ".mode"))
        }
        for offset in [9 << 20, 17 << 20] {
            let read = LazyImageTests.read(target + "/usr/lib/big.bin", offset: offset, count: 65536)
            #expect(try read.get() == Array(big[offset..<(offset + 65536)]), "the read at \(offset) with the mirror failing (\(fault))")
        }
        if fault != "drop" {
            #expect(setup.blobGets > serverGets, "the server behind the failing mirror served nothing")
        }
        let log = setup.harness.log()
        #expect(!log.contains("fetch failed"), "a fetch failed although the server could serve it")
    }
}
