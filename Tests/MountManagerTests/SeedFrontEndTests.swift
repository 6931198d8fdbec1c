import BlobStore
import CLinux
import Foundation
import LinuxKernel
import Logging
import MountManager
import RAFS
import Synchronization
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("seed devnode front end against an emulated /dev/cachefiles_ondemand", .ownThread)
struct SeedFrontEndTests {
    /// The nydus fixture served by a seed front end on the emulated devnode: the blob's uncompressed backing
    /// file is prepared under the cachefiles tree and filled chunk by chunk from the compressed blob.
    struct Rig {
        let root: String
        let emulator: SeedDevnodeEmulator
        let frontEnd: SeedFrontEnd
        let image: ErofsImage
        let expected: [String: [UInt8]]
        let backing: String
        let registration: SeedFrontEnd.Registration

        init(failing: Range<UInt64>? = nil) throws {
            var template = Array("/var/tmp/seed-test-XXXXXX".utf8CString)
            guard let dir = mkdtemp(&template) else { throw SyscallError(call: "mkdtemp", errno: errno) }
            root = String(cString: dir)
            let (image, blob) = try NydusFixture.open()
            self.image = image
            expected = try NydusFixture.expectedFiles(image: image, blob: blob)
            emulator = try SeedDevnodeEmulator(timeoutSeconds: 120)
            registration = SeedFrontEnd.Registration(
                id: .blob(3), volumeKey: CachefilesNaming.volumeKey(domain: "seedtest"), cookieKey: NydusFixture.blobID,
                size: blob.deviceSize)
            let path = root + "/cache/" + CachefilesNaming.relativePath(domain: "seedtest", blobID: NydusFixture.blobID)
            frontEnd = SeedFrontEnd(
                root: root, device: CachefilesDevice(adopting: emulator.daemonFD),
                filler: RafsChunkFiller(blob: blob, target: path, failing: failing), logger: Logger(label: "test"))
            try frontEnd.bind(tag: "seedtest")
            backing = try frontEnd.register(registration)
            #expect(backing == path)
            frontEnd.start()
        }

        func read(_ path: String) async throws -> [UInt8] {
            let device = EmulatedSeedDevice(emulator: emulator, path: backing)
            let image = self.image
            return try await onOwnThread { try image.readFile(path, devices: [1: device]) }
        }

        func tearDown() {
            frontEnd.stop()
            emulator.closeDaemonEnd()
            try? FileSystem.removeTree(root)
        }
    }

    @Test("backing files are prepared sparse at full size where CachefilesNaming says", .timeLimit(.minutes(3)))
    func preparedFiles() throws {
        try #require(NydusFixture.available, "needs the nydus fixture in ../shared/fixtures/nydus beside the checkout")
        let rig = try Rig()
        defer { rig.tearDown() }
        let st = try FileSystem.lstat(rig.backing)
        #expect(UInt64(st.st_size) == rig.registration.size)
        #expect(st.st_blocks == 0, "the prepared file must be a hole from end to end")
        #expect(rig.backing.hasPrefix(rig.root + "/cache/Ierofs,seedtest/@"))
        #expect(rig.backing.hasSuffix("/D" + NydusFixture.blobID))
        #expect(rig.emulator.waitUntilBound())
        let state = rig.emulator.state.withLock { ($0.directory, $0.tag, $0.bound) }
        #expect(state.0 == rig.root)
        #expect(state.1 == "seedtest")
        #expect(state.2)
    }

    @Test("reads through the project's EROFS reader are served on demand and match the blob", .timeLimit(.minutes(3)))
    func contentEquality() async throws {
        try #require(NydusFixture.available, "needs the nydus fixture in ../shared/fixtures/nydus beside the checkout")
        let rig = try Rig()
        defer { rig.tearDown() }
        #expect(rig.expected.count >= 2)
        for (path, content) in rig.expected.sorted(by: { $0.key < $1.key }) {
            let bytes = try await rig.read(path)
            #expect(bytes == content, "\(path) differs")
        }
        let served = rig.frontEnd.statistics
        #expect(served.requests > 0 && served.filled == served.requests)
        // A second pass finds every range present: no new requests.
        for path in rig.expected.keys { _ = try await rig.read(path) }
        #expect(rig.frontEnd.statistics.requests == served.requests)
        #expect(rig.emulator.state.withLock { $0.badCommands }.isEmpty)
        #expect(rig.frontEnd.statistics.failed == 0)
    }

