import Foundation
import LinuxKernel
import SnapshotterAPI
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A raw client socket: connects and sends what a test wants, nothing more.
final class RawUnixConnection {
    let fd: Int32

    init(path: String) throws {
        fd = try UnixSocket.dial(path)
    }

    deinit { close(fd) }

    /// Sends bytes; false once the peer has closed the connection.
    func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Whether the peer closed the connection within `seconds` (reads and drops what it sent before).
    func closedByPeer(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 200) > 0 else { continue }
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { return true }
        }
        return false
    }
}

@Suite("Connection limits of the daemon's sockets", .ownThread)
struct ConnectionLimitTests {
    static func openDescriptors(of pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    static func startDaemon(_ name: String, config: String) throws -> DaemonHarness {
        let daemon = try DaemonHarness(name)
        let path = daemon.directory + "/config.toml"
        try FileSystem.writeFileAtomically(path, Array(config.utf8))
        daemon.extraArguments += ["--config", path]
        try daemon.start()
        return daemon
    }

    @Test("a half-sent request and an idle connection are cut off by their timeouts")
    func apiSocketTimesOutSlowPeers() throws {
        let daemon = try Self.startDaemon(
            "conntimeout",
            config: """
                [api]
                idle_timeout_seconds = 3
                request_timeout_seconds = 2
                """)
        defer { daemon.tearDown() }
        // A slowloris: a request head sent a header line at a time, never finished.
        let slowloris = try RawUnixConnection(path: daemon.socket)
        let idle = try RawUnixConnection(path: daemon.socket)
        #expect(slowloris.send("GET /v1/status HTTP/1.1\r\nHost: localhost\r\n"))
        var cutOff = false
        let deadline = Date().addingTimeInterval(30)
        while !cutOff, Date() < deadline {
            cutOff = !slowloris.send("X-Drip: 1\r\n") || slowloris.closedByPeer(within: 0.3)
        }
        #expect(cutOff, "the half-sent request was never cut off")
        #expect(idle.closedByPeer(within: 30), "the idle connection was never closed")
        _ = try daemon.client().status()
        let log = daemon.log()
        #expect(log.contains("request not complete"), "no request timeout was logged")
        #expect(log.contains("api.close_reason=idle"), "no idle timeout was logged")
    }

    @Test("surplus API connections evict idle ones: the fd count stays bounded and a normal client is served")
    func apiSocketCapsConnections() throws {
        let daemon = try Self.startDaemon(
            "connlimit",
            config: """
                [api]
                max_connections = 16
                """)
        defer { daemon.tearDown() }
        let pid = try #require(daemon.process).processIdentifier
        let baseline = Self.openDescriptors(of: pid)
        var idle: [RawUnixConnection] = []
        for _ in 0..<120 { idle.append(try RawUnixConnection(path: daemon.socket)) }
        let half = try RawUnixConnection(path: daemon.socket)
        #expect(half.send("GET /v1/status HTTP/1.1\r\n"))

        let client = daemon.client()
        var failures: [String] = []
        for round in 0..<30 {
            do {
                _ = try client.status()
            } catch {
                failures.append("status \(round): \(error)")
            }
        }
        #expect(failures.isEmpty, "the normal client got errors: \(failures.prefix(3))")
        // Accepted in order: by now the daemon has seen all 121 connections.
        let open = Self.openDescriptors(of: pid)
        #expect(open <= baseline + 16 + 4, "the daemon holds \(open) fds, \(baseline) before 121 connections were opened")
        #expect(idle[0].closedByPeer(within: 30), "the oldest idle connection was never evicted")
    }

    @Test("the containerd socket caps its connections and closes those that never speak HTTP/2")
    func containerdSocketCapsConnections() throws {
        let daemon = try Self.startDaemon(
            "connlimit-ctrd",
            config: """
                [containerd]
                max_connections = 4
                idle_timeout_seconds = 2
                """)
        defer { daemon.tearDown() }
        let pid = try #require(daemon.process).processIdentifier
        let baseline = Self.openDescriptors(of: pid)
        var silent: [RawUnixConnection] = []
        for _ in 0..<40 { silent.append(try RawUnixConnection(path: daemon.containerdSocket)) }
        #expect(silent[0].closedByPeer(within: 30), "a connection that never sent the HTTP/2 preface stayed open")
        // Those past the cap go at once; the rest by the handshake deadline. One deadline for all of them.
        let deadline = Date().addingTimeInterval(30)
        var stillOpen = 0
        for connection in silent where !connection.closedByPeer(within: max(0.2, deadline.timeIntervalSinceNow)) { stillOpen += 1 }
        #expect(stillOpen == 0)
        let open = Self.openDescriptors(of: pid)
        #expect(open <= baseline + 4, "the daemon holds \(open) fds, \(baseline) before 40 connections were opened")
        _ = try daemon.client().status()
    }
}
