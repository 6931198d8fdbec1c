import Catalog
import Foundation
import LinuxKernel
import Logging
import MountManager
import OCI
import RAFS
import RAFSBuilder
import SnapshotterAPI
import Synchronization
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Attacks on what a container reads, played with real parts: the victim's image in a real docker-registry,
/// the attacker's in a `HostileRegistry` that serves crafted manifests, bootstraps, blob meta and blob bytes
/// under any digest, the real daemon with the fanotify front end, real EROFS and overlay mounts. Every test
/// asserts that the victim reads exactly its own bytes or gets EIO.
///
/// Each of these failed on main before the trust work (c10b11e), with the outputs quoted per test.
@Suite("Trust: readers get their own image's bytes or EIO, whatever other images and registries do", .serialized, .ownThread)
struct TrustAttackTests {
    /// The file every test image has: three 1 MiB chunks of random bytes, then a small file.
    static let tool = "bin/tool"

    static func files(seed: UInt64) -> [String: [UInt8]] {
        [tool: RegistryTestSupport.randomBytes(3 << 20, seed: seed), "etc/hostname": Array("host-\(seed)\n".utf8)]
    }

    /// A daemon, the victim's real registry and the attacker's hostile one; stopped by `tearDown`.
    final class Scenario {
        let harness: DaemonHarness
        let registry: TestRegistry
        let hostile: HostileRegistry
        let victim: NydusTestImage
        let victimFiles = TrustAttackTests.files(seed: 1)
        /// The victim's reference names the registry `localhost`, so that it sorts after the attacker's
        /// `127.0.0.1` ones (start-up serves images in reference order).
        var victimReference: String { "localhost:\(registry.port)/victim:v1" }

        init(_ name: String, frontEnd: String = "fanotify") async throws {
            harness = try DaemonHarness(name, arguments: ["--front-end", frontEnd, "--reader-timeout", "5", "--readahead-bytes", "0"])
            let registry = try TestRegistry()
            self.registry = registry
            do {
                hostile = try HostileRegistry()
            } catch {
                registry.stop()
                harness.tearDown()
                throw error
            }
            do {
                // Stored uncompressed, with an uncompressed chunk-info array: tests can rewrite its entries in place.
                victim = try NydusTestImage(directory: harness.directory + "/image-victim", files: victimFiles, compression: .none)
                try await victim.push(with: RegistryTestSupport.client(), registry: registry.host, repository: "victim", tag: "v1")
                try harness.start()
            } catch {
                // A scenario that cannot start stops what it started: no registry outlives the test.
                hostile.stop()
                registry.stop()
                harness.tearDown()
                throw error
            }
        }

        func tearDown() {
            harness.tearDown()
            hostile.stop()
            registry.stop()
        }

        var victimBlobID: String { CraftedImages.dataLayer(of: victim).digest.encoded }

        /// An attacker's image with the same tree shape but its own bytes, published under the victim's blob id.
        func publishPoisoner(repository: String) throws -> (reference: String, files: [String: [UInt8]]) {
            let files = TrustAttackTests.files(seed: 2)
            let attacker = try NydusTestImage(directory: harness.directory + "/image-" + repository, files: files, compression: .none)
            try CraftedImages.publish(
                attacker, namingBlobOf: victim, to: hostile, repository: repository, tag: "v1",
                scratch: harness.directory + "/" + repository + "-craft")
            return ("\(hostile.host)/\(repository):v1", files)
        }

        /// `snapctl pull`: its exit status and output.
        func pull(_ reference: String) throws -> (status: Int32, output: String) {
            try runCommand(DaemonHarness.snapctlPath, ["--socket", harness.socket, "pull", reference])
        }

        /// Pulls (which must work), prepares `key` on the image and mounts it; returns the mount point.
        func pullAndMount(_ reference: String, key: String) throws -> String {
            let pulled = try pull(reference)
            try #require(pulled.status == 0, "snapctl pull \(reference) failed: \(pulled.output)\n\(harness.log())")
            _ = try harness.client().prepare(key: key, image: reference)
            let target = harness.directory + "/" + key
            _ = try harness.client().mount(key: key, target: target)
            return target
        }
    }

