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
        try withProgressLine(matching: reference, quiet: quiet, global: global) { stopProgress in
            let result = try global.client().pull(reference: reference)
            stopProgress()
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

struct Index: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Build the gzip index of a plain OCI image (gzip layers) and push it to the image's repository: pulls then start the image lazily, fetching ranges of its own layers, without converting it. This daemon trusts the index it built; other hosts list its digest in zran.trusted_indexes."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Image reference, e.g. 127.0.0.1:5000/app:latest (docker://REF works too).") var reference: String
    @Option(help: "MiB of tar between checkpoints (smaller: less inflated per cold read, larger index).") var spanMib: UInt64 = 2
    @Option(
        help:
            "A file or directory (absolute path in the image) containers read at start-up; repeatable. Recorded as the index's prefetch table: fetched in the background once the image is pulled."
    ) var prefetch: [String] = []
    @Flag(help: "Never show the progress line (it shows on a terminal by default).") var quiet = false

    func validate() throws {
        guard (1...64).contains(spanMib) else { throw ValidationError("--span-mib must be 1 to 64") }
    }

    func run() throws {
        let reference = reference.hasPrefix("docker://") ? String(reference.dropFirst("docker://".count)) : reference
        try withProgressLine(matching: "index " + reference, quiet: quiet, global: global) { stopProgress in
            let result = try global.client().index(
                reference: reference, spanBytes: spanMib << 20, prefetch: prefetch.isEmpty ? nil : prefetch)
            stopProgress()
            if global.json {
                Output.printJSON(result)
            } else {
                print(
                    "indexed: \(result.reference) \(result.imageDigest): index \(result.indexDigest) (\(result.layers) layers, \(Output.bytes(result.layerBytes)) read, \(Output.bytes(result.indexBytes)) pushed, \(result.checkpoints) checkpoints, \(Double(Int(result.seconds * 10)) / 10) s)"
                )
            }
        }
    }
}

