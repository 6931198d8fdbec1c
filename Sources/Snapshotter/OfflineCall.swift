import Foundation
import LinuxKernel
import Logging
import OCIRegistry
import RAFSBuilder
import SnapshotterAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `convert` and `inspect` without a daemon, like `nydusify` and `mkfs.erofs`: snapctl (which knows only the
/// API types) runs `snapshotterd --offline-call convert|inspect` when no daemon answers, with the request's JSON
/// on stdin; the answer, or `{"error": ...}` as the API would send it, comes back on stdout. Logs go to stderr.
/// The work directory is a private temporary one, removed afterwards.
enum OfflineCall {
    /// Runs the call; returns the process's exit status (0, or 1 with an error envelope written).
    static func run(_ name: String, registry: RegistryConfiguration) async -> Int32 {
        let logger = Logger(label: "snapshotterd.offline") { StructuredLogHandler(label: $0, level: .warning) }
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/tmp"
        let work = FileSystem.join(base, "snapshotterd-offline-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileSystem.removeTree(work) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            try FileSystem.makeDirectories(work, mode: 0o700)
            let input = FileHandle.standardInput.readDataToEndOfFile()
            let service = ConversionService(root: work, client: RegistryClient(configuration: registry, logger: logger), logger: logger)
            let output: Data
            switch name {
            case "convert":
                let request = try JSONDecoder().decode(ConvertRequest.self, from: input)
                output = try encoder.encode(
                    try await service.convert(request, progress: isatty(STDERR_FILENO) == 1 ? Self.showProgress : nil))
            case "inspect": output = try encoder.encode(try service.inspect(try JSONDecoder().decode(InspectRequest.self, from: input)))
            default: throw APIError.invalidArgument("unknown offline call \(name): convert or inspect")
            }
            FileHandle.standardOutput.write(output)
            return 0
        } catch {
            let reported: APIError
            if let decoding = error as? DecodingError {
                reported = .invalidArgument("malformed request: \(decoding)")
            } else {
                reported = classifiedAPIError(error) ?? APIError(.internal, "\(error)")
            }
            FileHandle.standardOutput.write((try? encoder.encode(ErrorEnvelope(error: reported))) ?? Data())
            return 1
        }
    }

    /// One progress line on the terminal (stderr), rewritten in place; ended at `done`.
    @Sendable static func showProgress(_ progress: BuildProgress) {
        var line = "\r\u{1B}[K"
        switch progress.phase {
        case .layer:
            line += "layer \(progress.layer + 1)/\(progress.layerCount): \(progress.entries) entries, \(progress.bytes >> 20) MiB read"
        case .blob: line += "writing blobs: \(progress.entries) entries, \(progress.bytes >> 20) MiB"
        case .bootstrap: line += "writing the bootstrap"
        case .done: break
        }
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Ends the process (the daemon's services never start).
    static func exitProcess(_ status: Int32) -> Never { exit(status) }
}
