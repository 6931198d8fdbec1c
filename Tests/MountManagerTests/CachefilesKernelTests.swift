import BlobStore
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

/// Serves the bootstrap as it is (already whole) and the blob by materializing chunks from the nydus fixture.
struct FixtureFiller: RangeFiller {
    static let bootstrapID = BackingFileID.bootstrap(imageID: 1)
    static let blobID = BackingFileID.blob(2)
    let blob: RafsChunkFiller
    /// When set, blob fills write this marker file and then never return (a daemon stuck mid-request).
    let stuckMarker: String?

    func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws {
        guard file == Self.blobID else { return }
        if let stuckMarker {
            FileManager.default.createFile(atPath: stuckMarker, contents: Data())
            try await Task.sleep(for: .seconds(3600))
        }
        try await blob.fill(file: file, offset: offset, length: length)
    }
}

/// One daemon's view of the guest scenario: our own backing files under `<root>/svc/cache/`, the kernel's
/// cachefiles directory at `<root>/fscache`, the nydus fixture registered as (volume `erofs,<domain>`,
/// cookie `<fsid>`) for the bootstrap and (same volume, cookie = device tag = blob id) for the blob.
struct GuestRig {
    static let domain = "vmdomain"
    static let fsid = "vmboot1"

    let root: String
    let image: ErofsImage
    let blob: RafsBlob
    let expected: [String: [UInt8]]
    let bootstrapPath: String
    let bootstrapSize: UInt64
    let blobPath: String

    init(root: String) throws {
        self.root = root
        (image, blob) = try NydusFixture.open()
        expected = try NydusFixture.expectedFiles(image: image, blob: blob)
        bootstrapSize = UInt64(try FileSystem.lstat(NydusFixture.bootstrap).st_size)
        let volume = CachefilesNaming.volumeKey(domain: Self.domain)
        bootstrapPath = root + "/svc/cache/" + CachefilesNaming.relativePath(volumeKey: volume, cookieKey: Array(Self.fsid.utf8))
        blobPath = root + "/svc/cache/" + CachefilesNaming.relativePath(domain: Self.domain, blobID: NydusFixture.blobID)
        try FileSystem.makeDirectories(FileSystem.parentPath(bootstrapPath))
        try FileSystem.makeDirectories(FileSystem.parentPath(blobPath))
        try FileSystem.makeDirectories(root + "/fscache")
        if !FileSystem.exists(bootstrapPath) {
            try FileManager.default.copyItem(atPath: NydusFixture.bootstrap, toPath: bootstrapPath)
        }
        if !FileSystem.exists(blobPath) {
            let fd = open(blobPath, O_CREAT | O_WRONLY, 0o600)
            defer { close(fd) }
            guard ftruncate(fd, off_t(blob.deviceSize)) == 0 else { throw SyscallError(call: "ftruncate", errno: errno) }
        }
    }

    var registrations: [CachefilesFrontEnd.Registration] {
        let volume = CachefilesNaming.volumeKey(domain: Self.domain)
        return [
            .init(
                id: FixtureFiller.bootstrapID, volumeKey: volume, cookieKey: Array(Self.fsid.utf8),
                size: bootstrapSize, backingPath: bootstrapPath),
            .init(
                id: FixtureFiller.blobID, volumeKey: volume, cookieKey: Array(NydusFixture.blobID.utf8), size: blob.deviceSize,
                backingPath: blobPath),
        ]
    }

    func filler(failing: Range<UInt64>? = nil, stuckMarker: String? = nil) -> FixtureFiller {
        FixtureFiller(blob: RafsChunkFiller(blob: blob, target: blobPath, failing: failing), stuckMarker: stuckMarker)
    }

    func frontEnd(device: CachefilesDevice, filler: FixtureFiller) -> CachefilesFrontEnd {
        let frontEnd = CachefilesFrontEnd(device: device, filler: filler, logger: Logger(label: "guest"))
        for registration in registrations { frontEnd.register(registration) }
        return frontEnd
    }

    func mount(at point: String) throws {
        try FileSystem.makeDirectories(point)
        try Mounter.mount(CachefilesFrontEnd.erofsMount(fsid: Self.fsid, domainID: Self.domain), at: point)
    }

    /// The data files the kernel created under its cache tree, relative to `fscache/cache/`.
    func kernelDataFiles() throws -> Set<String> {
        let cache = root + "/fscache/cache"
        var found: Set<String> = []
        for volume in try FileSystem.listDirectory(cache) where volume.hasPrefix("I") {
            for fan in try FileSystem.listDirectory(cache + "/" + volume) {
                for name in try FileSystem.listDirectory(cache + "/" + volume + "/" + fan) { found.insert("\(volume)/\(fan)/\(name)") }
            }
        }
        return found
    }
}

