import Foundation
import LinuxKernel
import Logging
import OCI
import OCIRegistry
import Synchronization
import TestThreads

#if canImport(Glibc)
import Glibc
#endif

/// Helpers shared by the registry tests: temp dirs, free ports, processes, a `docker-registry` per test,
/// test images, and the Python fault proxy and token server. All traffic stays on 127.0.0.1.
public enum RegistryTestSupport {
    public static let registryBinary = "/usr/bin/docker-registry"
    public static let skopeoBinary = "/usr/bin/skopeo"

    public static var haveTools: Bool {
        [registryBinary, skopeoBinary, "/usr/bin/openssl", "/usr/bin/htpasswd"].allSatisfy {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    public static let logger: Logger = {
        var l = Logger(label: "registry-test")
        l.logLevel = ProcessInfo.processInfo.environment["REGISTRY_TEST_DEBUG"] == nil ? .warning : .debug
        return l
    }()

    public static func tempDirectory(_ prefix: String = "reg-test") throws -> String {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw SyscallError(call: "mkdtemp", errno: errno) }
        return String(cString: dir)
    }

    /// Ports `freePort` has handed out in this process: tests run side by side, and a port freed by its close
    /// can come back to another test before the first one's server binds it (CI saw a registry answer for
    /// another test's port).
    private static let portsHandedOut = Mutex<Set<Int>>([])

    /// A port that was free a moment ago (bind to :0, read it back, close) and not handed out before here.
    public static func freePort() throws -> Int {
        for _ in 0..<100 {
            let port = try unusedPort()
            if portsHandedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
        throw SyscallError(call: "bind", errno: EADDRINUSE)
    }

    private static func unusedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &addr) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                guard bind(fd, sa, len) == 0, getsockname(fd, sa, &len) == 0 else { throw SyscallError(call: "bind", errno: errno) }
            }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    public static func canConnect(port: Int, host: String = "127.0.0.1") -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(host)
        addr.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    public static func waitForPort(_ port: Int, host: String = "127.0.0.1", timeoutSeconds: Double = 15) throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if canConnect(port: port, host: host) { return }
            usleep(50_000)
        }
        throw TestFailure("nothing listens on \(host):\(port) after \(timeoutSeconds) s")
    }

    /// Waits (up to `timeoutSeconds`) for `path` to exist: a socket a daemon creates once it listens.
    public static func waitForPath(_ path: String, timeoutSeconds: Double = 30) throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: path) { return }
            usleep(50_000)
        }
        throw TestFailure("\(path) did not appear within \(timeoutSeconds) s")
    }

    public struct TestFailure: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// Runs a tool to completion; throws with its stderr when it fails.
    @discardableResult
    public static func run(
        _ path: String, _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil
    ) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["NO_PROXY"] = "127.0.0.1,localhost"
        env["no_proxy"] = "127.0.0.1,localhost"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        let exit = process.waitForExit()
        guard exit.status == 0 else {
            throw TestFailure(
                "\(path) \(arguments.joined(separator: " ")) exited \(exit.status): \(String(decoding: errData, as: UTF8.self))"
            )
        }
        return String(decoding: outData, as: UTF8.self)
    }

    /// Starts a long-running helper; its output goes to `logPath`.
    public static func spawn(_ path: String, _ arguments: [String], logPath: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        return process
    }

    /// SIGTERM, then SIGKILL after 3 s: children spawned from a concurrency thread inherit its blocked signal
    /// mask, and python3 (unlike Go programs) does not unblock SIGTERM.
    public static func stop(_ process: Process) {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(3)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        _ = process.waitForExit()
    }

    public static func write(_ path: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    public static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in 0..<words.count {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                words[i] = state
            }
        }
        return out
    }

    /// A client for a test registry: plain HTTP to loopback by default, no environment proxy.
    public static func client(_ configure: (inout RegistryConfiguration) -> Void = { _ in }) -> RegistryClient {
        var configuration = RegistryConfiguration()
        configuration.proxy = ""  // an empty proxy disables http_proxy from the environment
        configuration.retry = RetryPolicy(maxAttempts: 6, initialDelayMilliseconds: 50)
        configure(&configuration)
        return RegistryClient(configuration: configuration, logger: logger)
    }
}