    /// Reads `count` bytes at `offset` of a file whose page cache was dropped first.
    static func coldRead(_ path: String, offset: Int = 0, count: Int? = nil) -> Result<[UInt8], SyscallError> {
        LazyImageTests.evict([path])
        return LazyImageTests.read(path, offset: offset, count: count)
    }

    /// Whether a read returned exactly `expected` (a Bool, so that a failure does not print megabytes).
    static func same(_ result: Result<[UInt8], SyscallError>, _ expected: [UInt8]?) -> Bool {
        (try? result.get()) == expected
    }

    /// The victim's own bytes, or EIO: nothing else is acceptable.
    static func expectOwnBytesOrEIO(
        _ result: Result<[UInt8], SyscallError>, _ expected: ArraySlice<UInt8>, _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        switch result {
        case .success(let bytes):
            // Compared first: a failed expectation over megabytes of array would be printed element by element.
            let own = bytes[...] == expected
            let zeros = bytes.allSatisfy { $0 == 0 }
            #expect(
                own, "\(what): \(bytes.count) bytes that are not the image's own\(zeros ? " (all zeros)" : "")",
                sourceLocation: sourceLocation)
        case .failure(let error):
            #expect(error.errno == EIO, "\(what): \(error), expected EIO", sourceLocation: sourceLocation)
        }
    }

    /// On main: "victim's bin/tool: 3145728 bytes that are not the image's own": the victim shared the blob row
    /// the attacker's image had registered under the same blob id, with the attacker's chunk digests, bytes and
    /// registry. (With a plain relabelled blob, without the victim's ToC, main failed the victim's pull instead:
    /// "blob ... ToC: digest mismatch".)
    @Test(
        "a hostile registry's image naming the victim's blob id, pulled first, never feeds the victim", .timeLimit(.minutes(5)),
        arguments: ["fanotify", "eager"])
    func poisonerPulledFirst(_ frontEnd: String) async throws {
        try await Self.poisonerFirst(frontEnd: frontEnd)
    }

    /// The same through /dev/cachefiles on the 6.12 test kernel, where the kernel's own cache objects must be
    /// split too: the victim's image is mounted with `domain_id=` of a domain of its own. Runs only inside the
    /// VM (`CachefilesVMTests` boots it and requires this test to pass).
    @Test(
        "cachefiles in the test VM: a poisoner pulled first never feeds the victim (the victim gets its own domain)",
        .enabled(if: LazyImageTests.inGuest, "runs inside the test VM (CachefilesVMTests boots it): the host kernel has no cachefiles"),
        .timeLimit(.minutes(5)))
    func poisonerInGuest() async throws {
        try await Self.poisonerFirst(frontEnd: "cachefiles")
    }

    /// A poisoner's mount kept in use (a reader holds a file) when the poisoner is removed: the kernel keeps its
    /// cookie for the blob id, with the poisoner's bytes, and the EROFS domain would share it with the next
    /// mount naming that id in that domain. The victim pulled after must not get that domain.
    @Test(
        "cachefiles in the test VM: a poisoner removed while its mount is in use never feeds a victim pulled after it",
        .enabled(if: LazyImageTests.inGuest, "runs inside the test VM (CachefilesVMTests boots it): the host kernel has no cachefiles"),
        .timeLimit(.minutes(5)))
    func removedBusyPoisonerInGuest() async throws {
        let scenario = try await Scenario("trust-busy", frontEnd: "cachefiles")
        defer { scenario.tearDown() }
        let poisoner = try scenario.publishPoisoner(repository: "evil")
        let pulled = try scenario.pull(poisoner.reference)
        try #require(pulled.status == 0, "\(pulled.output)")
        let mountpoint = try #require(try scenario.harness.client().images().first?.mountpoint)
        // The poisoner's bytes reach the kernel's cache, and a reader keeps its mount in use.
        let evilTool = mountpoint + "/" + Self.tool
        #expect(Self.same(Self.coldRead(evilTool), poisoner.files[Self.tool]), "the poisoner did not read its own bytes")
        let fd = open(evilTool, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0, "cannot open \(evilTool)")
        defer { close(fd) }
        try scenario.harness.client().removeImage(reference: poisoner.reference)

        let victim = try scenario.pullAndMount(scenario.victimReference, key: "victim")
        let expected = scenario.victimFiles[Self.tool]!
        let got = Self.coldRead(victim + "/" + Self.tool)
        let own = Self.same(got, Array(expected))
        Self.expectOwnBytesOrEIO(got, expected[...], "the victim's \(Self.tool) after a busy poisoner's removal")
        #expect((try? got.get()) != nil, "the victim's read failed: \(got)")
        if !own { Issue.record("daemon log:\n\(scenario.harness.log().suffix(8000))") }
    }

    static func poisonerFirst(frontEnd: String) async throws {
        let scenario = try await Scenario("trust-first", frontEnd: frontEnd)
        defer { scenario.tearDown() }
        let poisoner = try scenario.publishPoisoner(repository: "evil")
        let evil = try scenario.pullAndMount(poisoner.reference, key: "evil")
        // The attacker's image reads its own bytes: they are what its bootstrap commits to.
        let attackerReadsOwn = Self.same(Self.coldRead(evil + "/" + Self.tool), poisoner.files[Self.tool])
        #expect(attackerReadsOwn, "the read did not return the image's own bytes")

        let victim = try scenario.pullAndMount(scenario.victimReference, key: "victim")
        let expected = scenario.victimFiles[Self.tool]!
        let got = Self.coldRead(victim + "/" + Self.tool)
        Self.expectOwnBytesOrEIO(got, expected[...], "victim's \(Self.tool)")
        // The victim's registry is honest, so the victim's reads succeed.
        #expect((try? got.get()) != nil, "the victim's read failed: \(got)")
        // And the attacker's image still reads its own bytes afterwards.
        let attackerStillReadsOwn = Self.same(Self.coldRead(evil + "/" + Self.tool), poisoner.files[Self.tool])
        #expect(attackerStillReadsOwn, "the read did not return the image's own bytes")
    }

    /// On main: "the victim's read failed: ... Input/output error": the attacker's pull shared the victim's blob
    /// row, and start-up registered that row with the chunk digests of the image whose reference sorts first,
    /// the attacker's, so the victim's own chunks no longer verified: the first image to register a blob wins.
    @Test("a poisoner pulled after the victim cannot take over the victim's blob at restart", .timeLimit(.minutes(5)))
    func poisonerPulledSecond() async throws {
        let scenario = try await Scenario("trust-second")
        defer { scenario.tearDown() }
        let victim = try scenario.pullAndMount(scenario.victimReference, key: "victim")
        let expected = scenario.victimFiles[Self.tool]!
        let victimHeadReads = Self.same(Self.coldRead(victim + "/" + Self.tool, count: 4096), Array(expected[0..<4096]))
        #expect(victimHeadReads, "the read did not return the image's own bytes")

        let poisoner = try scenario.publishPoisoner(repository: "evil")
        let pulled = try scenario.pull(poisoner.reference)
        #expect(pulled.status == 0, "the attacker's own pull: \(pulled.output)")

        #expect(scenario.harness.stop() == 0)
        try scenario.harness.start()
        let rest = Self.coldRead(victim + "/" + Self.tool, offset: 1 << 20, count: 2 << 20)
        Self.expectOwnBytesOrEIO(rest, expected[(1 << 20)..<(3 << 20)], "victim's \(Self.tool) after the restart")
        #expect((try? rest.get()) != nil, "the victim's read failed: \(rest)\n\(scenario.harness.log())")
    }

    /// On main, both cases: the pull succeeded ("pulled: ... (nydus, 1 blobs, 3.0 MiB, 0 B local)") and "bin/tool
    /// through the mirror: 3145728 bytes that are not the image's own": with `swapPlaces` chunks 0 and 1 were
    /// each verified against their own digest and written at the other's place; with `duplicatePlace` no chunk
    /// described bytes 1-2 MiB any more. A `truncated` or `extended` meta (one entry fewer or more than the
    /// blob table says) was already refused by main, since the meta header no longer sat where the table says.
    @Test(
        "blob meta tampered by a mirror (the bootstrap is the victim's own): the pull fails or reads are exact",
        .timeLimit(.minutes(5)), arguments: CraftedImages.MetaTampering.allCases)
    func tamperedMeta(_ tampering: CraftedImages.MetaTampering) async throws {
        let scenario = try await Scenario("trust-meta")
        defer { scenario.tearDown() }
        let data = CraftedImages.dataLayer(of: scenario.victim)
        let entry = try CraftedImages.blobEntry(of: scenario.victim, scratch: scenario.harness.directory + "/entry")
        let blob = try CraftedImages.tamperMeta(CraftedImages.bytes(of: data, in: scenario.victim), entry: entry, tampering)
        try CraftedImages.publish(scenario.victim, to: scenario.hostile, repository: "mirror", tag: "v1", dataBlob: blob)
        let reference = "\(scenario.hostile.host)/mirror:v1"

        let pulled = try scenario.pull(reference)
        if pulled.status == 0 {
            _ = try scenario.harness.client().prepare(key: "c", image: reference)
            let target = scenario.harness.directory + "/c"
            _ = try scenario.harness.client().mount(key: "c", target: target)
            let expected = scenario.victimFiles[Self.tool]!
            Self.expectOwnBytesOrEIO(Self.coldRead(target + "/" + Self.tool), expected[...], "\(Self.tool) through the mirror")
        }
        #expect(pulled.status != 0, "a blob meta the bootstrap does not commit to was accepted")
        if tampering == .swapPlaces || tampering == .duplicatePlace {
            #expect(pulled.output.contains("chunk"), "the refusal should say which chunk disagrees: \(pulled.output)")
        }
    }

    /// On main: the daemon served the image anyway: status reported no error, and with the tampered meta "the
    /// failed image's bin/tool: 4096 bytes that are not the image's own"; the flipped chunk digest in the
    /// bootstrap went unnoticed. (A meta that no longer parses made main's start-up throw and exit instead,
    /// leaving every image's readers to the held group.)
    @Test(
        "a meta or bootstrap file corrupted on disk fails that image alone at restart: EIO for it, others served",
        .timeLimit(.minutes(5)), arguments: ["meta", "bootstrap"])
    func corruptedOnDisk(_ what: String) async throws {
        let scenario = try await Scenario("trust-disk")
        defer { scenario.tearDown() }
        let victim = try scenario.pullAndMount(scenario.victimReference, key: "victim")
        let otherFiles = Self.files(seed: 3)
        let other = try NydusTestImage(directory: scenario.harness.directory + "/image-other", files: otherFiles, compression: .none)
        try await other.push(with: RegistryTestSupport.client(), registry: scenario.registry.host, repository: "other", tag: "v1")
        let otherMount = try scenario.pullAndMount("\(scenario.registry.host)/other:v1", key: "other")
        let expected = scenario.victimFiles[Self.tool]!
        let victimHeadReads = Self.same(Self.coldRead(victim + "/" + Self.tool, count: 4096), Array(expected[0..<4096]))
        #expect(victimHeadReads, "the read did not return the image's own bytes")
        #expect(scenario.harness.stop() == 0)

        let root = scenario.harness.root
        if what == "meta" {
            let path = root + "/blobs/" + scenario.victimBlobID + ".meta"
            let entry = try CraftedImages.blobEntry(of: scenario.victim, scratch: scenario.harness.directory + "/entry")
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            try Data(try CraftedImages.tamperMeta(bytes, entry: entry, .swapPlaces)).write(to: URL(fileURLWithPath: path))
        } else {
            let path = root + "/images/" + scenario.victim.result.manifestDescriptor.digest.encoded + "/image.boot"
            var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            // One bit of the first chunk digest in the chunk table (`s_chunk_table_offset` at 1152 + 24).
            let table = CraftedImages.u64(bytes, at: 1152 + 24)
            bytes[table] ^= 0x01
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        try scenario.harness.start()

        let statuses = try scenario.harness.client().status().images ?? []
        let failed = statuses.first { $0.reference == scenario.victimReference }
        #expect(failed?.error != nil, "status should report the victim image as not served: \(statuses)")
        #expect(statuses.first { $0.reference.hasSuffix("/other:v1") }?.error == nil)
        #expect(scenario.harness.log().contains("image not served"))

        // The failed image's readers get EIO at once (well within the 5 s reader timeout), never a hole.
        let started = Date()
        let rest = Self.coldRead(victim + "/" + Self.tool, offset: 1 << 20, count: 4096)
        Self.expectOwnBytesOrEIO(rest, expected[(1 << 20)..<((1 << 20) + 4096)], "the failed image's \(Self.tool)")
        #expect(Date().timeIntervalSince(started) < 4, "the failed image's reader waited \(Date().timeIntervalSince(started)) s")
        // Every other image is served.
        let otherImageServed = Self.same(Self.coldRead(otherMount + "/" + Self.tool), otherFiles[Self.tool])
        #expect(otherImageServed, "the read did not return the image's own bytes")
        // Pulling the failed image again (as containerd does before each container) neither serves nor mounts it:
        // on main it answered "pulled" and mounted whatever was on disk when no mount was left.
        let again = try runCommand(DaemonHarness.snapctlPath, ["--socket", scenario.harness.socket, "pull", scenario.victimReference])
        #expect(again.status != 0 && again.output.contains("failed verification"), "\(again.output)")
    }
}

