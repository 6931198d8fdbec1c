import BlobStore
import Dispatch
import LinuxKernel
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The seed design's front end (patch series v2 devnode `/dev/cachefiles_ondemand`, never merged; no kernel
/// speaks it, so it is exercised against an emulation). Every backing file is created in advance, sparse and
/// at full size, at `<root>/cache/I<volume>/@<fan>/<name>` (names from `CachefilesNaming`); the kernel reads
/// them directly and, on a hole, hands out one `SeedRequest` per read naming the file inside its fan-out
/// directory. The front end has the filler make the range present in that very file, then writes
/// `done <id>`, also after a failed fill: the range stays a hole and the reader gets EIO.
public final class SeedFrontEnd: Sendable {
    public static let devicePath = "/dev/cachefiles_ondemand"

    /// A blob to serve: the catalog id (for the filler), the EROFS volume key, the cookie key (the blob id
    /// string, e.g. a digest) and the blob's full size.
    public struct Registration: Equatable, Sendable {
        public var id: BackingFileID
        public var volumeKey: String
        public var cookieKey: String
        public var size: UInt64

        public init(id: BackingFileID, volumeKey: String, cookieKey: String, size: UInt64) {
            self.id = id
            self.volumeKey = volumeKey
            self.cookieKey = cookieKey
            self.size = size
        }
    }

    public struct Statistics: Equatable, Sendable {
        public var requests = 0
        public var filled = 0
        public var failed = 0
        public var unknown = 0
        public var malformed = 0
    }

    private struct Entry {
        var registration: Registration
        var path: String
    }

    private struct State {
        /// By file name inside the fan-out directory: all a request carries.
        var entries: [String: Entry] = [:]
        var statistics = Statistics()
    }

    /// The cache root: the devnode's `dir`, holding `cache/`.
    public let root: String
    public let device: CachefilesDevice
    /// Where requests are recorded before they are served (a successor completes them); nil: not recorded.
    public let journal: SeedJournal?
    private let filler: any RangeFiller
    private let logger: Logger
    private let state = Mutex(State())
    private let reader = ReaderThread(label: "seed.reader")

    public init(root: String, device: CachefilesDevice, filler: any RangeFiller, logger: Logger, journal: SeedJournal? = nil) {
        self.root = root
        self.device = device
        self.filler = filler
        self.logger = logger
        self.journal = journal
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// The EROFS mount for an image served by the seed devnode: `-t erofs -o uuid=<bootstrap id> none`.
    public static func erofsMount(bootstrapID: String) -> KernelMount {
        KernelMount(type: "erofs", source: "none", options: ["ro", "uuid=\(bootstrapID)"])
    }

    /// Where a registration's backing file lives.
    public func backingPath(for registration: Registration) -> String {
        root + "/cache/" + CachefilesNaming.relativePath(volumeKey: registration.volumeKey, cookieKey: Array(registration.cookieKey.utf8))
    }

    /// `dir <root>`, `tag <tag>`, `bind ondemand`.
    public func bind(tag: String) throws(SyscallError) {
        try Self.bind(device, root: root, tag: tag)
    }

    /// Binds `device` to `root` (its backing files go under `root/cache`).
    static func bind(_ device: CachefilesDevice, root: String, tag: String) throws(SyscallError) {
        try FileSystem.makeDirectories(root + "/cache", mode: 0o700)
        try device.bind(cacheDirectory: root, tag: tag)
    }

    /// Creates the backing file (sparse, full size; existing data is kept) and serves requests for it.
    /// Call before mounting. Returns the file's path.
    @discardableResult
    public func register(_ registration: Registration) throws -> String {
        try CachefilesNaming.validate(volumeKey: registration.volumeKey, cookieKey: Array(registration.cookieKey.utf8))
        let path = backingPath(for: registration)
        try FileSystem.makeDirectories(FileSystem.parentPath(path), mode: 0o700)
        let fd = try retryingSyscall("open", path) { open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600) }
        defer { close(fd) }
        var st = stat()
        try retryingSyscall("fstat", path) { fstat(fd, &st) }
        if UInt64(st.st_size) != registration.size {
            try retryingSyscall("ftruncate", path) { ftruncate(fd, off_t(registration.size)) }
        }
        let name = FileSystem.lastComponent(path)
        let clash = state.withLock { state in
            defer { state.entries[name] = Entry(registration: registration, path: path) }
            return state.entries[name].map { $0.registration.id != registration.id } ?? false
        }
        if clash { logger.warning("two blobs share a seed file name; the newer one wins", metadata: ["seed.name": "\(name)"]) }
        return path
    }