/// One `docker-registry serve` on 127.0.0.1:<free port> with storage in its own temp dir.
public final class TestRegistry {
    public enum Auth {
        case none
        case htpasswd(user: String, password: String)
        case token(realm: String, service: String, issuer: String, rootCertBundle: String)
    }

    public let directory: String
    public let port: Int
    public let auth: Auth
    public let tls: (certificate: String, key: String)?
    private var process: Process?

    public var host: String { "127.0.0.1:\(port)" }

    public init(auth: Auth = .none, tls: (certificate: String, key: String)? = nil, directory: String? = nil, port: Int? = nil) throws {
        self.directory = try directory ?? RegistryTestSupport.tempDirectory("registry")
        self.port = try port ?? RegistryTestSupport.freePort()
        self.auth = auth
        self.tls = tls
        try start()
    }

    /// Starts (or restarts) the registry process; a running one is stopped first, never leaked.
    public func start() throws {
        stopProcess()
        var config = """
            version: 0.1
            log:
              level: warn
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: \(directory)/storage
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:\(port)
              secret: test-secret-\(port)

            """
        if let tls {
            config += "  tls:\n    certificate: \(tls.certificate)\n    key: \(tls.key)\n"
        }
        switch auth {
        case .none: break
        case .htpasswd(let user, let password):
            let file = directory + "/htpasswd"
            let line = try RegistryTestSupport.run("/usr/bin/htpasswd", ["-Bbn", user, password])
            try RegistryTestSupport.write(file, line)
            config += "auth:\n  htpasswd:\n    realm: basic-realm\n    path: \(file)\n"
        case .token(let realm, let service, let issuer, let bundle):
            config +=
                "auth:\n  token:\n    realm: \(realm)\n    service: \(service)\n    issuer: \(issuer)\n    rootcertbundle: \(bundle)\n"
        }
        try RegistryTestSupport.write(directory + "/config.yml", config)
        process = try RegistryTestSupport.spawn(
            RegistryTestSupport.registryBinary, ["serve", directory + "/config.yml"],
            logPath: directory + "/registry.log")
        do { try RegistryTestSupport.waitForPort(port, timeoutSeconds: 60) } catch {
            stopProcess()
            let log = (try? String(contentsOfFile: directory + "/registry.log", encoding: .utf8)) ?? ""
            throw RegistryTestSupport.TestFailure("docker-registry did not start: \(log)")
        }
    }

    public func stopProcess() {
        if let process { RegistryTestSupport.stop(process) }
        process = nil
    }

    /// Stops the registry and removes its directory.
    public func stop() {
        stopProcess()
        try? FileSystem.removeTree(directory)
    }
}

/// A small image in an OCI layout on disk: one config, `layerSizes.count` random layers, one manifest.
public struct TestImage {
    public let layoutDirectory: String
    public let tag: String
    public var layers: [(descriptor: Descriptor, bytes: [UInt8])] = []
    public var config: (descriptor: Descriptor, bytes: [UInt8])
    public var manifestBytes: [UInt8]
    public var manifestDescriptor: Descriptor

