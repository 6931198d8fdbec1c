import Foundation
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The test helpers' wait for a child (`Process.waitForExit` in TestThreads), against what made
/// `waitUntilExit` hang on CI: a process other than the child holding the child's exit-notification socket.
@Suite("Waiting for a child process in the test helpers", .ownThread)
struct ProcessExitTests {
    /// A shell that leaves a background child keeps Foundation's socket open through that child. With
    /// `waitUntilExit`, the wait lasted until the background `sleep` ended, and the check that it still runs
    /// failed.
    @Test("a child whose own child keeps its descriptors is seen to exit, with its status, while that child runs")
    func grandchildKeepsTheSocket() throws {
        let pidFile = FileManager.default.temporaryDirectory.path + "/process-exit-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(pidFile) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "sleep 60 & echo $! > '\(pidFile)'; exit 7"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Foundation starts the child in a process group of its own: the background sleep is in it too.
        let group = process.processIdentifier
        defer { kill(-group, SIGKILL) }
        let exit = process.waitForExit()
        #expect(exit == ProcessExit(status: 7, signaled: false))
        let sleeper = try #require(
            Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(processState(sleeper).map { $0 != "Z" } == true, "the wait lasted until the background child ended")
    }

    @Test("a child killed by a signal: the signal, marked as such")
    func killedChild() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sleep")
        process.arguments = ["60"]
        try process.run()
        kill(process.processIdentifier, SIGKILL)
        #expect(process.waitForExit() == ProcessExit(status: SIGKILL, signaled: true))
    }
}
