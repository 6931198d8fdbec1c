import CLinux
import Foundation
import LinuxKernel
import Logging
import MountManager
import Synchronization
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Fills ranges by copying them from a complete copy of the blob, counting what it copied, optionally
/// failing for ranges that overlap `failing`.
final class CopyingFiller: RangeFiller {
    let source: String
    let target: String
    let failing: Range<UInt64>?
    let copied = Mutex<(calls: Int, bytes: UInt64)>((0, 0))
    /// 4 KiB pages written so far: like the real engine, a range already filled is answered without copying
    /// (the kernel asks again when its page cache was reclaimed, e.g. under a loaded parallel test run).
    let pages = Mutex<Set<UInt64>>([])

    func isPresent(file: BackingFileID, offset: UInt64, length: UInt64) -> Bool {
        guard length > 0 else { return true }
        let wanted = (offset / 4096)...((offset + length - 1) / 4096)
        return pages.withLock { pages in wanted.allSatisfy { pages.contains($0) } }
    }

    init(source: String, target: String, failing: Range<UInt64>? = nil) {
        self.source = source
        self.target = target
        self.failing = failing
    }

    struct Refused: Error {}

    func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws {
        if let failing, failing.overlaps(offset..<(offset + length)) { throw Refused() }
        let input = open(source, O_RDONLY)
        let output = open(target, O_WRONLY)
        defer {
            close(input)
            close(output)
        }
        var buffer = [UInt8](repeating: 0, count: Int(length))
        let n = pread(input, &buffer, Int(length), off_t(offset))
        guard n >= 0 else { throw SyscallError(call: "pread", errno: errno) }
        guard pwrite(output, buffer, n, off_t(offset)) == n else { throw SyscallError(call: "pwrite", errno: errno) }
        copied.withLock {
            $0.calls += 1
            $0.bytes += UInt64(n)
        }
        if n > 0 {
            let filled = (offset / 4096)...((offset + UInt64(n) - 1) / 4096)
            pages.withLock { $0.formUnion(filled) }
        }
    }
}

/// A temp workspace on a disk filesystem (tmpfs refuses pre-content marks), torn down even on failure.
final class FanotifyWorkspace {
    let root: String
    var cache: String { root + "/cache" }
    var watched: String { root + "/ondemand" }
    var source: String { root + "/src" }

    init() throws {
        var template = Array("/var/tmp/fanotify-test-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw SyscallError(call: "mkdtemp", errno: errno) }
        root = String(cString: dir)
        try FileSystem.makeDirectories(cache)
        try FileSystem.makeDirectories(source)
    }

    deinit {
        TestCleanup.unmountAll(under: root)
        try? FileSystem.removeTree(root)
    }

    /// Writes deterministic pseudo-random files into src/ and builds an EROFS bootstrap whose chunked data lives
    /// in a separate blob (mkfs.erofs --blobdev), like a RAFS image.
    func buildImage(files: [String: Int]) throws -> (bootstrap: String, fullBlob: String) {
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for (name, size) in files.sorted(by: { $0.key < $1.key }) {
            var bytes = [UInt8](repeating: 0, count: size)
            for index in 0..<size {
                seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                bytes[index] = UInt8(truncatingIfNeeded: seed >> 33)
            }
            try Data(bytes).write(to: URL(fileURLWithPath: source + "/" + name))
        }
        let bootstrap = cache + "/boot.img"
        let fullBlob = root + "/full.blob"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/mkfs.erofs")
        process.arguments = ["--chunksize=4096", "--blobdev=\(fullBlob)", bootstrap, source]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        guard process.waitForExit().status == 0 else { throw SyscallError(call: "mkfs.erofs", errno: EIO) }
        return (bootstrap, fullBlob)
    }

    /// A sparse file of the blob's size under cache/: every data byte must come through the front end.
    func sparseCopy(of blob: String, named name: String) throws -> String {
        let path = cache + "/" + name
        let size = try FileSystem.lstat(blob).st_size
        let fd = open(path, O_CREAT | O_WRONLY, 0o600)
        defer { close(fd) }
        guard ftruncate(fd, size) == 0 else { throw SyscallError(call: "ftruncate", errno: errno) }
        return path
    }
}

func readFile(_ path: String) async throws -> Data {
    try await onOwnThread { try Data(contentsOf: URL(fileURLWithPath: path)) }
}

/// Time limits are generous: the front end runs fills on the cooperative pool, which in `swift test` is shared
/// with every other suite (two threads here), some of which block it while they wait on daemons.
@Suite("fanotify front end on the host kernel", .ownThread)
struct FanotifyFrontEndTests {
    static var supported: Bool {
        guard geteuid() == 0 else { return false }
        let fd = fanotify_init(UInt32(FAN_CLASS_PRE_CONTENT), UInt32(O_RDONLY))
        if fd >= 0 { close(fd) }
        return fd >= 0 && FileManager.default.fileExists(atPath: "/usr/bin/mkfs.erofs")
    }

