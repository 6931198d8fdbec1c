import CRIClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import LinuxKernel
import SwiftProtobuf
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The docker-registry every run pulls from, under `directory`, with its access log on to count bytes.
/// Shared by all runs: it is not what is measured, and its storage stays equally warm for both sides.
final class BenchRegistry {
    let directory: String
    let port: Int
    var host: String { "127.0.0.1:\(port)" }
    /// Where pulls reach the registry: through an emulated link (`--profile`) when one is set, else directly.
    var pullHost: String?
    var clientHost: String { pullHost ?? host }
    private var process: Process?

    init(directory: String) throws {
        self.directory = directory
        port = try RegistryTestSupport.freePort()
    }

    func start() throws {
        // The access log (combined format) carries the bytes written per response: the byte count.
        let config = """
            version: 0.1
            log:
              level: error
            storage:
              filesystem:
                rootdirectory: \(directory)/registry
            http:
              addr: \(host)
              secret: coldstart

            """
        try Data(config.utf8).write(to: URL(fileURLWithPath: directory + "/registry.yml"))
        process = try Tools.spawn("/usr/bin/docker-registry", ["serve", directory + "/registry.yml"], logPath: directory + "/registry.log")
        try Tools.wait(seconds: 15, "docker-registry") { (try? Tools.run("/usr/bin/curl", ["-sf", "http://\(self.host)/v2/"])) != nil }
    }

    /// Bytes the registry has sent so far: the sum of the size field of its access-log lines
    /// (`"GET /v2/… HTTP/1.1" 200 <bytes> …`).
    func bytesSent() -> Int64 {
        let log = (try? String(contentsOfFile: directory + "/registry.log", encoding: .utf8)) ?? ""
        var total: Int64 = 0
        for line in log.split(separator: "\n") where line.contains("\"GET /v2/") {
            guard let requestEnd = line.range(of: "HTTP/1.1\" ") ?? line.range(of: "HTTP/2.0\" ") else { continue }
            let fields = line[requestEnd.upperBound...].split(separator: " ")
            if fields.count > 1, let bytes = Int64(fields[1]) { total += bytes }
        }
        return total
    }

    func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        Tools.waitForExit(process.processIdentifier)
    }
}

/// A snapshotterd and a containerd that have never seen an image, under `directory`, pulling from a shared
/// registry; all stopped and cleaned up by `tearDown` (processes, shims, runc state, mounts, files).
final class Environment {
    let directory: String
    let daemonBinary: String
    let registry: BenchRegistry
    var registryHost: String { registry.clientHost }
    var containerdAddress: String { directory + "/containerd.sock" }
    var proxySocket: String { directory + "/ondemand.sock" }
    private var processes: [Process] = []

    /// The daemon's config file (`/dev/null`: defaults).
    let daemonConfig: String

    init(directory: String, daemonBinary: String, registry: BenchRegistry, daemonConfig: String = "/dev/null") throws {
        self.directory = directory
        self.daemonConfig = daemonConfig
        self.daemonBinary = daemonBinary
        self.registry = registry
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func registryBytes() -> Int64 { registry.bytesSent() }

    func startDaemonAndContainerd() throws {
        processes.append(
            try Tools.spawn(
                daemonBinary,
                [
                    "--root", directory + "/ondemand", "--socket", directory + "/api.sock", "--containerd-socket", proxySocket,
                    "--config", daemonConfig, "--log-level", ProcessInfo.processInfo.environment["COLDSTART_LOG_LEVEL"] ?? "warning",
                ], logPath: directory + "/snapshotterd.log"))
        try Tools.wait(seconds: 30, "snapshotterd") { FileManager.default.fileExists(atPath: proxySocket) }

        let hosts = directory + "/certs.d/" + registryHost
        try FileManager.default.createDirectory(atPath: hosts, withIntermediateDirectories: true)
        try Data(
            """
            server = "http://\(registryHost)"
            [host."http://\(registryHost)"]
              capabilities = ["pull", "resolve"]
              skip_verify = true
            """.utf8
        ).write(to: URL(fileURLWithPath: hosts + "/hosts.toml"))
        let config = """
            version = 2
            root = "\(directory)/containerd/root"
            state = "\(directory)/containerd/state"
            [grpc]
              address = "\(containerdAddress)"
            [ttrpc]
              address = "\(containerdAddress).ttrpc"
            [proxy_plugins]
              [proxy_plugins.ondemand]
                type = "snapshot"
                address = "\(proxySocket)"
            [plugins."io.containerd.grpc.v1.cri".containerd]
              snapshotter = "ondemand"
              disable_snapshot_annotations = false
            [plugins."io.containerd.grpc.v1.cri".registry]
              config_path = "\(directory)/certs.d"

            """
        try Data(config.utf8).write(to: URL(fileURLWithPath: directory + "/containerd.toml"))
        processes.append(
            try Tools.spawn(
                "/usr/bin/containerd",
                [
                    "--config", directory + "/containerd.toml", "--log-level",
                    ProcessInfo.processInfo.environment["COLDSTART_LOG_LEVEL"] ?? "info",
                ],
                logPath: directory + "/containerd.log"))
        try Tools.wait(seconds: 30, "containerd") { (try? self.ctr(["version"])) != nil }
    }

    @discardableResult
    func ctr(_ arguments: [String], namespace: String = "default") throws -> String {
        try Tools.run("/usr/bin/ctr", ["--address", containerdAddress, "--namespace", namespace] + arguments)
    }

    /// containerd's CRI image pull: the path that hands the snapshotter each layer's image reference.
    func criPull(_ reference: String) async throws {
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: containerdAddress), transportSecurity: .plaintext)
        _ = try await withGRPCClient(transport: transport) { client in
            try await Runtime_V1_ImageService.Client(wrapping: client).pullImage(.with { $0.image.image = reference })
        }
    }

    func tearDown() {
        // containerd first (its shims carry our address), then the daemon.
        for process in processes.reversed() where process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            Tools.waitForExit(process.processIdentifier)
        }
        TestCleanup.killProcesses(withArgument: containerdAddress)
        TestCleanup.killProcesses(withArgument: directory + "/ondemand/fdholder.sock")
        for namespace in ["default", "k8s.io"] {
            let runcRoot = "/run/containerd/runc/" + namespace
            for id in (try? FileManager.default.contentsOfDirectory(atPath: runcRoot)) ?? [] {
                let state = (try? Tools.run("/usr/sbin/runc", ["--root", runcRoot, "state", id])) ?? ""
                if state.contains("\"bundle\": \"\(directory)/") {
                    _ = try? Tools.run("/usr/sbin/runc", ["--root", runcRoot, "delete", "--force", id])
                }
            }
        }
        TestCleanup.unmountAll(under: directory)
        // COLDSTART_LOG_DIR keeps the logs (daemon, containerd, registry) of each environment for a look.
        if let keep = ProcessInfo.processInfo.environment["COLDSTART_LOG_DIR"] {
            let target = keep + "/" + (directory as NSString).lastPathComponent
            try? FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            for log in ["snapshotterd.log", "containerd.log"] {
                try? FileManager.default.copyItem(atPath: directory + "/" + log, toPath: target + "/" + log)
            }
        }
        try? FileSystem.removeTree(directory)
    }
}
