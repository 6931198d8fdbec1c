import Foundation
import LinuxKernel
import SnapshotterAPI
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
final class NotifyListener {
    let path: String
    let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if result != 0 { throw SyscallError(call: "bind", errno: errno, subject: path) }
    }

    deinit { close(fd) }

    /// Messages received until one contains `needle` or the timeout passes.
    func waitFor(_ needle: String, timeout: Double = 15) -> [String] {
        var messages: [String] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { continue }
            let message = String(decoding: buffer[0..<n], as: UTF8.self)
            messages.append(message)
            if message.contains(needle) { return messages }
        }
        return messages
    }
}

@Suite("systemd integration", .ownThread)
struct SystemdTests {
    @Test("READY, STATUS, WATCHDOG and STOPPING reach NOTIFY_SOCKET; SIGTERM stops cleanly")
    func notify() throws {
        let daemon = try DaemonHarness("notify")
        let listener = try NotifyListener(path: daemon.directory + "/notify.sock")
        daemon.environment = ["NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "300000"]
        try daemon.start(waitReady: false)
        let ready = listener.waitFor("READY=1")
        #expect(ready.contains { $0.contains("READY=1") && $0.contains("STATUS=serving on \(daemon.socket)") })
        #expect(listener.waitFor("WATCHDOG=1", timeout: 5).contains { $0.contains("WATCHDOG=1") })
        _ = try daemon.client().status()
        #expect(daemon.stop() == 0)
        #expect(listener.waitFor("STOPPING=1", timeout: 5).contains { $0.contains("STOPPING=1") })
        #expect(!FileManager.default.fileExists(atPath: daemon.socket), "a clean stop removes the socket it created")
    }

    @Test("socket activation: the daemon serves the socket systemd passes in LISTEN_FDS")
    func socketActivation() throws {
        let daemon = try DaemonHarness("activate")
        let activated = daemon.directory + "/activated.sock"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-socket-activate")
        process.arguments = ["-l", activated, DaemonHarness.binaryPath] + daemon.arguments
        let log = Pipe()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        defer {
            kill(process.processIdentifier, SIGTERM)
            _ = process.waitForExit()
        }
        let client = SnapshotterClient(socketPath: activated)
        var status: StatusResponse?
        for _ in 0..<500 where status == nil {
            status = try? client.status()
            if status == nil { usleep(20_000) }
        }
        let answer = try #require(status, "no answer on the activated socket")
        #expect(answer.socket.contains("socket-activated"))
        #expect(!FileManager.default.fileExists(atPath: daemon.socket), "with LISTEN_FDS the configured path is not bound")
        _ = try client.prepare(key: "via-activation")
    }

    @Test("systemd-analyze verify accepts the units; the service never gets a private mount namespace")
    func unitsVerify() throws {
        let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy").path
        let scratch = try DaemonHarness("units")
        let binDir = URL(fileURLWithPath: DaemonHarness.binaryPath).deletingLastPathComponent().path
        var units: [String] = []
        for name in ["snapshotterd.service", "snapshotterd.socket"] {
            let text = try String(contentsOfFile: deploy + "/" + name, encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/", with: binDir + "/")
            try text.write(toFile: scratch.directory + "/" + name, atomically: false, encoding: .utf8)
            units.append(scratch.directory + "/" + name)
        }
        let (status, output) = try runCommand("/usr/bin/systemd-analyze", ["verify"] + units)
        #expect(status == 0, "systemd-analyze verify: \(output)")
        let service = try String(contentsOfFile: deploy + "/snapshotterd.service", encoding: .utf8)
        #expect(service.contains("Type=notify"))
        for forbidden in [
            "PrivateMounts", "PrivateTmp", "PrivateDevices", "ProtectSystem", "ProtectHome", "ReadOnlyPaths",
            "InaccessiblePaths", "ReadWritePaths", "ProtectKernelTunables", "ProtectKernelModules",
            "ProtectControlGroups", "PrivateNetwork", "NetworkNamespacePath", "MountFlags",
        ] {
            #expect(!service.contains(forbidden + "="), "\(forbidden) would hide the daemon's mounts from containerd")
        }
    }

    @Test("a config file sets the daemon up; unknown keys and bad values stop it with a clear error")
    func configFile() throws {
        let daemon = try DaemonHarness("config")
        let config = daemon.directory + "/config.toml"
        try """
        # test config
        root = "\(daemon.root)"
        [api]
        socket = "\(daemon.socket)"
        allowed_uids = [0, 4242]
        max_body_bytes = 65536
        [log]
        level = "debug"
        [containerd]
        socket = "\(daemon.containerdSocket)"
        """.write(toFile: config, atomically: false, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: DaemonHarness.binaryPath)
        process.arguments = ["--config", config]
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            kill(process.processIdentifier, SIGTERM)
            _ = process.waitForExit()
        }
        var status: StatusResponse?
        for _ in 0..<500 where status == nil {
            status = try? daemon.client().status()
            if status == nil { usleep(20_000) }
        }
        #expect(status?.root == daemon.root)

        try "[api]\nsocket = \"/tmp/x.sock\"\nsokcet_mode = 1\n".write(toFile: config, atomically: false, encoding: .utf8)
        let typo = try runCommand(DaemonHarness.binaryPath, ["--config", config, "--root", daemon.directory + "/other"])
        #expect(typo.status != 0 && typo.output.contains("unknown key api.sokcet_mode"))
        try "root = 5\n".write(toFile: config, atomically: false, encoding: .utf8)
        let wrongType = try runCommand(DaemonHarness.binaryPath, ["--config", config])
        #expect(wrongType.status != 0 && wrongType.output.contains("root must be a string, not a integer"))
        try "[zran]\ntrust = \"anyone\"\n".write(toFile: config, atomically: false, encoding: .utf8)
        let badTrust = try runCommand(DaemonHarness.binaryPath, ["--config", config])
        #expect(badTrust.status != 0 && badTrust.output.contains("zran.trust"), "\(badTrust.output)")
        try "[zran]\ntrusted_indexes = [\"sha256:nothex\"]\n[cri]\nimage_proxy_socket = \"relative.sock\"\n".write(
            toFile: config, atomically: false, encoding: .utf8)
        let badDigest = try runCommand(DaemonHarness.binaryPath, ["--config", config])
        #expect(badDigest.status != 0 && badDigest.output.contains("zran.trusted_indexes"), "\(badDigest.output)")
        // A grace too short to cover the kernel's read of an answered range, from the file or the command line.
        // (A root that cannot be made stops a daemon that accepted the grace, rather than leaving it running.)
        try "[cache]\neviction_grace_ms = 10\n".write(toFile: config, atomically: false, encoding: .utf8)
        let shortGrace = try runCommand(DaemonHarness.binaryPath, ["--config", config, "--root", "/dev/null/root"])
        #expect(shortGrace.status != 0 && shortGrace.output.contains("cache.eviction_grace_ms"), "\(shortGrace.output)")
        let shortFlag = try runCommand(DaemonHarness.binaryPath, ["--root", "/dev/null/root", "--eviction-grace-ms", "1"])
        #expect(shortFlag.status != 0 && shortFlag.output.contains("at least 500"), "\(shortFlag.output)")
        let missing = try runCommand(DaemonHarness.binaryPath, ["--config", daemon.directory + "/absent.toml"])
        #expect(missing.status != 0 && missing.output.contains("cannot read config"))
    }
}
