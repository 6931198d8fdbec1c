import Catalog
import Foundation
import LinuxKernel
import Logging
import SnapshotterAPI
import Synchronization
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Crashes and restarts of the real daemon", .ownThread)
struct CrashRecoveryTests {
    /// What the worker saw acknowledged before the crash.
    final class Progress: Sendable {
        let acknowledged = Mutex<[String]>([])
        let failed = Mutex(false)
    }

    @Test("kill -9 during a loop of prepares and commits leaves a sound catalog that matches the disk", arguments: [250, 700, 1300])
    func killDuringChanges(afterMilliseconds delay: Int) throws {
        let daemon = try DaemonHarness("crash")
        try daemon.start()
        let progress = Progress()
        let socket = daemon.socket
        let worker = Thread {
            let client = SnapshotterClient(socketPath: socket)
            var parent: String?
            for i in 0..<100_000 {
                do {
                    _ = try client.prepare(key: "a\(i)", parent: parent, labels: ["n": "\(i)"])
                    try client.commit(name: "c\(i)", key: "a\(i)")
                    if i % 3 == 0 { _ = try client.view(key: "v\(i)", parent: "c\(i)") }
                    if i % 5 == 4 { try client.remove(key: "v\(i - 4)") }
                    progress.acknowledged.withLock { $0.append("c\(i)") }
                    parent = i % 7 == 6 ? nil : "c\(i)"
                } catch {
                    progress.failed.withLock { $0 = true }
                    return
                }
            }
        }
        worker.start()
        // The delay counts from the first acknowledged commit: under a full parallel test run on two cores the
        // first round trip alone can take longer than the shortest delay.
        let deadline = Date().addingTimeInterval(30)
        while progress.acknowledged.withLock({ $0.isEmpty }), !progress.failed.withLock({ $0 }), Date() < deadline { usleep(5_000) }
        usleep(useconds_t(delay * 1000))
        daemon.crash()
        while !progress.failed.withLock({ $0 }) { usleep(10_000) }

        let snapshotsDir = daemon.root + "/snapshots"
        do {
            let database = try Catalog.open(root: daemon.root, logger: Logger(label: "test"))
            #expect(try database.integrityCheck() == ["ok"])
            let rows = try database.read { conn in try conn.query("SELECT id, kind FROM snapshots") }
            #expect(!rows.isEmpty)
            for row in rows {
                let id = try row.int(0)
                #expect(FileSystem.isDirectory("\(snapshotsDir)/\(id)/fs"), "catalog snapshot \(id) has no directory")
                if try row.string(1) == "active" { #expect(FileSystem.isDirectory("\(snapshotsDir)/\(id)/work")) }
            }
        }

        try daemon.start()
        let client = daemon.client()
        // Every commit the API acknowledged survived.
        let acknowledged = progress.acknowledged.withLock { $0 }
        #expect(!acknowledged.isEmpty, "the worker made no progress before the crash")
        for name in acknowledged { #expect((try? client.stat(key: name)) != nil, "\(name) was lost") }
        _ = try client.cleanup()
        let database = try Catalog.open(root: daemon.root, logger: Logger(label: "test"))
        let ids = Set(try database.read { conn in try conn.query("SELECT id FROM snapshots").map { String(try $0.int(0)) } })
        #expect(Set(try FileSystem.listDirectory(snapshotsDir)) == ids)
        #expect(try client.status().leftovers.isEmpty)
        #expect(daemon.stop() == 0)
    }

    @Test("mounts survive a restart; a mount removed while the daemon was down is reconciled")
    func mountReconciliation() throws {
        try #require(isRoot, "mount(2) needs root")
        let daemon = try DaemonHarness("reconcile")
        try daemon.start()
        var client = daemon.client()
        let kept = daemon.directory + "/kept"
        let lost = daemon.directory + "/lost"
        _ = try client.prepare(key: "k")
        _ = try client.prepare(key: "l")
        _ = try client.mount(key: "k", target: kept)
        _ = try client.mount(key: "l", target: lost)
        try "data".write(toFile: kept + "/file", atomically: false, encoding: .utf8)

        daemon.crash()
        #expect(umount2(lost, 0) == 0)
        try daemon.start()
        client = daemon.client()
        let status = try client.status()
        #expect(status.mounts == [ActiveMount(target: kept, snapshot: "k")])
        #expect(status.leftovers.contains { $0.path == lost && $0.reason.contains("recorded mount was gone") })
        #expect(try String(contentsOfFile: kept + "/file", encoding: .utf8) == "data")
        try client.remove(key: "l")
        #expect(throws: APIError.self) { try client.remove(key: "k") }

        #expect(daemon.stop() == 0)
        #expect(mountInfoLines(at: kept).count == 1, "a clean stop must leave mounts in place")
        try daemon.start()
        client = daemon.client()
        try client.unmount(target: kept)
        try client.remove(key: "k")
    }

    @Test("a catalog snapshot whose directory vanished is recreated and reported, never dropped")
    func lostDirectory() throws {
        let daemon = try DaemonHarness("lostdir")
        try daemon.start()
        _ = try daemon.client().prepare(key: "p")
        #expect(daemon.stop() == 0)
        try FileSystem.removeTree(daemon.root + "/snapshots/1")
        try daemon.start()
        let status = try daemon.client().status()
        #expect(status.leftovers.contains { $0.reason.contains("snapshot p had lost its directory") })
        #expect(FileSystem.isDirectory(daemon.root + "/snapshots/1/fs"))
        #expect(try daemon.client().stat(key: "p").kind == .active)
    }
}