extension TrustAttackTests {
    /// On main: "the read that was in flight when the daemon died: 1048576 bytes that are not the image's own
    /// (all zeros)": with its holder killed and not replaced, the daemon was the group's last keeper, so its
    /// `kill -9` released the group and the kernel answered the waiting reader with ALLOW over the hole.
    @Test(
        "a killed fd holder is replaced, so a daemon crash afterwards leaves readers waiting for the successor, never zeros",
        .timeLimit(.minutes(5)))
    func killedHolder() async throws {
        let scenario = try await Scenario("trust-holder")
        defer { scenario.tearDown() }
        let proxy = try PythonHelper.faultProxy(upstreamPort: scenario.registry.port, mode: "pass")
        defer { proxy.stop() }
        let reference = "127.0.0.1:\(proxy.port)/victim:v1"
        let target = try scenario.pullAndMount(reference, key: "c")
        let expected = scenario.victimFiles[Self.tool]!

        // Kill the holder: the daemon must notice and start another.
        let holderSocket = scenario.harness.root + "/fdholder.sock"
        let holder = try #require(DescriptorHolder.holderPID(socketPath: holderSocket))
        kill(holder, SIGKILL)
        let replaced = try await Self.waitFor(seconds: 30) { scenario.harness.log().contains("descriptor holder restarted") }
        #expect(replaced, "the daemon did not replace its killed fd holder:\n\(scenario.harness.log())")
        #expect(DescriptorHolder.holderPID(socketPath: holderSocket).map { $0 != holder } == true)

        // A reader waits on a slow registry; the daemon dies under it.
        try Data("slow".utf8).write(to: URL(fileURLWithPath: proxy.logPath + ".mode"))
        let gets = proxy.blobGetsStarted
        LazyImageTests.evict([target + "/" + Self.tool])
        let result = ReadResult.started { LazyImageTests.read(target + "/" + Self.tool, offset: 1 << 20, count: 1 << 20) }
        let asked = try await proxy.waitForBlobGets(moreThan: gets, seconds: 30)
        #expect(asked, "the reader's fetch never reached the registry")
        scenario.harness.crash()
        // The reader must still wait (a released group would have let it read the hole at once).
        try await Task.sleep(for: .milliseconds(500))
        if let early = result.withLock({ $0 }) {
            Self.expectOwnBytesOrEIO(early, expected[(1 << 20)..<(2 << 20)], "the read that was in flight when the daemon died")
        }
        try Data("pass".utf8).write(to: URL(fileURLWithPath: proxy.logPath + ".mode"))
        try scenario.harness.start()
        let finished = try await Self.waitFor(seconds: 60) { result.withLock { $0 } != nil }
        #expect(finished, "the reader never finished")
        if let got = result.withLock({ $0 }) {
            Self.expectOwnBytesOrEIO(got, expected[(1 << 20)..<(2 << 20)], "the read that was in flight when the daemon died")
        }
    }

