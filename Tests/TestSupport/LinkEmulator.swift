import Foundation
import LinuxKernel
import TestThreads

/// A wide-area link between the daemon and a registry, with real TCP through the kernel: a network
/// namespace and a veth pair whose two ends are rate-limited by `tbf` (the host kernel has no `netem`), and
/// the round-trip time added by a delay line of our own (`RegistryTestScripts.delayRelay`) inside the
/// namespace. Everything stays on this host: the daemon talks to `127.0.0.1:port` (so registries are spoken to
/// over plain HTTP, as loopback ones are), and the bytes go
///
///     127.0.0.1:port (relay) ─veth, shaped─> namespace: delay line (RTT/2 each way) ─veth, shaped─>
///     host relay on the veth address ─> 127.0.0.1:<registry>
///
/// Stopped by `stop()` (relays killed, the namespace and the veth pair deleted), also when the test fails.
/// Needs root (namespaces, tc).
public final class LinkEmulator {
    public struct Profile: Sendable, Equatable, CustomStringConvertible {
        public var name: String
        public var rttMilliseconds: Double
        public var megabitsPerSecond: Double

        public init(name: String, rttMilliseconds: Double, megabitsPerSecond: Double) {
            self.name = name
            self.rttMilliseconds = rttMilliseconds
            self.megabitsPerSecond = megabitsPerSecond
        }

        public static let near = Profile(name: "near", rttMilliseconds: 1, megabitsPerSecond: 1000)
        public static let region = Profile(name: "region", rttMilliseconds: 20, megabitsPerSecond: 200)
        public static let far = Profile(name: "far", rttMilliseconds: 80, megabitsPerSecond: 50)
        /// The tests' short profile: a real round trip and a real rate, over in seconds.
        public static let short = Profile(name: "short", rttMilliseconds: 10, megabitsPerSecond: 100)
        public static let all = [near, region, far, short]

        public static func named(_ name: String) -> Profile? { all.first { $0.name == name } }

        public var bytesPerSecond: Double { megabitsPerSecond * 1e6 / 8 }
        public var description: String { "\(name) (\(rttMilliseconds) ms RTT, \(megabitsPerSecond) Mbit/s)" }
    }

    public let profile: Profile
    /// Where the daemon connects: `127.0.0.1:port`.
    public let port: Int
    public let namespace: String
    private let hostInterface: String
    private let directory: String
    private var processes: [Process] = []
    private var stopped = false

    /// The host kernel can do it: `ip` and `tc` present, and root.
    public static var available: Bool {
        geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
            && FileManager.default.isExecutableFile(atPath: "/usr/sbin/tc")
    }

    /// A link of `profile` in front of the registry on `127.0.0.1:upstreamPort`.
    public init(profile: Profile, upstreamPort: Int) throws {
        self.profile = profile
        directory = try RegistryTestSupport.tempDirectory("link-\(profile.name)")
        // Names the kernel accepts (15 bytes) and that two tests running at once never share.
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        namespace = "odsl-\(getpid())-\(tag)"
        hostInterface = "odl\(tag)"
        let nsInterface = "odn\(tag)"
        // A /30 of its own in 10.64.0.0/10, picked at random (a clash fails `ip addr add`, and is retried).
        let subnet = UInt32.random(in: 0..<(1 << 20)) << 2 | (10 << 24) | (64 << 16)
        func address(_ host: UInt32) -> String {
            let value = subnet | host
            return "\(value >> 24).\((value >> 16) & 255).\((value >> 8) & 255).\(value & 255)"
        }
        let hostAddress = address(1)
        let nsAddress = address(2)
        port = try RegistryTestSupport.freePort()
        do {
            try Self.ip(["netns", "add", namespace])
            try Self.ip(["link", "add", hostInterface, "type", "veth", "peer", "name", nsInterface])
            try Self.ip(["link", "set", nsInterface, "netns", namespace])
            try Self.ip(["addr", "add", hostAddress + "/30", "dev", hostInterface])
            try Self.ip(["link", "set", hostInterface, "up"])
            try Self.ip(["netns", "exec", namespace, "ip", "addr", "add", nsAddress + "/30", "dev", nsInterface])
            try Self.ip(["netns", "exec", namespace, "ip", "link", "set", nsInterface, "up"])
            try Self.ip(["netns", "exec", namespace, "ip", "link", "set", "lo", "up"])
            // The rate, both ways: tbf with a bucket of about 10 ms of data (at least 64 KiB).
            let rate = "\(Int(profile.megabitsPerSecond * 1000))kbit"
            let burst = "\(max(64 << 10, Int(profile.bytesPerSecond / 100)))"
            try Self.run(
                "/usr/sbin/tc", ["qdisc", "add", "dev", hostInterface, "root", "tbf", "rate", rate, "burst", burst, "latency", "200ms"])
            try Self.ip([
                "netns", "exec", namespace, "tc", "qdisc", "add", "dev", nsInterface, "root", "tbf", "rate", rate, "burst", burst,
                "latency",
                "200ms",
            ])
            let script = directory + "/delay-relay.py"
            try RegistryTestSupport.write(script, RegistryTestScripts.delayRelay)
            let inner = try RegistryTestSupport.freePort()
            let back = try RegistryTestSupport.freePort()
            let oneWay = String(profile.rttMilliseconds / 2)
            // Host side, back to the registry: listens on the veth address only.
            processes.append(
                try RegistryTestSupport.spawn(
                    "/usr/bin/env", ["python3", script, hostAddress, "\(back)", "127.0.0.1", "\(upstreamPort)", "0"],
                    logPath: directory + "/back.log"))
            // In the namespace: the delay line.
            processes.append(
                try RegistryTestSupport.spawn(
                    "/usr/sbin/ip", ["netns", "exec", namespace, "python3", script, nsAddress, "\(inner)", hostAddress, "\(back)", oneWay],
                    logPath: directory + "/delay.log"))
            // Host side, where the daemon connects.
            processes.append(
                try RegistryTestSupport.spawn(
                    "/usr/bin/env", ["python3", script, "127.0.0.1", "\(port)", nsAddress, "\(inner)", "0"],
                    logPath: directory + "/front.log"))
            // Every hop listens before the link is handed out (a connection that met a hop still starting, under
            // a loaded CI machine, got no reply at all).
            try RegistryTestSupport.waitForPort(back, host: hostAddress, timeoutSeconds: 60)
            try RegistryTestSupport.waitForPort(inner, host: nsAddress, timeoutSeconds: 60)
            try RegistryTestSupport.waitForPort(port, timeoutSeconds: 60)
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    /// Kills the relays and deletes the namespace and the veth pair (deleting one end deletes both).
    public func stop() {
        guard !stopped else { return }
        stopped = true
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            _ = process.waitForExit()
        }
        _ = try? Self.ip(["link", "del", hostInterface])
        _ = try? Self.ip(["netns", "del", namespace])
        try? FileSystem.removeTree(directory)
    }

    /// Removes links a killed test process left behind: namespaces named `odsl-<pid>-…` whose pid is gone.
    public static func removeStale() {
        guard let listing = try? RegistryTestSupport.run("/usr/sbin/ip", ["netns", "list"]) else { return }
        for line in listing.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            guard parts.count == 3, parts[0] == "odsl", let pid = Int32(parts[1]), kill(pid, 0) != 0, errno == ESRCH else { continue }
            _ = try? ip(["netns", "del", name])
        }
    }

    @discardableResult
    static func ip(_ arguments: [String]) throws -> String { try run("/usr/sbin/ip", arguments) }

    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> String {
        try RegistryTestSupport.run(tool, arguments)
    }
}
