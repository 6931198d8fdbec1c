import Foundation
import SnapshotterAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `convert` and `inspect` need no daemon: when none answers (or `--offline` is given) snapctl runs
/// `snapshotterd --offline-call NAME` (the binary beside snapctl, else on PATH), which does the work in its own
/// process and answers with the API's JSON. snapctl itself stays a client of the API types only.
enum OfflineRunner {
    /// Whether `error` means no daemon listens (so the call may run offline instead).
    static func noDaemon(_ error: any Error) -> Bool {
        guard case .cannotConnect(_, let code) = error as? ClientError else { return false }
        return code == ENOENT || code == ECONNREFUSED
    }

    /// Runs the call through the daemon unless `offline` or no daemon answers; then in a `snapshotterd` process.
    static func call<Request: Encodable, Response: Decodable>(
        _ name: String, _ request: Request, offline: Bool, through client: () throws -> Response
    ) throws -> Response {
        if !offline {
            do {
                return try client()
            } catch  where noDaemon(error) {
                printError("no daemon answers; running \(name) in this process (snapshotterd --offline-call \(name))")
            }
        }
        return try run(name, request)
    }

    static func run<Request: Encodable, Response: Decodable>(_ name: String, _ request: Request) throws -> Response {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try daemonBinary())
        process.arguments = ["--offline-call", name]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(try JSONEncoder().encode(request))
        try input.fileHandleForWriting.close()
        let answer = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        if process.terminationStatus == 0, let response = try? JSONDecoder().decode(Response.self, from: answer) { return response }
        if let envelope = try? JSONDecoder().decode(ErrorEnvelope.self, from: answer) { throw envelope.error }
        throw APIError(.internal, "snapshotterd --offline-call \(name) exited with \(process.terminationStatus) and no answer")
    }

    /// `snapshotterd` beside this executable, else the first on PATH.
    static func daemonBinary() throws -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let beside = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("snapshotterd").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(directory)/snapshotterd") {
            return "\(directory)/snapshotterd"
        }
        throw APIError(.unavailable, "no daemon answers and no snapshotterd binary was found beside snapctl or on PATH to run offline")
    }
}
