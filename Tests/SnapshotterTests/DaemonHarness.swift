import Foundation
import LinuxKernel
import SnapshotterAPI
import TestSupport
import TestThreads

#if canImport(Glibc)
import Glibc
#endif

/// Starts the real `snapshotterd` binary on a private temp root and socket, and always cleans up: the
/// daemon is stopped, anything mounted under the temp dir is unmounted, the dir is removed.
final class DaemonHarness {
    let directory: String
    let root: String
    let socket: String
    /// containerd's snapshots gRPC socket of this daemon (never the system-wide default).
    var containerdSocket: String { directory + "/containerd.sock" }
    var extraArguments: [String]
    var environment: [String: String] = [:]
    private(set) var process: Process?
    private var logPath: String { directory + "/daemon.log" }

    static var binaryPath: String {
        if let path = ProcessInfo.processInfo.environment["SNAPSHOTTERD_BIN"] { return path }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("snapshotterd").path
    }

    static var snapctlPath: String {
        URL(fileURLWithPath: binaryPath).deletingLastPathComponent().appendingPathComponent("snapctl").path
    }

    init(_ name: String, arguments: [String] = []) throws {
        // In the test VM /tmp is a tmpfs; the cachefiles front end needs a disk filesystem (VM_CACHE_DIR).
        let base = ProcessInfo.processInfo.environment["VM_CACHE_DIR"] ?? "/tmp"
        let template = "\(base)/snaptest-\(name)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard mkdtemp(&bytes) != nil else { throw SyscallError(call: "mkdtemp", errno: errno, subject: template) }
        directory = String(cString: bytes)
        root = directory + "/root"
        socket = directory + "/api.sock"
        extraArguments = arguments
    }

    deinit { tearDown() }

    func client() -> SnapshotterClient { SnapshotterClient(socketPath: socket) }

    var arguments: [String] {
        [
            "--root", root, "--socket", socket, "--log-level", "debug", "--config", "/dev/null", "--containerd-socket", containerdSocket,
        ] + extraArguments
    }

    /// Starts the daemon and waits until its API answers.
    @discardableResult
    func start(waitReady: Bool = true) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binaryPath)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "NOTIFY_SOCKET")
        env.removeValue(forKey: "LISTEN_FDS")
        env.merge(environment) { $1 }
        process.environment = env
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        log?.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        self.process = process
        if waitReady { try waitUntilReady() }
        return process
    }

    func waitUntilReady(timeout: Double = 30) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let process, !process.isRunning {
                throw HarnessError.exited(status: process.terminationStatus, log: log())
            }
            if (try? client().status()) != nil { return }
            usleep(20_000)
        }
        throw HarnessError.notReady(log: log())
    }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        guard let process, process.isRunning else { return process?.terminationStatus ?? 0 }
        kill(process.processIdentifier, SIGTERM)
        return process.waitForExit().status
    }

    /// SIGKILL and wait: a crash.
    func crash() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        _ = process.waitForExit()
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func tearDown() {
        crash()
        // The fd holders a daemon on this root started outlive it by design.
        for holder in ["fdholder.sock", "seed-holder.sock", "cachefiles-holder.sock"] {
            TestCleanup.killProcesses(withArgument: root + "/" + holder)
        }
        TestCleanup.unmountAll(under: directory)
        try? FileSystem.removeTree(directory)
    }

    enum HarnessError: Error, CustomStringConvertible {
        case exited(status: Int32, log: String)
        case notReady(log: String)

        var description: String {
            switch self {
            case .exited(let status, let log): return "snapshotterd exited with \(status):\n\(log)"
            case .notReady(let log): return "snapshotterd did not become ready:\n\(log)"
            }
        }
    }
}

/// Runs a command to completion and returns its exit status and combined output.
@discardableResult
func runCommand(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if let environment { process.environment = environment }
    // Output goes to a file, not a pipe: a child the command leaves behind (a daemon's fd holder) would keep
    // a pipe open and turn a failure into a hang.
    let outputPath = FileManager.default.temporaryDirectory.path + "/run-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    FileManager.default.createFile(atPath: outputPath, contents: nil)
    defer { unlink(outputPath) }
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
    defer { try? output.close() }
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let exit = process.waitForExit()
    let data = (try? FileSystem.readFile(outputPath)) ?? []
    return (exit.status, String(decoding: data, as: UTF8.self))
}

/// Mountinfo lines whose mount point is `path`.
func mountInfoLines(at path: String) -> [String] {
    guard let data = (try? FileSystem.readFile("/proc/self/mountinfo")) else { return [] }
    let text = String(decoding: data, as: UTF8.self)
    return text.split(separator: "\n").map(String.init).filter {
        $0.split(separator: " ").count > 4 && String($0.split(separator: " ")[4]) == path
    }
}

var isRoot: Bool { geteuid() == 0 }