/// Runs `body` (a long call) while a line on stderr shows the daemon's progress of the task whose name ends
/// like `name` (pulls and index builds are listed by `GET /v1/pulls`), on a terminal unless `quiet` or `--json`.
/// `body` gets a function that ends the line before the result is printed.
func withProgressLine(matching name: String, quiet: Bool, global: GlobalOptions, _ body: (() -> Void) throws -> Void) throws {
    let showProgress = !quiet && !global.json && isatty(STDERR_FILENO) == 1
    let done = Atomic<Bool>(false)
    let socket = global.socket
    let watcher = DispatchSemaphore(value: 0)
    if showProgress {
        DispatchQueue(label: "snapctl.progress").async {
            let client = SnapshotterClient(socketPath: socket)
            while !done.load(ordering: .acquiring) {
                if let pull = try? client.pulls().first(where: { $0.reference.hasSuffix(name) || name.hasSuffix($0.reference) }) {
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
    /// Ends the progress line once (before the result is printed, or when the call fails).
    func stopProgress() {
        let wasDone = done.exchange(true, ordering: .acquiringAndReleasing)
        if showProgress && !wasDone { watcher.wait() }
    }
    defer { stopProgress() }
    try perform { try body(stopProgress) }
}

func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = write(STDERR_FILENO, &bytes, bytes.count)
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

struct Pin: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pin an image: its chunks are never evicted to keep the cache inside its budget (cache.max_bytes).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Image reference.") var reference: String

    func run() throws {
        try perform {
            let usage = try global.client().pin(reference: reference, pinned: true)
            if global.json {
                Output.printJSON(usage)
            } else {
                print("pinned \(usage.reference) (\(Output.bytes(usage.presentBytes)) present)")
            }
        }
    }
}

struct Unpin: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unpin an image: its chunks may be evicted again.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Image reference.") var reference: String

    func run() throws {
        try perform {
            let usage = try global.client().pin(reference: reference, pinned: false)
            if global.json { Output.printJSON(usage) } else { print("unpinned \(usage.reference)") }
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

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an OCI image to the nydus RAFS v6 layout (bootstrap + chunked blobs).",
        discussion:
            "SRC and DST are OCI image layout directories, or docker://REF for a registry image; SRC may also be docker-archive:PATH[:REPO:TAG|:@INDEX] (docker save's tar; an archive of several images needs the image named). Runs in the daemon, or in a snapshotterd process of its own when no daemon answers (or with --offline)."
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Source: an OCI layout directory, docker://REF or docker-archive:PATH[:REPO:TAG|:@INDEX].") var source: String
    @Argument(help: "Destination: an OCI layout directory (created) or docker://REF.") var destination: String
    @Option(help: "ref.name of the source image when its layout holds several.") var sourceTag: String?
    @Option(help: "ref.name to give the converted image in the destination layout.") var tag: String?
    @Option(help: "Chunk size in bytes (power of two, 4 KiB to 16 MiB; default 1 MiB).") var chunkSize: UInt32?
    @Option(help: "Chunk compression: zstd (default), lz4 or none.") var compression: String?
    @Option(
        name: .customLong("prefetch"),
        help:
            "A file or directory (absolute path in the image) containers read at start-up; repeatable. Recorded as the image's prefetch table: fetched in the background once the image is pulled."
    ) var prefetch: [String] = []
    @Flag(help: "Run without the daemon, in a snapshotterd process of its own.") var offline = false

    func run() throws {
        func resolve(_ text: String) -> String {
            if text.hasPrefix("docker://") { return text }
            if text.hasPrefix("docker-archive:") {
                // docker-archive:PATH[:REPO:TAG | :@INDEX]: only the path is made absolute.
                let rest = text.dropFirst("docker-archive:".count)
                let path = String(rest.prefix { $0 != ":" })
                return "docker-archive:" + absolutePath(path) + rest.dropFirst(path.count)
            }
            return absolutePath(text)
        }
        try perform {
            let request = ConvertRequest(
                source: resolve(source), destination: resolve(destination), sourceTag: sourceTag, tag: tag, chunkSize: chunkSize,
                compression: compression, prefetch: prefetch.isEmpty ? nil : prefetch)
            let result: ConvertResponse = try OfflineRunner.call("convert", request, offline: offline) {
                try global.client().convert(request)
            }
            if global.json {
                Output.printJSON(result)
            } else {
                let stored = result.blobs.reduce(Int64(0)) { $0 + $1.storedSize }
                let plain = result.blobs.reduce(Int64(0)) { $0 + $1.uncompressedSize }
                print(
                    "converted \(source) -> \(destination): \(result.manifestDigest), \(result.blobs.count) blobs (\(Output.bytes(plain)) in \(Output.bytes(stored))), bootstrap layer \(Output.bytes(result.bootstrapSize)), \((result.seconds * 10).rounded() / 10) s"
                )
            }
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a RAFS v6 bootstrap's tree; with --verify, check every chunk of the blobs in --blobs.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The bootstrap file (image.boot).") var bootstrap: String
    @Option(help: "Directory holding the image's blobs, named by blob id.") var blobs: String?
    @Flag(help: "Decompress every chunk of every blob found and check its digest; exit non-zero on the first mismatch.")
    var verify = false
    @Flag(help: "Run without the daemon, in a snapshotterd process of its own (also what happens when none answers).")
    var offline = false

    func run() throws {
        try perform {
            let request = InspectRequest(bootstrap: absolutePath(bootstrap), blobs: blobs.map(absolutePath), verify: verify)
            let result: InspectResponse = try OfflineRunner.call("inspect", request, offline: offline) {
                try global.client().inspect(request)
            }
            if global.json {
                Output.printJSON(result.entries)
            } else {
                for line in result.lines { print(line) }
                if let verified = result.verified {
                    print(
                        "verified \(verified.chunksChecked) chunks (\(Output.bytes(Int64(verified.bytesChecked)))) in \(verified.blobsChecked.count) blobs"
                            + (verified.blobsMissing.isEmpty ? "" : "; missing: \(verified.blobsMissing.joined(separator: ", "))"))
                }
            }
        }
    }
}

struct Prefetch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch a pulled image (or some of its files) in the background; reads on demand always go first.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Image reference.") var reference: String
    @Argument(help: "Absolute paths inside the image (none: the whole image).") var paths: [String] = []

    func run() throws {
        try perform {
            let result = try global.client().prefetch(reference: reference, paths: paths.isEmpty ? nil : paths)
            if global.json {
                Output.printJSON(result)
            } else {
                print("prefetching \(result.ranges) ranges (\(Output.bytes(Int64(result.bytes)))) of \(reference) in the background")
            }
        }
    }
}