    @Test("a failed fill gives the reader EIO, quickly, and other files keep working", .timeLimit(.minutes(3)))
    func failedFill() async throws {
        try #require(NydusFixture.available, "needs the nydus fixture in ../shared/fixtures/nydus beside the checkout")
        let rig = try Rig(failing: 0..<4096)
        defer { rig.tearDown() }
        let (image, _) = try NydusFixture.open()
        var failing: [String] = []
        var working: [String] = []
        for path in rig.expected.keys.sorted() {
            let mapping = try #require(try image.chunkMappings(of: image.lookup(path)).first)
            if mapping.deviceOffset == 0 { failing.append(path) } else { working.append(path) }
        }
        try #require(!failing.isEmpty && !working.isEmpty)
        let started = monotonicNanoseconds()
        await #expect(throws: ImageFormatError.io(path: rig.backing, SyscallError(call: "read", errno: EIO, subject: rig.backing))) {
            _ = try await rig.read(failing[0])
        }
        #expect(monotonicNanoseconds() - started < 60_000_000_000, "EIO must come from done, not from the emulator's 120 s timeout")
        #expect(rig.frontEnd.statistics.failed >= 1)
        for path in working { #expect(try await rig.read(path) == rig.expected[path]) }
    }

    @Test("a daemon that dies releases its readers with EIO instead of a hang", .timeLimit(.minutes(3)))
    func daemonDeath() async throws {
        try #require(NydusFixture.available, "needs the nydus fixture in ../shared/fixtures/nydus beside the checkout")
        let rig = try Rig()
        defer { try? FileSystem.removeTree(rig.root) }
        rig.frontEnd.stop()  // nobody serves: the reader waits
        let device = EmulatedSeedDevice(emulator: rig.emulator, path: rig.backing)
        let image = rig.image
        let path = try #require(rig.expected.keys.sorted().first)
        let reader = Task { try await onOwnThread { try image.readFile(path, devices: [1: device]) } }
        // Wait (up to 30 s on a loaded machine) until the reader is blocked on its request.
        for _ in 0..<300 where rig.emulator.state.withLock({ $0.waiting.count }) == 0 { try await Task.sleep(for: .milliseconds(100)) }
        #expect(rig.emulator.state.withLock { $0.waiting.count } == 1, "the reader must be blocked on its request")
        rig.emulator.closeDaemonEnd()
        await #expect(throws: ImageFormatError.self) { _ = try await reader.value }
    }

