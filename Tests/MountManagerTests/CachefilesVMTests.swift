import Foundation
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Boots the 6.12 test kernel (scripts/vm-test, qemu TCG) and runs `CachefilesKernelTests` inside it with
/// this very test binary, shared over 9p: the only way to exercise /dev/cachefiles here, since the host
/// kernel has no cachefiles.
@Suite("cachefiles on the 6.12 kernel in the test VM (host side)", .ownThread)
struct CachefilesVMTests {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    /// The test kernel as `scripts/vm-test` finds it (`VM_KERNEL`, or the newest in `../shared/vm` beside the
    /// checkout); empty when there is none.
    static let kernel: String = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: packageRoot + "/scripts/vm-test")
        process.arguments = ["--print-kernel"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return "" }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        guard process.waitForExit().status == 0 else { return "" }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    static var runnable: Bool {
        ProcessInfo.processInfo.environment["VM_GUEST"] == nil && geteuid() == 0
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")
            && FileManager.default.fileExists(atPath: kernel)
    }

    @Test("the guest scenario passes: content, kernel file names, EIO, takeover with restore", .timeLimit(.minutes(10)))
    func guestScenario() async throws {
        try #require(Self.runnable, "needs root, qemu-system-x86 (scripts/setup.sh) and \(Self.kernel)")
        let binary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.packageRoot + "/scripts/vm-test")
        // One after the other: /dev/cachefiles has one owner at a time.
        let run = { (filter: String) in "'\(binary)' --testing-library swift-testing --filter '\(filter)'" }
        process.arguments = [
            "--timeout", "540", "--kernel", Self.kernel, "--", "/bin/sh", "-c",
            run("CachefilesKernelTests") + "; a=$?; " + run("cachefilesInGuest") + "; b=$?; " + run("poisonerInGuest")
                + "; c=$?; " + run("removedBusyPoisonerInGuest") + "; d=$?; exit $((a | b | c | d))",
        ]
        process.currentDirectoryURL = URL(fileURLWithPath: Self.packageRoot)
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        // Minutes of waiting on the VM, on a thread of its own: a cooperative-pool thread held that long starves
        // the suites running alongside (the fanotify front end's fills run on that pool).
        nonisolated(unsafe) let running = process
        let (status, text) = try await onOwnThread {
            let data = output.fileHandleForReading.readDataToEndOfFile()
            return (running.waitForExit().status, String(decoding: data, as: UTF8.self))
        }
        #expect(status == 0, "vm-test exited with \(status):\n\(text.suffix(4000))")
        // Each guest test must have run, not been skipped (a skip means the guest lacked cachefiles).
        for name in ["servesImage", "failingFill", "takeover", "cachefilesInGuest", "poisonerInGuest", "removedBusyPoisonerInGuest"] {
            let title: String
            switch name {
            case "removedBusyPoisonerInGuest": title = "a poisoner removed while its mount is in use never feeds a victim"
            case "poisonerInGuest": title = "cachefiles in the test VM: a poisoner pulled first never feeds the victim"
            case "servesImage": title = "EROFS over cachefiles reads every file correctly"
            case "failingFill": title = "a failing fill gives the reader EIO"
            case "cachefilesInGuest": title = "cachefiles in the test VM: pull, mount, lazy reads"
            default: title = "a killed daemon's waiting reader is served by a successor"
            }
            let passed = text.split(separator: "\n").contains { $0.contains("✔") && $0.contains(title) && $0.contains("passed") }
            #expect(passed, "guest test \(name) did not pass:\n\(text.suffix(4000))")
        }
    }
}
