import Foundation
import LinuxKernel
import TestSupport
import TestThreads

#if canImport(Glibc)
import Glibc
#endif

/// A private containerd (Debian's 1.6, with runc) on a temp root, state and socket, whose
/// `[proxy_plugins]` entry points at one snapshotterd's containerd socket. `tearDown` always ends
/// containerd and its shims, unmounts what is left under the temp dir and removes it.
final class ContainerdHarness {
    static let binary = "/usr/bin/containerd"
    static let ctrBinary = "/usr/bin/ctr"
    static let snapshotter = "ondemand"

    /// containerd, ctr and runc present, and root (mounts, runc): what these tests need.
    static var available: Bool {
        geteuid() == 0
            && ["/usr/bin/containerd", "/usr/bin/ctr", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/runc"].allSatisfy {
                FileManager.default.isExecutableFile(atPath: $0)
            }
    }

    let directory: String
    let proxySocket: String
    /// The CRI plugin with `snapshotter = "ondemand"` and snapshot annotations on (for remote snapshots).
    let cri: Bool
    /// Loopback registries (host:port) CRI should reach over plain HTTP.
    let plainHTTPRegistries: [String]
    var address: String { directory + "/containerd.sock" }
    private(set) var process: Process?
    private var logPath: String { directory + "/containerd.log" }

    init(_ name: String, proxySocket: String, cri: Bool = false, plainHTTPRegistries: [String] = []) throws {
        var bytes = Array("/tmp/ctrtest-\(name)-XXXXXX".utf8CString)
        guard mkdtemp(&bytes) != nil else { throw SyscallError(call: "mkdtemp", errno: errno, subject: name) }
        directory = String(cString: bytes)
        self.proxySocket = proxySocket
        self.cri = cri
        self.plainHTTPRegistries = plainHTTPRegistries
    }

    deinit { tearDown() }

    var config: String {
        var text = """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            \(cri ? "" : #"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#)

            [grpc]
              address = "\(address)"
            [ttrpc]
              address = "\(address).ttrpc"
            [debug]
              address = ""
            [metrics]
              address = ""

            [proxy_plugins]
              [proxy_plugins.\(Self.snapshotter)]
                type = "snapshot"
                address = "\(proxySocket)"

            """
        if cri {
            text += """
                [plugins."io.containerd.grpc.v1.cri"]
                  [plugins."io.containerd.grpc.v1.cri".containerd]
                    snapshotter = "\(Self.snapshotter)"
                    disable_snapshot_annotations = false
                  [plugins."io.containerd.grpc.v1.cri".registry]
                    config_path = "\(directory)/certs.d"

                """
        }
        return text
    }

    func start() throws {
        try FileManager.default.createDirectory(atPath: directory + "/root", withIntermediateDirectories: true)
        try config.write(toFile: directory + "/config.toml", atomically: true, encoding: .utf8)
        for host in plainHTTPRegistries {
            let hostDirectory = directory + "/certs.d/" + host
            try FileManager.default.createDirectory(atPath: hostDirectory, withIntermediateDirectories: true)
            try """
            server = "http://\(host)"
            [host."http://\(host)"]
              capabilities = ["pull", "resolve"]
              skip_verify = true
            """.write(toFile: hostDirectory + "/hosts.toml", atomically: true, encoding: .utf8)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["--config", directory + "/config.toml", "--log-level", "debug"]
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        process.environment = environment
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let logHandle = FileHandle(forWritingAtPath: logPath)
        logHandle?.seekToEndOfFile()
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            guard process.isRunning else { throw HarnessFailure("containerd exited:\n\(log())") }
            if (try? ctr(["version"]))?.status == 0 { return }
            usleep(100_000)
        }
        throw HarnessFailure("containerd did not answer:\n\(log())")
    }

    /// Runs `ctr --address … --namespace … <arguments>`.
    @discardableResult
    func ctr(_ arguments: [String], namespace: String = "default") throws -> (status: Int32, output: String) {
        try runCommand(Self.ctrBinary, ["--address", address, "--namespace", namespace] + arguments)
    }

    /// `ctr` that must succeed; returns its output.
    @discardableResult
    func ctrOK(_ arguments: [String], namespace: String = "default") throws -> String {
        let result = try ctr(arguments, namespace: namespace)
        guard result.status == 0 else {
            throw HarnessFailure("ctr \(arguments.joined(separator: " ")) exited \(result.status):\n\(result.output)")
        }
        return result.output
    }

    /// SIGTERM and wait (running containers stay with their shims).
    ///
    /// Waits by watching /proc rather than with `Process.waitUntilExit`, which was seen never to return
    /// for a containerd that had started a shim, the process already a zombie.
    func stop() {
        guard let process, process.isRunning else { return }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        Self.waitForExit(pid)
    }

    /// Until `pid` is gone or a zombie (at most 20 s).
    static func waitForExit(_ pid: Int32) {
        for _ in 0..<200 {
            guard let state = processState(pid), state != "Z" else { return }
            usleep(100_000)
        }
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func tearDown() {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            Self.waitForExit(process.processIdentifier)
        }
        // Shims (and through them runc's containers) were started with our address.
        TestCleanup.killProcesses(withArgument: address)
        // runc keeps container state under /run/containerd/runc/<namespace>, outside our directory.
        for namespace in ["default", "k8s.io"] {
            let runcRoot = "/run/containerd/runc/" + namespace
            for id in (try? FileManager.default.contentsOfDirectory(atPath: runcRoot)) ?? [] {
                let state = (try? runCommand("/usr/sbin/runc", ["--root", runcRoot, "state", id]))?.output ?? ""
                if state.contains("\"bundle\": \"\(directory)/") {
                    _ = try? runCommand("/usr/sbin/runc", ["--root", runcRoot, "delete", "--force", id])
                }
            }
        }
        TestCleanup.unmountAll(under: directory)
        try? FileSystem.removeTree(directory)
    }

    struct HarnessFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