    static let files = ["big": 3 * 1024 * 1024 + 123, "medium": 200_000, "small": 5000, "tiny": 10]

    @Test("a file-backed EROFS mount over a sparse blob reads correct bytes, fetching only what is read", .timeLimit(.minutes(3)))
    func lazyReads() async throws {
        try #require(Self.supported, "needs root, fanotify pre-content events (Linux 6.14+) and mkfs.erofs")
        let workspace = try FanotifyWorkspace()
        let (_, fullBlob) = try workspace.buildImage(files: Self.files)
        let blob = try workspace.sparseCopy(of: fullBlob, named: "data.blob")
        let filler = CopyingFiller(source: fullBlob, target: blob)
        let frontEnd = FanotifyFrontEnd(
            cacheDirectory: workspace.cache, watchedDirectory: workspace.watched,
            journal: try InFlightJournal(path: workspace.root + "/journal"), group: try FanotifyGroup(),
            filler: filler, logger: Logger(label: "test"))
        try frontEnd.start()
        defer { frontEnd.stop() }
        try frontEnd.register(BackingFile(id: .blob(7), path: blob))

        let mountPoint = workspace.root + "/mnt"
        try FileSystem.makeDirectories(mountPoint)
        let source = frontEnd.watchedPath(for: workspace.cache + "/boot.img")
        try Mounter.mount(
            KernelMount(type: "erofs", source: source, options: ["ro", "device=\(frontEnd.watchedPath(for: blob))"]), at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }

        // Reading one small file fetches a small part of the blob.
        let small = try await readFile(mountPoint + "/medium")
        #expect(small == (try Data(contentsOf: URL(fileURLWithPath: workspace.source + "/medium"))))
        let afterOne = filler.copied.withLock { $0 }
        let blobSize = UInt64(try FileSystem.lstat(fullBlob).st_size)
        #expect(afterOne.calls > 0)
        #expect(afterOne.bytes < blobSize / 2, "reading 200 KB fetched \(afterOne.bytes) of \(blobSize) bytes")

        for name in Self.files.keys {
            let viaMount = try await readFile(mountPoint + "/" + name)
            #expect(viaMount == (try Data(contentsOf: URL(fileURLWithPath: workspace.source + "/" + name))), "\(name) differs")
        }
        let afterAll = filler.copied.withLock { $0 }
        // Nothing is fetched twice: the page cache and the now-present ranges serve a second pass.
        for name in Self.files.keys { _ = try await readFile(mountPoint + "/" + name) }
        #expect(filler.copied.withLock { $0.bytes } == afterAll.bytes)
        #expect(frontEnd.statistics.denied == 0)
    }

    /// The group's queue limit (`fs.fanotify.max_queued_events`, read when a group is created) set to `limit`
    /// while `body` creates a group.
    static func withQueueLimit<T>(_ limit: Int, _ body: () throws -> T) throws -> T {
        let knob = "/proc/sys/fs/fanotify/max_queued_events"
        let saved = try String(contentsOfFile: knob, encoding: .utf8)
        try "\(limit)\n".write(toFile: knob, atomically: false, encoding: .utf8)
        defer { try? saved.write(toFile: knob, atomically: false, encoding: .utf8) }
        return try body()
    }

