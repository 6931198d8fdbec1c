import ArgumentParser
import Dispatch
import SnapshotterAPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pull an image through the daemon (nydus-style images: metadata only; data is fetched on demand).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Image reference, e.g. 127.0.0.1:5000/app:latest.") var reference: String
    @Flag(help: "Never show the progress line (it shows on a terminal by default).") var quiet = false

    func run() throws {
        let showProgress = !quiet && !global.json && isatty(STDERR_FILENO) == 1
        let done = Atomic<Bool>(false)
        let socket = global.socket
        let reference = reference
        let watcher = DispatchSemaphore(value: 0)
        if showProgress {
            Thread.detach {
                let client = SnapshotterClient(socketPath: socket)
                while !done.load(ordering: .acquiring) {
                    if let pull = try? client.pulls().first(where: {
                        $0.reference.hasSuffix(reference) || reference.hasSuffix($0.reference)
                    }) {
                        var line = "\r\u{1B}[K\(pull.reference): \(pull.phase)"
                        if pull.bytesTotal > 0 { line += " \(Output.bytes(pull.bytesDone))/\(Output.bytes(pull.bytesTotal))" }
                        writeStandardError(line)
                    }
                    usleep(200_000)
                }
                writeStandardError("\r\u{1B}[K")
                watcher.signal()
            }
        }
        defer {
            done.store(true, ordering: .releasing)
            if showProgress { watcher.wait() }
        }
        try perform {
            let result = try global.client().pull(reference: reference)
            done.store(true, ordering: .releasing)
            if showProgress { watcher.wait() }
            if global.json {
                Output.printJSON(result)
            } else {
                let image = result.image
                print(
                    "\(result.pulled ? "pulled" : "up to date"): \(image.reference) \(image.digest) (\(image.format), \(image.blobs.count) blobs, \(Output.bytes(image.size)), \(Output.bytes(image.localBytes)) local)"
                )
                print("mounted at \(image.mountpoint); use it with: snapctl prepare KEY --image \(image.reference)")
            }
        }
    }
}

func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = write(STDERR_FILENO, &bytes, bytes.count)
}

/// `Thread` without Foundation: a detached pthread.
enum Thread {
    static func detach(_ body: @escaping @Sendable () -> Void) {
        final class Box: @unchecked Sendable {
            // @unchecked: written once before the thread starts, read only by that thread.
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(
            &thread, nil,
            { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                box.body()
                return nil
            }, box)
        pthread_detach(thread)
    }
}

struct Images: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List pulled images.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try perform {
            let images = try global.client().images()
            if global.json { Output.printJSON(ImagesResponse(images: images)) } else { Output.images(images) }
        }
    }
}

struct RemoveImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rmi", abstract: "Remove a pulled image (refused while snapshots use it) and the blobs only it used.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Image reference.") var reference: String

    func run() throws {
        try perform {
            try global.client().removeImage(reference: reference)
            if global.json { Output.printJSON(EmptyResponse()) } else { print("removed \(reference)") }
        }
    }
}

struct Metrics: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the daemon's Prometheus metrics.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try perform { print(try global.client().metrics(), terminator: "") }
    }
}