    public init(directory: String, tag: String = "v1", layerSizes: [Int], seed: UInt64 = 1, architecture: String = "amd64") throws {
        layoutDirectory = directory
        self.tag = tag
        try FileSystem.makeDirectories(directory + "/blobs/sha256")
        for (i, size) in layerSizes.enumerated() {
            let bytes = RegistryTestSupport.randomBytes(size, seed: seed &* 7919 &+ UInt64(i))
            let d = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: bytes), size: Int64(size))
            layers.append((d, bytes))
        }
        let diffIDs = layers.map { "\"\($0.descriptor.digest)\"" }.joined(separator: ",")
        let configBytes = Array(
            """
            {"architecture":"\(architecture)","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[\(diffIDs)]}}
            """.utf8)
        config = (
            Descriptor(mediaType: MediaType.ociConfig, digest: Digest.sha256(of: configBytes), size: Int64(configBytes.count)), configBytes
        )
        let manifest = ImageManifest(config: config.descriptor, layers: layers.map(\.descriptor))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        manifestBytes = Array(try encoder.encode(manifest))
        manifestDescriptor = Descriptor(
            mediaType: MediaType.ociManifest, digest: Digest.sha256(of: manifestBytes), size: Int64(manifestBytes.count))
        for blob in [(config.descriptor, config.bytes), (manifestDescriptor, manifestBytes)] + layers.map({ ($0.descriptor, $0.bytes) }) {
            try Data(blob.1).write(to: URL(fileURLWithPath: "\(directory)/blobs/sha256/\(blob.0.digest.encoded)"))
        }
        try RegistryTestSupport.write(directory + "/oci-layout", #"{"imageLayoutVersion":"1.0.0"}"#)
        try RegistryTestSupport.write(
            directory + "/index.json",
            """
            {"schemaVersion":2,"manifests":[{"mediaType":"\(MediaType.ociManifest)","digest":"\(manifestDescriptor.digest)","size":\(manifestBytes.count),"annotations":{"org.opencontainers.image.ref.name":"\(tag)"}}]}
            """)
    }

    /// Pushes the layout with skopeo (the independent client). `format` is "oci" or "v2s2".
    public func pushWithSkopeo(
        to destination: String, format: String = "oci", credentials: String? = nil, certDirectory: String? = nil
    ) throws {
        // OCI keeps the manifest's digest; v2s2 rewrites the manifest (the layers' bytes stay as they are).
        var args = ["--insecure-policy", "copy", "--format", format] + (format == "oci" ? ["--preserve-digests"] : [])
        if let credentials { args += ["--dest-creds", credentials] }
        if let certDirectory { args += ["--dest-cert-dir", certDirectory] } else { args += ["--dest-tls-verify=false"] }
        args += ["oci:\(layoutDirectory):\(tag)", "docker://\(destination)"]
        try RegistryTestSupport.run(RegistryTestSupport.skopeoBinary, args)
    }

    /// Pushes with our client.
    public func push(
        with client: RegistryClient, registry: String, repository: String, tag: String? = nil,
        mode: RegistryClient.UploadMode = .automatic
    ) async throws {
        for blob in layers.map({ ($0.descriptor, $0.bytes) }) + [(config.descriptor, config.bytes)] {
            try await client.pushBlob(registry: registry, repository: repository, descriptor: blob.0, from: .bytes(blob.1), mode: mode)
        }
        try await client.pushManifest(
            registry: registry, repository: repository, reference: tag ?? self.tag,
            bytes: manifestBytes, mediaType: MediaType.ociManifest)
    }
}

/// A python3 helper process (fault proxy or token server) on a free loopback port, stopped by `stop()`.
public final class PythonHelper {
    public let port: Int
    public let directory: String
    public let logPath: String
    private let process: Process

    public init(script: String, name: String, arguments: (Int, String) -> [String]) throws {
        directory = try RegistryTestSupport.tempDirectory(name)
        port = try RegistryTestSupport.freePort()
        logPath = directory + "/requests.log"
        try RegistryTestSupport.write(directory + "/\(name).py", script)
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process = try RegistryTestSupport.spawn(
            "/usr/bin/env", ["python3", directory + "/\(name).py"] + arguments(port, logPath),
            logPath: directory + "/stderr.log")
        do { try RegistryTestSupport.waitForPort(port, timeoutSeconds: 90) } catch {
            RegistryTestSupport.stop(process)
            throw RegistryTestSupport.TestFailure(
                "\(name) did not start: \((try? String(contentsOfFile: directory + "/stderr.log", encoding: .utf8)) ?? "")")
        }
    }

    /// Lines logged so far, one per request.
    public var requests: [String] {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    public func stop() {
        // A throwaway script: no graceful shutdown to wait for.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        _ = process.waitForExit()
        try? FileSystem.removeTree(directory)
    }

    public static func faultProxy(upstreamPort: Int, mode: String) throws -> PythonHelper {
        try PythonHelper(script: RegistryTestScripts.faultProxy, name: "fault-proxy") { port, log in
            ["\(port)", "\(upstreamPort)", mode, log]
        }
    }

    /// Blob GETs a fault proxy has been asked for so far (answered or not).
    public var blobGetsStarted: Int { requests.filter { $0.hasPrefix("GET ") && $0.contains("/blobs/") }.count }

    /// Waits (polling every 50 ms, up to `seconds`) until a fault proxy has been asked for more than `count`
    /// blob GETs; false if it never was.
    public func waitForBlobGets(moreThan count: Int, seconds: Double = 60) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if blobGetsStarted > count { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return blobGetsStarted > count
    }
}