    @Test("the journal hands out free slots, clears them and shows a successor what was left")
    func journalSlots() throws {
        var template = Array("/var/tmp/seed-journal-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw SyscallError(call: "mkdtemp", errno: errno) }
        let root = String(cString: dir)
        defer { try? FileSystem.removeTree(root) }
        let path = root + "/seed.journal"
        let requests = (1...3).map { SeedRequest(id: UInt64($0) << 40, offset: UInt64($0) * 4096, length: 4096, path: "D\($0)") }
        do {
            let journal = try SeedJournal(path: path)
            #expect(journal.inherited.isEmpty)
            #expect(try requests.map { try journal.record($0) } == [0, 1, 2])
            try journal.clear(slot: 1)
            #expect(try journal.pending() == [.init(slot: 0, request: requests[0]), .init(slot: 2, request: requests[2])])
        }
        let successor = try SeedJournal(path: path)
        #expect(successor.inherited == [.init(slot: 0, request: requests[0]), .init(slot: 2, request: requests[2])])
        // Inherited slots stay taken until cleared.
        #expect(try successor.record(requests[1]) == 1)
        #expect(try successor.record(requests[1]) == 3)
    }

    @Test("a successor completes the requests its predecessor journalled but never answered", .timeLimit(.minutes(3)))
    func successorCompletesJournalled() async throws {
        try #require(NydusFixture.available, "needs the nydus fixture in ../shared/fixtures/nydus beside the checkout")
        var template = Array("/var/tmp/seed-test-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw SyscallError(call: "mkdtemp", errno: errno) }
        let root = String(cString: dir)
        defer { try? FileSystem.removeTree(root) }
        let (image, blob) = try NydusFixture.open()
        let expected = try NydusFixture.expectedFiles(image: image, blob: blob)
        let emulator = try SeedDevnodeEmulator(timeoutSeconds: 60)
        defer { emulator.closeDaemonEnd() }
        let registration = SeedFrontEnd.Registration(
            id: .blob(3), volumeKey: CachefilesNaming.volumeKey(domain: "seedtest"), cookieKey: NydusFixture.blobID, size: blob.deviceSize)
        let device = CachefilesDevice(adopting: emulator.daemonFD)
        let journalPath = root + "/seed.journal"
        let backing = root + "/cache/" + CachefilesNaming.relativePath(domain: "seedtest", blobID: NydusFixture.blobID)
        let filler = RafsChunkFiller(blob: blob, target: backing)

        // The predecessor: binds, prepares the file, reads one request and journals it, then dies unanswered.
        let predecessor = SeedFrontEnd(
            root: root, device: device, filler: filler, logger: Logger(label: "test"), journal: try SeedJournal(path: journalPath))
        try predecessor.bind(tag: "seedtest")
        try predecessor.register(registration)
        let path = try #require(expected.keys.sorted().first)
        // The reader starts on a thread of its own right away, and the wait for its request does not hold a
        // cooperative thread: with the whole suite running on two cores, a task might not start for a while.
        let reader = StartedThread { try image.readFile(path, devices: [1: EmulatedSeedDevice(emulator: emulator, path: backing)]) }
        let message = try #require(
            try await onOwnThread { try device.readMessage(timeoutMilliseconds: 30_000) }, "no request reached the daemon end")
        _ = try predecessor.journal?.record(try SeedRequest.parse(message))
        #expect(emulator.waitingReaders == 1)

        // The successor: same device, journal reopened, file registered, journalled requests completed.
        let successor = SeedFrontEnd(
            root: root, device: device, filler: filler, logger: Logger(label: "test"), journal: try SeedJournal(path: journalPath))
        try successor.register(registration)
        #expect(await successor.resumeJournalled() == 1)
        #expect(try await reader.value() == expected[path])
        #expect(try successor.journal?.pending() == [])
        #expect(emulator.state.withLock { $0.badCommands }.isEmpty)
    }

    @Test(
        "wire layout of cachefiles_req_in",
        arguments: [(UInt64(1), UInt64(0), UInt64(4096), "Dabc"), (UInt64.max, 1 << 40, 7, String(repeating: "x", count: 254))])
    func wireLayout(id: UInt64, offset: UInt64, length: UInt64, path: String) throws {
        let request = SeedRequest(id: id, offset: offset, length: length, path: path)
        let bytes = try request.encoded()
        #expect(bytes.count == 280)
        #expect(bytes[0] == UInt8(truncatingIfNeeded: id) && bytes[8] == UInt8(truncatingIfNeeded: offset))
        #expect(Array(bytes[24..<(24 + path.utf8.count)]) == Array(path.utf8) && bytes[24 + path.utf8.count] == 0)
        #expect(try SeedRequest.parse(bytes) == request)
        #expect(throws: FrontEndError.badRequestSize(279)) { try SeedRequest.parse(Array(bytes.prefix(279))) }
        var slash = bytes
        slash[24] = UInt8(ascii: "/")
        #expect(throws: FrontEndError.self) { try SeedRequest.parse(slash) }
    }
}

/// Runs `body` on a thread started at once (not through a task, which may wait for a free cooperative
/// thread); `value()` awaits its result without blocking the cooperative pool.
final class StartedThread<T: Sendable>: Sendable {
    private let result = Mutex<Result<T, any Error>?>(nil)
    private let finished = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () throws -> T) {
        let thread = Thread {
            let outcome = Result { try body() }
            self.result.withLock { $0 = outcome }
            self.finished.signal()
        }
        thread.start()
    }

    func value() async throws -> T {
        let finished = self.finished
        try await onOwnThread { finished.wait() }
        return try result.withLock { $0! }.get()
    }
}