    public func unregister(id: BackingFileID) {
        state.withLock { $0.entries = $0.entries.filter { $0.value.registration.id != id } }
    }

    public func start() {
        guard reader.start({ self.readOnce() }) else { return }
        logger.info("seed front end serving", metadata: ["seed.root": "\(root)"])
    }

    public func stop() {
        reader.stop()
    }

    /// One pass of the reader: at most one request; false once the devnode is gone.
    private func readOnce() -> Bool {
        let bytes: [UInt8]?
        do {
            bytes = try device.readMessage(timeoutMilliseconds: 200)
        } catch {
            logger.error("reading the seed devnode failed", metadata: ["error": "\(error)"])
            if error.errno == EBADF { return false }
            usleep(100_000)
            return true
        }
        guard let bytes else { return true }
        let request: SeedRequest
        do {
            request = try SeedRequest.parse(bytes)
        } catch {
            state.withLock { $0.statistics.malformed += 1 }
            logger.error("malformed seed request skipped", metadata: ["error": "\(error)", "seed.bytes": "\(bytes.count)"])
            return true
        }
        serve(request)
        return true
    }

    private func serve(_ request: SeedRequest) {
        // Recorded before anything else: a daemon killed from here on leaves the request to its successor.
        var slot: Int?
        if let journal {
            do {
                slot = try journal.record(request)
            } catch {
                logger.error("seed request not journalled; a restart now would leave its reader waiting", metadata: ["error": "\(error)"])
            }
        }
        serve(request, slot: slot)
    }

    private func serve(_ request: SeedRequest, slot: Int?) {
        let entry = state.withLock { state in
            state.statistics.requests += 1
            return state.entries[request.path]
        }
        guard let entry else {
            logger.warning("request for an unknown seed file; answered unfilled", metadata: ["seed.name": "\(request.path)"])
            state.withLock { $0.statistics.unknown += 1 }
            done(request, slot: slot)
            return
        }
        Task.detached { await self.fill(request, entry: entry, slot: slot) }
    }

    /// Completes the requests a predecessor journalled but never answered: each is filled, then answered
    /// with `done <id>` (the reader still waits on the devnode the holder kept open). Only the records found
    /// when the journal was opened count: requests this process read meanwhile are being served already.
    /// Call after every backing file is registered. Returns how many were completed.
    public func resumeJournalled() async -> Int {
        guard let journal, !journal.inherited.isEmpty else { return 0 }
        let records = journal.inherited
        logger.notice("completing seed requests a previous daemon left", metadata: ["seed.count": "\(records.count)"])
        await withTaskGroup(of: Void.self) { group in
            for record in records {
                group.addTask {
                    let entry = self.state.withLock { state in
                        state.statistics.requests += 1
                        return state.entries[record.request.path]
                    }
                    guard let entry else {
                        self.logger.warning(
                            "journalled request for an unknown seed file; answered unfilled",
                            metadata: ["seed.name": "\(record.request.path)"])
                        self.state.withLock { $0.statistics.unknown += 1 }
                        self.done(record.request, slot: record.slot)
                        return
                    }
                    await self.fill(record.request, entry: entry, slot: record.slot)
                }
            }
        }
        return records.count
    }

    /// Has the filler make the range present, then answers `done <id>` (also after a failed fill: the range
    /// stays a hole and the reader gets EIO).
    private func fill(_ request: SeedRequest, entry: Entry, slot: Int?) async {
        var filled = true
        // Held until answered: the grace then covers the reader's read of the range.
        var lease: RangeLease?
        defer { lease?.end() }
        do {
            lease = try await filler.fillAndHold(file: entry.registration.id, offset: request.offset, length: request.length)
        } catch {
            filled = false
            logger.warning(
                "fill failed; the reader gets EIO",
                metadata: [
                    "file": "\(entry.registration.id)", "range.offset": "\(request.offset)", "range.count": "\(request.length)",
                    "error": "\(error)",
                ])
        }
        state.withLock { state in
            if filled { state.statistics.filled += 1 } else { state.statistics.failed += 1 }
        }
        done(request, slot: slot)
    }

    private func done(_ request: SeedRequest, slot: Int?) {
        do {
            try device.send("done \(request.id)")
        } catch {
            logger.error("done failed", metadata: ["seed.request": "\(request.id)", "error": "\(error)"])
        }
        guard let journal, let slot else { return }
        do {
            try journal.clear(slot: slot)
        } catch {
            logger.warning("seed journal slot not cleared; a successor will answer it again", metadata: ["error": "\(error)"])
        }
    }
}