    /// On main: "the reader never finished": the daemon took the event with read(2) and died before recording
    /// it; its successor answered only recorded events, and the held group kept the reader waiting for good.
    @Test(
        "a daemon killed between reading an event and recording it: its successor fails that reader with EIO, never leaves it waiting",
        .timeLimit(.minutes(5)))
    func killedBeforeRecording() async throws {
        let scenario = try await Scenario("trust-unrecorded")
        defer { scenario.tearDown() }
        let target = try scenario.pullAndMount(scenario.victimReference, key: "u")
        let expected = scenario.victimFiles[Self.tool]!
        #expect(scenario.harness.stop() == 0)
        scenario.harness.environment["SNAPSHOTTERD_CRASH_AT"] = "fanotify.read"
        let armed = try scenario.harness.start()
        let result = ReadResult.started { Self.coldRead(target + "/" + Self.tool, offset: 1 << 20, count: 1 << 20) }
        #expect(armed.waitForExit() == ProcessExit(status: SIGKILL, signaled: true), "the daemon did not die at the read")
        scenario.harness.environment["SNAPSHOTTERD_CRASH_AT"] = nil
        try scenario.harness.start()
        let finished = try await Self.waitFor(seconds: 60) { result.withLock { $0 } != nil }
        #expect(finished, "the reader never finished:\n\(scenario.harness.log().suffix(3000))")
        if let got = result.withLock({ $0 }) {
            Self.expectOwnBytesOrEIO(got, expected[(1 << 20)..<(2 << 20)], "the read the dead daemon took")
        }
        // The successor serves: the same range read again is the image's own (not tried while the first read
        // waits: the second would wait behind it).
        guard finished else { return }
        #expect(Self.same(Self.coldRead(target + "/" + Self.tool, offset: 1 << 20, count: 1 << 20), Array(expected[(1 << 20)..<(2 << 20)])))
    }