func readWhole(_ path: String) async throws -> [UInt8] {
    try await onOwnThread { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
}

enum GuestEnvironment {
    static var inGuest: Bool {
        ProcessInfo.processInfo.environment["VM_GUEST"] == "1" && FileManager.default.fileExists(atPath: "/dev/cachefiles")
    }
}

/// Runs inside the 6.12 test VM only (scripts/vm-test sets VM_GUEST=1): needs /dev/cachefiles in on-demand
/// mode, EROFS over fscache, and a disk filesystem for the cache. `CachefilesVMTests` runs it from the host.
@Suite(
    "cachefiles front end on the 6.12 kernel (guest side)", .serialized,
    .enabled(
        if: GuestEnvironment.inGuest, "runs inside the test VM (scripts/vm-test, see CachefilesVMTests): the host kernel has no cachefiles"),
    .ownThread
)
struct CachefilesKernelTests {
    static var guestRoot: String { ProcessInfo.processInfo.environment["VM_CACHE_DIR"] ?? "/tmp/cache" }
    static var share: String? { ProcessInfo.processInfo.environment["VM_SHARE"] }

    @Test("EROFS over cachefiles reads every file correctly, with cache files where CachefilesNaming says", .timeLimit(.minutes(3)))
    func servesImage() async throws {
        let rig = try GuestRig(root: Self.guestRoot + "/serve")
        let device = try CachefilesDevice()
        defer { device.close() }
        try device.bind(cacheDirectory: rig.root + "/fscache", tag: "serve")
        let frontEnd = rig.frontEnd(device: device, filler: rig.filler())
        frontEnd.start()
        defer {
            frontEnd.stop()
            frontEnd.closeObjects()
        }
        let mountPoint = "/tmp/mnt-serve"
        try rig.mount(at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }

        for (path, content) in rig.expected.sorted(by: { $0.key < $1.key }) {
            #expect(try await readWhole(mountPoint + path) == content, "\(path) differs")
        }
        let statistics = frontEnd.statistics
        #expect(statistics.opens == 2 && statistics.refusedOpens == 0)
        #expect(statistics.reads > 0 && statistics.failed == 0 && statistics.malformed == 0)

        let volume = CachefilesNaming.volumeKey(domain: GuestRig.domain)
        let expectedNames: Set<String> = [
            CachefilesNaming.relativePath(volumeKey: volume, cookieKey: Array(GuestRig.fsid.utf8)),
            CachefilesNaming.relativePath(domain: GuestRig.domain, blobID: NydusFixture.blobID),
        ]
        // cachefiles creates new objects as unnamed tmpfiles and links them into the tree when the cookie is
        // relinquished: the names appear once the mount is gone.
        try Mounter.unmount(mountPoint)
        var found = try rig.kernelDataFiles()
        for _ in 0..<100 where found.count < expectedNames.count {
            try await Task.sleep(for: .milliseconds(50))
            found = try rig.kernelDataFiles()
        }
        if let share = Self.share {
            try? found.sorted().joined(separator: "\n").write(toFile: share + "/cachefiles-names.txt", atomically: false, encoding: .utf8)
        }
        #expect(found == expectedNames, "kernel made \(found.sorted()), CachefilesNaming says \(expectedNames.sorted())")
    }

    @Test("a failing fill gives the reader EIO, not a hang; other files still read", .timeLimit(.minutes(3)))
    func failingFill() async throws {
        let rig = try GuestRig(root: Self.guestRoot + "/fail")
        let device = try CachefilesDevice()
        defer { device.close() }
        try device.bind(cacheDirectory: rig.root + "/fscache", tag: "fail")
        let frontEnd = rig.frontEnd(device: device, filler: rig.filler(failing: 0..<4096))
        frontEnd.start()
        defer {
            frontEnd.stop()
            frontEnd.closeObjects()
        }
        let mountPoint = "/tmp/mnt-fail"
        try rig.mount(at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }

        var failing: [String] = []
        var working: [String] = []
        for path in rig.expected.keys.sorted() {
            let mapping = try #require(try rig.image.chunkMappings(of: rig.image.lookup(path)).first)
            if mapping.deviceOffset == 0 { failing.append(path) } else { working.append(path) }
        }
        try #require(!failing.isEmpty && !working.isEmpty)
        let target = mountPoint + failing[0]
        let started = monotonicNanoseconds()
        let (result, code) = try await onOwnThread { () -> (Int, Int32) in
            let fd = open(target, O_RDONLY)
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = read(fd, &buffer, buffer.count)
            return (n, errno)
        }
        #expect(result == -1 && code == EIO, "read gave \(result), errno \(code)")
        #expect(monotonicNanoseconds() - started < 30_000_000_000)
        #expect(frontEnd.statistics.failed >= 1)
        for path in working { #expect(try await readWhole(mountPoint + path) == rig.expected[path]) }
    }

    static var selfExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    @Test("a killed daemon's waiting reader is served by a successor that adopts the device and restores", .timeLimit(.minutes(4)))
    func takeover() async throws {
        let root = Self.guestRoot + "/takeover"
        try FileSystem.makeDirectories(root)
        let socket = root + "/holder.sock"
        let ready = root + "/victim.ready"
        let stuck = root + "/victim.stuck"
        // The first daemon is another process (this binary, running `victimDaemon`), killed with SIGKILL.
        var environment = ProcessInfo.processInfo.environment
        environment["VM_ROLE"] = "victim"
        environment["VM_TAKEOVER_ROOT"] = root
        let victim = try spawn(
            Self.selfExecutable, ["--testing-library", "swift-testing", "--filter", "CachefilesKernelTests/victimDaemon"],
            environment: environment)
        defer {
            kill(victim, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(victim, &status, WNOHANG)
            DescriptorHolder.release(socketPath: socket)
        }
        try await waitFor(ready, seconds: 120)
        progress("victim ready")

        let rig = try GuestRig(root: root)
        let mountPoint = "/tmp/mnt-takeover"
        try rig.mount(at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }
        let (path, content) = try #require(rig.expected.sorted(by: { $0.key < $1.key }).first)
        let outcome = Mutex<Result<[UInt8], any Error>?>(nil)
        let readerThread = Thread {
            let result = Result { Array(try Data(contentsOf: URL(fileURLWithPath: mountPoint + path))) }
            outcome.withLock { $0 = result }
        }
        readerThread.start()
        progress("mounted; reader started on \(path)")
        try await waitFor(stuck, seconds: 60)
        progress("victim is stuck on the READ; killing it")
        kill(victim, SIGKILL)
        try await reap(victim, seconds: 30)
        progress("victim reaped")
        try await Task.sleep(for: .seconds(1))
        #expect(outcome.withLock { $0 } == nil, "the reader must still wait after the daemon died")

        let fd = try #require(try DescriptorHolder.adopt(socketPath: socket, accept: CachefilesDevice.isCachefilesDevice))
        let device = CachefilesDevice(adopting: fd)
        defer { device.close() }
        let successor = rig.frontEnd(device: device, filler: rig.filler())
        successor.start()
        defer {
            successor.stop()
            successor.closeObjects()
        }
        try successor.resumeInFlight()
        progress("successor serving after restore")
        let deadline = monotonicNanoseconds() + 60_000_000_000
        while outcome.withLock({ $0 }) == nil && monotonicNanoseconds() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let result = try #require(outcome.withLock { $0 }, "the waiting reader was not released")
        #expect(try result.get() == content)
        progress("reader released: \(successor.statistics)")
        #expect(successor.statistics.opens >= 1, "the kernel reopens the objects whose fds died with the victim")
        for (other, bytes) in rig.expected { #expect(try await readWhole(mountPoint + other) == bytes) }
    }

    /// The victim of `takeover`: binds the device, hands it to a holder, serves OPENs, and gets stuck on the
    /// first blob READ until killed. Only runs when `takeover` starts it (VM_ROLE=victim).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["VM_ROLE"] == "victim", "the takeover test's first daemon"))
    func victimDaemon() async throws {
        let root = try #require(ProcessInfo.processInfo.environment["VM_TAKEOVER_ROOT"])
        let rig = try GuestRig(root: root)
        let device = try CachefilesDevice()
        try device.bind(cacheDirectory: rig.root + "/fscache", tag: "takeover")
        let holder = URL(fileURLWithPath: Self.selfExecutable).deletingLastPathComponent().appendingPathComponent("snapshotterd-fdholder")
            .path
        try DescriptorHolder.spawn(binary: holder, socketPath: root + "/holder.sock", fd: device.fd)
        let frontEnd = rig.frontEnd(device: device, filler: rig.filler(stuckMarker: root + "/victim.stuck"))
        frontEnd.start()
        FileManager.default.createFile(atPath: root + "/victim.ready", contents: Data())
        try await Task.sleep(for: .seconds(3600))
    }

    private func spawn(_ path: String, _ arguments: [String], environment: [String: String]) throws -> pid_t {
        var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, path, nil, nil, &argv, &envp)
        guard code == 0 else { throw SyscallError(call: "posix_spawn", errno: code, subject: path) }
        return pid
    }

    private func reap(_ pid: pid_t, seconds: Int) async throws {
        let deadline = monotonicNanoseconds() + UInt64(seconds) * 1_000_000_000
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) != pid {
            guard monotonicNanoseconds() < deadline else { throw SyscallError(call: "waitpid", errno: ETIMEDOUT, subject: "\(pid)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    private func progress(_ message: String) {
        FileHandle.standardError.write(Data("takeover: \(message)\n".utf8))
    }

    private func waitFor(_ path: String, seconds: Int) async throws {
        let deadline = monotonicNanoseconds() + UInt64(seconds) * 1_000_000_000
        while !FileSystem.exists(path) {
            guard monotonicNanoseconds() < deadline else { throw SyscallError(call: "wait", errno: ETIMEDOUT, subject: path) }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
