import ArgumentParser
import SnapshotterAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The `snapctl` command and its subcommands. `Sources/snapctl/main.swift` runs it.
public struct Snapctl: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "snapctl",
        abstract: "Drive snapshotterd: snapshots, mounts and status over its Unix socket.",
        version: "0.1.0",
        subcommands: [
            Prepare.self, View.self, Mounts.self, Mount.self, Unmount.self, Commit.self, Remove.self, List.self,
            Stat.self, Update.self, Usage.self, Cleanup.self, Status.self, Pull.self, Images.self, RemoveImage.self, Metrics.self,
            Convert.self, Inspect.self, Index.self, Prefetch.self, Pin.self, Unpin.self,
        ]
    )

    @OptionGroup var global: GlobalOptions

    public init() {}
}

/// Flags every subcommand takes; they may stand before or after the subcommand's name.
struct GlobalOptions: ParsableArguments {
    static let defaultSocket = "/run/ondemand-snapshotter/snapshotter.sock"

    @Option(help: "The daemon's API socket (or set SNAPCTL_SOCKET).")
    var socket: String = getenv("SNAPCTL_SOCKET").map { String(cString: $0) } ?? GlobalOptions.defaultSocket

    @Flag(help: "Print JSON for scripts instead of human output.")
    var json = false

    func client() -> SnapshotterClient { SnapshotterClient(socketPath: socket) }
}

/// Runs a call, turning client and API errors into one clear line on stderr and a non-zero exit.
func perform(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as APIError {
        printError("\(error.kind.rawValue): \(error.message)")
        throw ExitCode(exitCode(for: error.kind))
    } catch let error as ClientError {
        printError(error.description)
        throw ExitCode(69)  // EX_UNAVAILABLE
    }
}

/// Distinct exit codes per error class so scripts can branch without parsing text.
func exitCode(for kind: ErrorKind) -> Int32 {
    switch kind {
    case .notFound: return 3
    case .alreadyExists: return 4
    case .failedPrecondition: return 5
    case .invalidArgument: return 6
    case .permissionDenied: return 7
    case .resourceExhausted: return 8
    default: return 1
    }
}

func printError(_ message: String) {
    let line = "snapctl: \(message)\n"
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}

/// Parses repeated `--label k=v`.
func parseLabels(_ pairs: [String]) throws -> [String: String] {
    var labels: [String: String] = [:]
    for pair in pairs {
        guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
            throw ValidationError("--label takes key=value, got \(pair)")
        }
        labels[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
    return labels
}

/// Absolute form of a path given on the command line.
func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    guard getcwd(&buffer, buffer.count) != nil else { return path }
    let cwd = String(cString: buffer)
    var rest = Substring(path)
    while rest.hasPrefix("./") { rest = rest.dropFirst(2) }
    return rest.isEmpty || rest == "." ? cwd : (cwd.hasSuffix("/") ? cwd : cwd + "/") + rest
}