    /// On main: "a range never read, through a file held open in an image removed before a clean stop: 4096
    /// bytes that are not the image's own (all zeros)": the removal detached the busy mount, the stop saw no
    /// image mounted and released the fanotify group, and the detached mount read the holes unasked.
    @Test(
        "an image removed while a file in it is open, then a clean stop: reads through that file get EIO, never zeros",
        .timeLimit(.minutes(5)))
    func detachedThenStopped() async throws {
        let scenario = try await Scenario("trust-detached")
        defer { scenario.tearDown() }
        let client = try scenario.harness.client()
        _ = try client.pull(reference: scenario.victimReference)
        let mountpoint = try #require(try client.images().first?.mountpoint)
        let expected = scenario.victimFiles[Self.tool]!
        let fd = open(mountpoint + "/" + Self.tool, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0, "cannot open \(Self.tool) in the image's mount \(mountpoint)")
        defer { close(fd) }
        try client.removeImage(reference: scenario.victimReference)
        #expect(scenario.harness.stop() == 0)
        try scenario.harness.start()
        let result = ReadResult.started {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = pread(fd, &buffer, buffer.count, 1 << 20)
            return count < 0 ? .failure(SyscallError(call: "pread", errno: errno)) : .success(Array(buffer[0..<count]))
        }
        let finished = try await Self.waitFor(seconds: 60) { result.withLock { $0 } != nil }
        #expect(finished, "the reader never finished")
        if let got = result.withLock({ $0 }) {
            Self.expectOwnBytesOrEIO(
                got, expected[(1 << 20)..<((1 << 20) + 4096)],
                "a range never read, through a file held open in an image removed before a clean stop")
        }
    }

