import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Small process helpers: run to completion with bounded output, push a layout with skopeo.
enum Tools {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Runs `path` and returns its combined output; a non-zero exit is an error carrying that output.
    @discardableResult
    static func run(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let output = String(decoding: data.prefix(1 << 20), as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(path) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(output)")
        }
        return output
    }

    /// A long-running process with its output in `logPath`.
    static func spawn(_ path: String, _ arguments: [String], logPath: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        environment.removeValue(forKey: "NOTIFY_SOCKET")
        environment.removeValue(forKey: "LISTEN_FDS")
        process.environment = environment
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        try process.run()
        return process
    }

    static func push(layout: String, to destination: String) throws {
        try run(
            "/usr/bin/skopeo",
            [
                "--insecure-policy", "copy", "--format", "oci", "--preserve-digests", "--dest-tls-verify=false", "oci:\(layout):v1",
                "docker://\(destination)",
            ])
    }

    /// Until `predicate` holds, at most `seconds`.
    static func wait(seconds: Double, _ what: String, _ predicate: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if predicate() { return }
            usleep(50_000)
        }
        throw Failure(description: "timed out waiting for \(what)")
    }

    /// Until `pid` is gone or a zombie: `Process.waitUntilExit` was seen never to return for containerd.
    static func waitForExit(_ pid: Int32) {
        for _ in 0..<300 {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return }
            if let close = stat.lastIndex(of: ")"), stat[stat.index(after: close)...].dropFirst().first == "Z" { return }
            usleep(100_000)
        }
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}