    @Test("more readers waiting than the queue's default limit all wait for their bytes; none reads holes", .timeLimit(.minutes(3)))
    func fullQueue() async throws {
        try #require(Self.supported, "needs root, fanotify pre-content events (Linux 6.14+) and mkfs.erofs")
        let workspace = try FanotifyWorkspace()
        let names = (0..<6).map { "file\($0)" }
        let (bootstrap, fullBlob) = try workspace.buildImage(files: Dictionary(uniqueKeysWithValues: names.map { ($0, 64 * 1024) }))
        let blob = try workspace.sparseCopy(of: fullBlob, named: "data.blob")
        let filler = CopyingFiller(source: fullBlob, target: blob)
        // A limit of 2 stands for the 16384 a busy host fills while the daemon starts up or stalls: beyond it the
        // kernel drops an event, and a dropped permission event is an allowed one.
        let group = try Self.withQueueLimit(2) { try FanotifyGroup() }
        let frontEnd = FanotifyFrontEnd(
            cacheDirectory: workspace.cache, watchedDirectory: workspace.watched,
            journal: try InFlightJournal(path: workspace.root + "/journal"), group: group, filler: filler, logger: Logger(label: "test"))
        try frontEnd.start(serving: false)
        defer { frontEnd.stop() }
        try frontEnd.register(BackingFile(id: .blob(3), path: blob))
        let mountPoint = workspace.root + "/mnt"
        try FileSystem.makeDirectories(mountPoint)
        // The bootstrap is mounted from cache/ (no events), so only the blob's reads wait on the front end.
        try Mounter.mount(
            KernelMount(type: "erofs", source: bootstrap, options: ["ro", "device=\(frontEnd.watchedPath(for: blob))"]), at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }

        // Each reader is its own process, so that the kernel can say where it waits.
        let outputs = workspace.root + "/out"
        try FileSystem.makeDirectories(outputs)
        var readers: [Process] = []
        for name in names {
            let reader = Process()
            reader.executableURL = URL(fileURLWithPath: "/bin/dd")
            reader.arguments = ["if=\(mountPoint)/\(name)", "of=\(outputs)/\(name)", "bs=1M", "status=none"]
            try reader.run()
            readers.append(reader)
        }
        // Every reader has either finished (its event was dropped: it read the holes) or waits for an answer.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let settled = readers.allSatisfy { reader in
                !reader.isRunning
                    || ((try? String(contentsOfFile: "/proc/\(reader.processIdentifier)/wchan", encoding: .utf8)) ?? "").contains(
                        "fanotify")
            }
            if settled { break }
            usleep(10_000)
        }
        frontEnd.startServing()
        for reader in readers { #expect(reader.waitForExit().status == 0) }
        for name in names {
            let read = try Data(contentsOf: URL(fileURLWithPath: outputs + "/" + name))
            #expect(read == (try Data(contentsOf: URL(fileURLWithPath: workspace.source + "/" + name))), "\(name) read other bytes")
        }
    }

    @Test("a failed fill gives the reader EIO, never zeros, and other files keep working", .timeLimit(.minutes(3)))
    func failedFill() async throws {
        try #require(Self.supported, "needs root, fanotify pre-content events (Linux 6.14+) and mkfs.erofs")
        let workspace = try FanotifyWorkspace()
        let (_, fullBlob) = try workspace.buildImage(files: ["a": 64 * 1024, "b": 64 * 1024])
        let blob = try workspace.sparseCopy(of: fullBlob, named: "data.blob")
        // mkfs.erofs lays files out in name order: "a" first, then "b".
        let filler = CopyingFiller(source: fullBlob, target: blob, failing: 0..<4096)
        let frontEnd = FanotifyFrontEnd(
            cacheDirectory: workspace.cache, watchedDirectory: workspace.watched,
            journal: try InFlightJournal(path: workspace.root + "/journal"), group: try FanotifyGroup(),
            filler: filler, logger: Logger(label: "test"))
        try frontEnd.start()
        defer { frontEnd.stop() }
        try frontEnd.register(BackingFile(id: .blob(1), path: blob))
        let mountPoint = workspace.root + "/mnt"
        try FileSystem.makeDirectories(mountPoint)
        try Mounter.mount(
            KernelMount(
                type: "erofs", source: frontEnd.watchedPath(for: workspace.cache + "/boot.img"),
                options: ["ro", "device=\(frontEnd.watchedPath(for: blob))"]), at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }

        let path = mountPoint + "/a"
        let (fd, n, code) = try await onOwnThread { () -> (Int32, Int, Int32) in
            let fd = open(path, O_RDONLY)
            var buffer = [UInt8](repeating: 0xAA, count: 4096)
            let n = read(fd, &buffer, buffer.count)
            let code = errno
            close(fd)
            return (fd, n, code)
        }
        #expect(fd >= 0)
        #expect(n == -1 && code == EIO, "read returned \(n) (errno \(code))")
        #expect(frontEnd.statistics.denied >= 1)
        let other = try await readFile(mountPoint + "/b")
        #expect(other == (try Data(contentsOf: URL(fileURLWithPath: workspace.source + "/b"))))
    }