    /// On main: "both images were served through one blob row": a row recorded before chunk maps were kept was
    /// compared with nothing, so the second image was served through the first one's chunk map (and read the
    /// bytes its digests vouch for).
    @Test(
        "two images on one blob row with no chunk map recorded (an old catalog): the row serves one chunk map; the other image is not served"
    )
    func legacySharedRow() async throws {
        let scenario = try await Scenario("trust-legacy")
        defer { scenario.tearDown() }
        #expect(try scenario.pull(scenario.victimReference).status == 0)
        let poisoner = try scenario.publishPoisoner(repository: "evil")
        #expect(try scenario.pull(poisoner.reference).status == 0)
        #expect(scenario.harness.stop() == 0)
        // The catalog as an old daemon could leave it: both images on the victim's row, which has no chunk map.
        let database = try Database(
            path: scenario.harness.root + "/catalog.db", migrations: Catalog.migrations, logger: Logger(label: "test"))
        try database.write { conn in
            func row(of reference: String) throws -> Int64 {
                let rows = try conn.query(
                    "SELECT image_blobs.blob_id FROM image_blobs JOIN images ON images.id = image_blobs.image_id WHERE images.reference = ?",
                    [.text(reference)])
                return try #require(rows.first).int(0)
            }
            let victimRow = try row(of: scenario.victimReference)
            let evilRow = try row(of: poisoner.reference)
            try conn.execute("UPDATE image_blobs SET blob_id = ? WHERE blob_id = ?", [.integer(victimRow), .integer(evilRow)])
            try conn.execute("UPDATE blobs SET chunk_map = NULL WHERE id = ?", [.integer(victimRow)])
            try conn.execute(
                "UPDATE images SET domain = (SELECT domain FROM blobs WHERE id = ?) WHERE reference = ?",
                [.integer(victimRow), .text(poisoner.reference)])
        }
        try scenario.harness.start()
        let statuses = try scenario.harness.client().status().images ?? []
        #expect(statuses.count == 2)
        #expect(statuses.filter { $0.error == nil }.count == 1, "both images were served through one blob row: \(statuses)")
    }

