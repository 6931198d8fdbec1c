import Foundation
import LinuxKernel
import SnapshotterAPI
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// kill -9 between any two steps of an operation that changes both the kernel and the catalog: after a
/// restart the two agree. The daemon kills itself at a named step (`SNAPSHOTTERD_CRASH_AT`, a fault injector
/// in `CrashPoint`), exactly as kill -9 would there.
@Suite("Crash consistency: the kernel and the catalog agree after kill -9 at any step", .serialized, .ownThread)
struct CrashConsistencyTests {
    /// Mount points under `directory`, per /proc/self/mountinfo.
    static func mountPoints(under directory: String) -> Set<String> {
        let text = String(decoding: (try? FileSystem.readFile("/proc/self/mountinfo")) ?? [], as: UTF8.self)
        return Set(
            text.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: " ")
                guard fields.count > 4, fields[4].hasPrefix(directory + "/") else { return nil }
                return String(fields[4])
            })
    }

    /// Regular files and symlinks under `directory`, recursively.
    static func files(under directory: String) -> [String] {
        let walker = FileManager.default.enumerator(atPath: directory)
        var found: [String] = []
        while let relative = walker?.nextObject() as? String {
            if !FileSystem.isDirectory(directory + "/" + relative) { found.append(directory + "/" + relative) }
        }
        return found
    }

    /// Starts the daemon armed to die at `point`, runs `operation` (which the crash cuts short), waits for the
    /// daemon to die, and starts it again unarmed.
    static func crash(_ daemon: DaemonHarness, at point: String, during operation: () throws -> Void) throws {
        daemon.stop()
        daemon.environment["SNAPSHOTTERD_CRASH_AT"] = point
        try daemon.start()
        #expect(throws: (any Error).self, "the operation finished although the daemon was to die at \(point)") { try operation() }
        let process = try #require(daemon.process)
        #expect(process.waitForExit() == ProcessExit(status: SIGKILL, signaled: true), "the daemon did not die at \(point)")
        daemon.environment["SNAPSHOTTERD_CRASH_AT"] = nil
        try daemon.start()
    }

    @Test(
        "snapshot mount and unmount: kill -9 at each step leaves records and mounts agreeing, and the snapshot usable",
        arguments: ["mount.recorded", "mount.mounted", "unmount.unmounted"])
    func snapshotMounts(point: String) throws {
        let daemon = try DaemonHarness("crashmount")
        defer { daemon.tearDown() }
        try daemon.start()
        let client = daemon.client()
        _ = try client.prepare(key: "k", parent: nil, labels: [:])
        let target = daemon.directory + "/target"
        if point.hasPrefix("unmount") { _ = try client.mount(key: "k", target: target) }

        try Self.crash(daemon, at: point) {
            if point.hasPrefix("unmount") {
                try daemon.client().unmount(target: target)
            } else {
                _ = try daemon.client().mount(key: "k", target: target)
            }
        }

        let recorded = Set(try daemon.client().status().mounts.map(\.target))
        // The daemon's own mounts (front end, images) are under its root; snapshot targets are beside it.
        let mounted = Self.mountPoints(under: daemon.directory).filter { !$0.hasPrefix(daemon.root + "/") }
        #expect(recorded == mounted, "after a crash at \(point) the catalog records \(recorded), the kernel has \(mounted)")
        // Whatever the state, the snapshot is usable: unmount if mounted, mount, unmount, remove.
        if recorded.contains(target) { try daemon.client().unmount(target: target) }
        _ = try daemon.client().mount(key: "k", target: target)
        try daemon.client().unmount(target: target)
        try daemon.client().remove(key: "k")
        #expect(!Self.mountPoints(under: daemon.directory).contains(target))
    }

    @Test(
        "pull and rmi: kill -9 at each step leaves each recorded image mounted and no other, and no file of a removed one",
        arguments: [
            "pull.fetched", "pull.recorded", "rmi.unmounted", "rmi.committed", "rmi.link-unlinked", "rmi.backing-unlinked",
            "rmi.meta-unlinked", "rmi.bootstrap-removed",
        ])
    func imageRemoval(point: String) throws {
        let daemon = try DaemonHarness("crashrmi", arguments: ["--front-end", "eager"])
        let registry = try HostileRegistry()
        defer {
            daemon.tearDown()
            registry.stop()
        }
        let image = try NydusTestImage(
            directory: daemon.directory + "/image", files: ["bin/tool": RegistryTestSupport.randomBytes(1 << 20, seed: 4)])
        try CraftedImages.publish(image, to: registry, repository: "app", tag: "v1")
        let reference = "\(registry.host)/app:v1"
        try daemon.start()
        let images = daemon.root + "/mnt"
        let removing = point.hasPrefix("rmi")
        if removing {
            _ = try daemon.client().pull(reference: reference)
            #expect(Self.mountPoints(under: images).count == 1)
        }

        try Self.crash(daemon, at: point) {
            if removing {
                try daemon.client().removeImage(reference: reference)
            } else {
                _ = try daemon.client().pull(reference: reference)
            }
        }

        let recorded = try daemon.client().images().map(\.reference)
        let mounted = Self.mountPoints(under: images)
        #expect(recorded.count == mounted.count, "after a crash at \(point): images \(recorded), image mounts \(mounted)")
        let committedRemoval = removing && point != "rmi.unmounted"
        #expect(recorded == (committedRemoval || point == "pull.fetched" ? [] : [reference]))
        if recorded.isEmpty {
            // Nothing of the image is left: not its bootstrap or metas, nor its sparse backing files and device
            // links under cache/.
            let leftovers = ["tmp", "blobs", "images", "cache"].flatMap { directory in
                Self.files(under: daemon.root + "/" + directory)
            }
            #expect(leftovers.isEmpty, "left after a crash at \(point): \(leftovers)")
        }
        if !recorded.isEmpty { try daemon.client().removeImage(reference: reference) }
        #expect(Self.mountPoints(under: images).isEmpty)
        _ = try daemon.client().pull(reference: reference)
        #expect(Self.mountPoints(under: images).count == 1)
    }

    /// On main the start-up pass left such a mount in place for ever (rmi committed before it unmounted, so a
    /// crash in between left it; nothing matched mounts under mnt/ against the catalog).
    @Test("an image mount under mnt/ that the catalog does not record is unmounted at start-up")
    func unrecordedImageMountIsRemoved() throws {
        let daemon = try DaemonHarness("stalemnt")
        defer { daemon.tearDown() }
        try daemon.start()
        daemon.stop()
        let stale = daemon.root + "/mnt/4242"
        try FileSystem.makeDirectories(stale)
        let mounted = try runCommand("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "stale", stale])
        try #require(mounted.status == 0, "cannot mount a tmpfs: \(mounted.output)")
        try daemon.start()
        #expect(Self.mountPoints(under: daemon.root + "/mnt").isEmpty, "still mounted: \(Self.mountPoints(under: daemon.root + "/mnt"))")
    }

    /// On db90a6b nothing removed backing files or device links under cache/ that no blob row named: every
    /// pull cut short before it recorded, and every removal cut short after it committed, leaked them.
    @Test("start-up removes blob backing files and device links no blob names, and only those")
    func strayBackingFilesAreRemoved() throws {
        let daemon = try DaemonHarness("straycache", arguments: ["--front-end", "eager"])
        defer { daemon.tearDown() }
        try daemon.start()
        daemon.stop()
        let volume = daemon.root + "/cache/Ierofs,ondemand-snapshotter/@5a"
        try FileSystem.makeDirectories(volume)
        let blobID = String(repeating: "ab", count: 32)
        let stray = volume + "/D" + blobID
        let foreign = volume + "/Dimage-7"  // a name this store never gives a blob: not ours to remove
        for path in [stray, foreign] { FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3])) }
        try FileSystem.makeDirectories(daemon.root + "/cache/by-id")
        let link = daemon.root + "/cache/by-id/" + blobID
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "../Ierofs,ondemand-snapshotter/@5a/D" + blobID)
        try daemon.start()
        #expect(!FileManager.default.fileExists(atPath: stray), "the stray backing file survived start-up")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == nil, "the stray device link survived start-up")
        #expect(FileManager.default.fileExists(atPath: foreign))
        #expect(daemon.log().contains("removed what interrupted pulls and removals left"))
    }

    /// On db90a6b `snapctl cleanup` removed unknown snapshot directories only, and `gc` did not exist: the image
    /// store's garbage stayed until a restart (and backing files for ever).
    @Test("snapctl gc removes the image store's garbage while the daemon serves, and keeps every recorded file")
    func garbageCollectionWhileServing() throws {
        let daemon = try DaemonHarness("gcrun", arguments: ["--front-end", "eager"])
        let registry = try HostileRegistry()
        defer {
            daemon.tearDown()
            registry.stop()
        }
        let content = RegistryTestSupport.randomBytes(1 << 20, seed: 6)
        let image = try NydusTestImage(directory: daemon.directory + "/image", files: ["bin/tool": content])
        try CraftedImages.publish(image, to: registry, repository: "app", tag: "v1")
        try daemon.start()
        let pulled = try daemon.client().pull(reference: "\(registry.host)/app:v1").image
        let strayID = String(repeating: "cd", count: 32)
        let strays = [
            daemon.root + "/cache/Ierofs,ondemand-snapshotter/@11/D" + strayID, daemon.root + "/blobs/" + strayID + ".meta",
            daemon.root + "/images/" + strayID + "/image.boot", daemon.root + "/tmp/pull-interrupted/layer",
        ]
        for path in strays {
            try FileSystem.makeDirectories(FileSystem.parentPath(path))
            FileManager.default.createFile(atPath: path, contents: Data([9]))
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: DaemonHarness.snapctlPath)
        process.arguments = ["--socket", daemon.socket, "gc"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.waitForExit().status == 0, "snapctl gc: \(printed)")
        for path in strays {
            #expect(!FileManager.default.fileExists(atPath: path), "\(path) survived gc")
        }
        #expect(printed.contains(strayID))
        // The pulled image lost nothing: its files are there and its content reads back through its mount.
        for blob in pulled.blobs { #expect(FileManager.default.fileExists(atPath: blob.backingFile), "\(blob.backingFile) was removed") }
        let read = try Data(contentsOf: URL(fileURLWithPath: pulled.mountpoint + "/bin/tool"))
        #expect(read == Data(content))
    }

    @Test("kill -9 in the middle of a gc sweep: the next start finishes it, and every recorded file is kept")
    func garbageCollectionCrash() throws {
        let daemon = try DaemonHarness("gccrash", arguments: ["--front-end", "eager"])
        let registry = try HostileRegistry()
        defer {
            daemon.tearDown()
            registry.stop()
        }
        let content = RegistryTestSupport.randomBytes(1 << 20, seed: 8)
        let image = try NydusTestImage(directory: daemon.directory + "/image", files: ["bin/tool": content])
        try CraftedImages.publish(image, to: registry, repository: "app", tag: "v1")
        try daemon.start()
        let pulled = try daemon.client().pull(reference: "\(registry.host)/app:v1").image
        let strayID = String(repeating: "ef", count: 32)
        let strays = [
            daemon.root + "/cache/Ierofs,ondemand-snapshotter/@22/D" + strayID, daemon.root + "/blobs/" + strayID + ".meta",
            daemon.root + "/images/" + strayID + "/image.boot", daemon.root + "/tmp/pull-cut/layer",
        ]
        // The strays appear while the daemon runs (a start-up would sweep them before the armed gc could).
        try Self.crash(daemon, at: "gc.removed") {
            for path in strays {
                try FileSystem.makeDirectories(FileSystem.parentPath(path))
                FileManager.default.createFile(atPath: path, contents: Data([9]))
            }
            _ = try daemon.client().cleanup()
        }
        for path in strays { #expect(!FileManager.default.fileExists(atPath: path), "\(path) survived the crash and the restart") }
        for blob in pulled.blobs { #expect(FileManager.default.fileExists(atPath: blob.backingFile), "\(blob.backingFile) was removed") }
        #expect(try Data(contentsOf: URL(fileURLWithPath: pulled.mountpoint + "/bin/tool")) == Data(content))
    }

    /// On db90a6b nothing collected garbage between start-ups.
    @Test("the timer collects garbage while the daemon runs (cache.gc_interval_seconds)")
    func garbageCollectionOnATimer() async throws {
        let daemon = try DaemonHarness("gctimer", arguments: ["--front-end", "eager", "--gc-interval", "1"])
        defer { daemon.tearDown() }
        try daemon.start()
        let stray = daemon.root + "/cache/Ierofs,ondemand-snapshotter/@3c/D" + String(repeating: "3c", count: 32)
        try FileSystem.makeDirectories(FileSystem.parentPath(stray))
        FileManager.default.createFile(atPath: stray, contents: Data([7]))
        // The round logs after it has removed what it found: wait for the line, then look.
        let deadline = ContinuousClock.now + .seconds(60)
        while !daemon.log().contains("garbage collected"), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(daemon.log().contains("garbage collected"), "a minute passed and no timer round collected anything")
        #expect(!FileManager.default.fileExists(atPath: stray), "the timer's round left the stray file")
    }

    /// On main the second caller got "image ... is being pulled already" (and containerd's path polled).
    @Test("concurrent pulls of one reference do the work once and all succeed")
    func identicalPullsShareOneFlight() throws {
        let daemon = try DaemonHarness("singleflight", arguments: ["--front-end", "eager"])
        let registry = try HostileRegistry()
        defer {
            daemon.tearDown()
            registry.stop()
        }
        let image = try NydusTestImage(
            directory: daemon.directory + "/image", files: ["bin/tool": RegistryTestSupport.randomBytes(4 << 20, seed: 5)])
        try CraftedImages.publish(image, to: registry, repository: "app", tag: "v1")
        try daemon.start()
        let reference = "\(registry.host)/app:v1"
        let pullers = (0..<4).map { _ in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: DaemonHarness.snapctlPath)
            process.arguments = ["--socket", daemon.socket, "pull", reference]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            return process
        }
        for process in pullers { try process.run() }
        let statuses = pullers.map { $0.waitForExit().status }
        #expect(statuses.allSatisfy { $0 == 0 }, "snapctl pull exit statuses: \(statuses)")
        let pulls = daemon.log().components(separatedBy: "\n").filter { $0.contains("msg=\"image pulled\"") }.count
        #expect(pulls == 1, "the image was pulled \(pulls) times")
        #expect(try daemon.client().images().count == 1)
    }

    @Test("concurrent pulls of different references to images sharing their blobs all succeed, with one set of files")
    func sharedBlobPullsRace() throws {
        let daemon = try DaemonHarness("sharedpulls", arguments: ["--front-end", "eager"])
        let registry = try HostileRegistry()
        defer {
            daemon.tearDown()
            registry.stop()
        }
        let image = try NydusTestImage(
            directory: daemon.directory + "/image", files: ["bin/tool": RegistryTestSupport.randomBytes(2 << 20, seed: 6)])
        let names = (0..<6).map { "app\($0)" }
        for name in names { try CraftedImages.publish(image, to: registry, repository: name, tag: "v1") }
        try daemon.start()
        for round in 0..<3 {
            let pullers = names.map { name in
                let process = Process()
                process.executableURL = URL(fileURLWithPath: DaemonHarness.snapctlPath)
                process.arguments = ["--socket", daemon.socket, "pull", "\(registry.host)/\(name):v1"]
                let output = Pipe()
                process.standardOutput = output
                process.standardError = output
                return (process, output)
            }
            for (process, _) in pullers { try process.run() }
            var failures: [String] = []
            for (process, output) in pullers {
                let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                if process.waitForExit().status != 0 { failures.append(text) }
            }
            #expect(failures.isEmpty, "round \(round): \(failures.count) pulls failed: \(failures.first ?? "")")
            #expect(try daemon.client().images().count == names.count)
            #expect(Self.mountPoints(under: daemon.root + "/mnt").count == names.count)
            for name in names { try daemon.client().removeImage(reference: "\(registry.host)/\(name):v1") }
        }
    }
}