    @Test("the journal keeps events until they are answered")
    func journal() throws {
        var template = Array("/tmp/journal-XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileSystem.removeTree(dir) }
        let journal = try InFlightJournal(path: dir + "/j")
        try journal.record(.init(fd: 12, file: .blob(3), offset: 4096, count: 8192))
        try journal.record(.init(fd: 5, file: .bootstrap(imageID: 9), offset: 0, count: 1))
        #expect(try journal.pending().map(\.fd) == [5, 12])
        // A blob and a bootstrap with the same catalog number stay apart on disk.
        #expect(try journal.pending().map(\.file) == [.bootstrap(imageID: 9), .blob(3)])
        let twin = InFlightJournal.Record(fd: 6, file: .bootstrap(imageID: 3), offset: 0, count: 1)
        #expect(InFlightJournal.Record(decoding: twin.encoded()) == twin)
        #expect(InFlightJournal.Record(decoding: twin.encoded())?.file != .blob(3))
        try journal.clear(fd: 5)
        #expect(try journal.pending() == [.init(fd: 12, file: .blob(3), offset: 4096, count: 8192)])
        let reopened = try InFlightJournal(path: dir + "/j")
        #expect(try reopened.pending().count == 1)
    }

    @Test("event records parse, including the range record; malformed buffers are refused")
    func parsing() throws {
        var bytes = [UInt8](repeating: 0, count: 48)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            for i in 0..<MemoryLayout<T>.size { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        put(UInt32(48), 0)
        bytes[4] = UInt8(FANOTIFY_METADATA_VERSION)
        put(UInt16(24), 6)
        put(UInt64(FAN_PRE_ACCESS), 8)
        put(Int32(9), 16)
        put(Int32(1234), 20)
        bytes[24] = UInt8(FAN_EVENT_INFO_TYPE_RANGE)
        put(UInt16(24), 26)
        put(UInt64(8192), 32)
        put(UInt64(4096), 40)
        let events = try FanotifyGroup.parseForTesting(bytes)
        #expect(events == [FanotifyEvent(fd: 9, pid: 1234, mask: UInt64(FAN_PRE_ACCESS), offset: 8192, count: 4096)])
        var broken = bytes
        broken[0] = 200
        #expect(throws: KernelError.self) { try FanotifyGroup.parseForTesting(broken) }
    }
}

/// A filler whose fills each wait (up to 20 s) until `expected` of them run at once, counting the most seen.
final class BarrierFiller: RangeFiller {
    let expected: Int
    let running = Mutex<(now: Int, most: Int)>((0, 0))

    init(expected: Int) { self.expected = expected }

    func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws {
        running.withLock { running in
            running.now += 1
            running.most = max(running.most, running.now)
        }
        defer { running.withLock { $0.now -= 1 } }
        let deadline = ContinuousClock.now + .seconds(20)
        while running.withLock({ $0.most }) < expected, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
    }
}

/// A filler that never finishes: the serving side "dies" in the middle of a fill.
struct StuckFiller: RangeFiller {
    func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws {
        try await Task.sleep(for: .seconds(3600))
    }
}

@Suite("fanotify group hand-over", .ownThread)
struct FanotifyHandOverTests {
    static var holderBinary: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("snapshotterd-fdholder").path
    }

    @Test("a holder keeps only the descriptor it holds: nothing else its spawner had open lives on in it")
    func holderInheritsNothing() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.holderBinary), "snapshotterd-fdholder is not built")
        var template = Array("/var/tmp/holder-fds-XXXXXX".utf8CString)
        let directory = try #require(mkdtemp(&template).map { String(cString: $0) })
        defer { try? FileSystem.removeTree(directory) }
        // A descriptor the spawner has open without O_CLOEXEC (libraries open such: curl's sockets, Foundation's
        // files): a holder that kept it would keep a connection, or a file in a mount (unmount: EBUSY), for life.
        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let held = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(held) }
        var pipeStat = stat()
        try #require(fstat(ends[1], &pipeStat) == 0)
        let pipeName = "pipe:[\(pipeStat.st_ino)]"
        let socket = directory + "/holder.sock"
        let pid = try DescriptorHolder.spawn(binary: Self.holderBinary, socketPath: socket, fd: held)
        defer { DescriptorHolder.release(socketPath: socket) }
        close(ends[1])
        // The holder closes what it inherited before it serves its socket, and spawn returns once it serves.
        // Ask the holder's own descriptor table: other tests' children may hold copies of our pipe too (it is
        // not O_CLOEXEC), so a hang-up on the read end would prove nothing either way.
        let table = "/proc/\(pid)/fd"
        let targets = try FileManager.default.contentsOfDirectory(atPath: table).compactMap { FileSystem.readLink(table + "/" + $0) }
        #expect(targets.contains("/dev/null"), "the holder does not hold its descriptor: \(targets)")
        #expect(!targets.contains(pipeName), "the holder kept the pipe's write end: \(targets)")
    }

    /// On main: "the inherited ranges were filled one at a time (at most 1 at once)": three slow ones held every
    /// new reader for three fills.
    @Test("the events a predecessor left are filled side by side")
    func inheritedSideBySide() async throws {
        try #require(FanotifyFrontEndTests.supported, "needs root, fanotify pre-content events (Linux 6.14+) and mkfs.erofs")
        let workspace = try FanotifyWorkspace()
        let journal = try InFlightJournal(path: workspace.root + "/journal")
        // Numbers nothing waits under: the answers get ENOENT, which the front end expects of readers that gave up.
        for number in Int32(900)..<903 {
            try journal.record(InFlightJournal.Record(fd: number, file: .blob(1), offset: UInt64(number - 900) * 4096, count: 4096))
        }
        let filler = BarrierFiller(expected: 3)
        let frontEnd = FanotifyFrontEnd(
            cacheDirectory: workspace.cache, watchedDirectory: workspace.watched, journal: journal, group: try FanotifyGroup(),
            filler: filler, logger: Logger(label: "test"))
        #expect(try await frontEnd.resumeInFlight() == 3)
        let most = filler.running.withLock { $0.most }
        #expect(most == 3, "the inherited ranges were filled one at a time (at most \(most) at once)")
        #expect(try journal.pending().isEmpty)
    }

    @Test("a successor adopts the group from the holder and completes the event its predecessor left", .timeLimit(.minutes(3)))
    func takeOver() async throws {
        try #require(FanotifyFrontEndTests.supported, "needs root, fanotify pre-content events (Linux 6.14+) and mkfs.erofs")
        try #require(FileManager.default.isExecutableFile(atPath: Self.holderBinary), "snapshotterd-fdholder is not built")
        let workspace = try FanotifyWorkspace()
        let (_, fullBlob) = try workspace.buildImage(files: ["file": 300_000])
        let blob = try workspace.sparseCopy(of: fullBlob, named: "data.blob")
        let holderSocket = workspace.root + "/holder.sock"
        let journalPath = workspace.root + "/journal"

        // The first server: its group goes to the holder, then it gets stuck mid-fill and stops reading.
        let first = FanotifyFrontEnd(
            cacheDirectory: workspace.cache, watchedDirectory: workspace.watched, journal: try InFlightJournal(path: journalPath),
            group: try FanotifyGroup(), filler: StuckFiller(), logger: Logger(label: "first"))
        try FanotifyGroupHolder.spawn(binary: Self.holderBinary, socketPath: holderSocket, group: first.group)
        defer { FanotifyGroupHolder.release(socketPath: holderSocket) }
        try first.start()
        try first.register(BackingFile(id: .blob(4), path: blob))
        let mountPoint = workspace.root + "/mnt"
        try FileSystem.makeDirectories(mountPoint)
        try Mounter.mount(
            KernelMount(
                type: "erofs", source: first.watchedPath(for: workspace.cache + "/boot.img"),
                options: ["ro", "device=\(first.watchedPath(for: blob))"]), at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }

        let path = mountPoint + "/file"
        let reader = Task { try await readFile(path) }
        // Wait until the first server has journaled the event it will never answer.
        let journal = try InFlightJournal(path: journalPath)
        for _ in 0..<500 where try journal.pending().isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try !journal.pending().isEmpty)
        first.stop()

        // The successor adopts the same group through the holder and finishes the job.
        let adopted = try #require(try FanotifyGroupHolder.adopt(socketPath: holderSocket))
        let filler = CopyingFiller(source: fullBlob, target: blob)
        let second = FanotifyFrontEnd(
            cacheDirectory: workspace.cache, watchedDirectory: workspace.watched, journal: journal, group: adopted,
            filler: filler, logger: Logger(label: "second"))
        try second.register(BackingFile(id: .blob(4), path: blob))
        try second.start()
        defer { second.stop() }
        #expect(try await second.resumeInFlight() >= 1)
        let data = try await reader.value
        #expect(data == (try Data(contentsOf: URL(fileURLWithPath: workspace.source + "/file"))))
        #expect(try journal.pending().isEmpty)
    }
}