    /// A read's outcome, set by the thread that blocks in it.
    final class ReadResult: Sendable {
        private let value = Mutex<Result<[UInt8], SyscallError>?>(nil)
        func withLock<T>(_ body: (inout Result<[UInt8], SyscallError>?) -> T) -> T { value.withLock { body(&$0) } }

        /// Runs `read` on a thread of its own (it may block in the kernel for as long as the test lets it).
        static func started(_ read: @escaping @Sendable () -> Result<[UInt8], SyscallError>) -> ReadResult {
            let result = ReadResult()
            Thread.detachNewThread {
                let outcome = read()
                result.withLock { $0 = outcome }
            }
            return result
        }
    }

    /// Polls `condition` every 50 ms until it holds or `seconds` pass; whether it held.
    static func waitFor(seconds: Double, _ condition: () -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }
}

extension TrustAttackTests {
    /// Pulls of images that share a blob, and of a poisoner naming it, at the same time and while the victim is
    /// being read: each image reads exactly its own bytes, the twins share one backing file.
    @Test(
        "concurrent pulls of images sharing a blob, a poisoner among them, during reads: everyone reads their own", .timeLimit(.minutes(5)))
    func concurrentPulls() async throws {
        let scenario = try await Scenario("trust-concurrent")
        defer { scenario.tearDown() }
        try await scenario.victim.push(with: RegistryTestSupport.client(), registry: scenario.registry.host, repository: "twin", tag: "v1")
        let poisoner = try scenario.publishPoisoner(repository: "evil")
        let victim = try scenario.pullAndMount(scenario.victimReference, key: "victim")
        let expected = scenario.victimFiles[Self.tool]!

        let twinReference = "\(scenario.registry.host)/twin:v1"
        let reading = ReadResult.started { Self.coldRead(victim + "/" + Self.tool) }
        let socket = scenario.harness.socket
        let results = try await withThrowingTaskGroup(of: (String, Int32, String).self) { group in
            for reference in [twinReference, poisoner.reference] {
                group.addTask {
                    let pulled = try await runBlocking {
                        try runCommand(DaemonHarness.snapctlPath, ["--socket", socket, "pull", reference])
                    }
                    return (reference, pulled.status, pulled.output)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        for (reference, status, output) in results { #expect(status == 0, "pull \(reference): \(output)") }
        #expect(try await Self.waitFor(seconds: 60) { reading.withLock { $0 } != nil })
        if let read = reading.withLock({ $0 }) { Self.expectOwnBytesOrEIO(read, expected[...], "victim read during the pulls") }

        for (reference, key, files) in [
            (twinReference, "twin", scenario.victimFiles), (poisoner.reference, "evil", poisoner.files),
        ] {
            _ = try scenario.harness.client().prepare(key: key, image: reference)
            let target = scenario.harness.directory + "/" + key
            _ = try scenario.harness.client().mount(key: key, target: target)
            let got = Self.coldRead(target + "/" + Self.tool)
            Self.expectOwnBytesOrEIO(got, files[Self.tool]![...], "\(key)'s \(Self.tool)")
            #expect((try? got.get()) != nil, "\(key): \(got)")
        }
        Self.expectOwnBytesOrEIO(Self.coldRead(victim + "/" + Self.tool), expected[...], "victim after the pulls")
        let images = try scenario.harness.client().images()
        let victimBacking = images.first { $0.reference == scenario.victimReference }?.blobs.first?.backingFile
        #expect(victimBacking != nil && images.first { $0.reference == twinReference }?.blobs.first?.backingFile == victimBacking)
        #expect(images.first { $0.reference == poisoner.reference }?.blobs.first?.backingFile != victimBacking)
    }
}

extension TrustAttackTests {
    /// On main: the victim's read got EIO: the blob row kept the copycat's registry as its only source, so
    /// every chunk the victim missed came from there and failed its digest (safe, but the victim could not run).
    @Test(
        "a copycat of the victim's image whose registry serves bad chunk bytes, pulled first, costs the victim nothing",
        .timeLimit(.minutes(5)))
    func copycatSource() async throws {
        let scenario = try await Scenario("trust-copycat")
        defer { scenario.tearDown() }
        let data = CraftedImages.dataLayer(of: scenario.victim)
        let entry = try CraftedImages.blobEntry(of: scenario.victim, scratch: scenario.harness.directory + "/entry")
        var blob = try CraftedImages.bytes(of: data, in: scenario.victim)
        for index in stride(from: 0, to: Int(entry.metaOffset), by: 4096) { blob[index] ^= 0xFF }
        try CraftedImages.publish(scenario.victim, to: scenario.hostile, repository: "copycat", tag: "v1", dataBlob: blob)
        let copycat = try scenario.pullAndMount("\(scenario.hostile.host)/copycat:v1", key: "copycat")
        // The copycat's own readers get EIO: its registry's bytes do not verify.
        if case .success = Self.coldRead(copycat + "/" + Self.tool, count: 4096) {
            Issue.record("bytes that fail their digest were served")
        }

        let victim = try scenario.pullAndMount(scenario.victimReference, key: "victim")
        let expected = scenario.victimFiles[Self.tool]!
        let got = Self.coldRead(victim + "/" + Self.tool)
        Self.expectOwnBytesOrEIO(got, expected[...], "victim's \(Self.tool)")
        #expect((try? got.get()) != nil, "the victim's read failed: \(got)")
        // Both images share one verified copy now: the copycat reads the victim's (identical) bytes too.
        let copycatSharesVerifiedCopy = Self.same(Self.coldRead(copycat + "/" + Self.tool), expected)
        #expect(copycatSharesVerifiedCopy, "the read did not return the image's own bytes")
    }
}
