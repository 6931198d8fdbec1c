import BlobStore
import LinuxKernel
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The cachefiles on-demand front end (Linux 5.19+) as the daemon uses it: the `/dev/cachefiles` fd is kept
/// by `snapshotterd-fdholder`, so a restarted daemon adopts it and `restore`s the requests its predecessor
/// took; every image is mounted `-o fsid=<fsid>,domain_id=<domain>` and its bootstrap and blobs are fscache
/// objects of the shared volume `erofs,<domain>`.
public final class CachefilesOnDemand: OnDemandFrontEnd {
    public static let domain = ImageStoreLayout.domain
    public let frontEnd: CachefilesFrontEnd
    private let paths: FrontEndPaths
    private let adopted: Bool
    private let logger: Logger

    init(frontEnd: CachefilesFrontEnd, paths: FrontEndPaths, adopted: Bool, logger: Logger) {
        self.frontEnd = frontEnd
        self.paths = paths
        self.adopted = adopted
        self.logger = logger
    }

    static func start(paths: FrontEndPaths, filler: any RangeFiller, logger: Logger) throws -> CachefilesOnDemand {
        let (device, adopted) = try DescriptorHolder.adoptOrOpen(
            socketPath: paths.cachefilesHolderSocket, holderBinary: paths.holderBinary, accept: CachefilesDevice.isCachefilesDevice,
            adopting: CachefilesDevice.init(adopting:),
            open: {
                let device = try CachefilesDevice()
                do {
                    try FileSystem.makeDirectories(paths.fscacheDirectory, mode: 0o700)
                    try device.bind(cacheDirectory: paths.fscacheDirectory, tag: Self.domain)
                } catch {
                    device.close()
                    throw error
                }
                return device
            }, descriptor: \.fd, close: { $0.close() })
        if adopted {
            logger.notice("adopted /dev/cachefiles from its holder", metadata: ["cachefiles.holder": "\(paths.cachefilesHolderSocket)"])
        }
        return CachefilesOnDemand(
            frontEnd: CachefilesFrontEnd(device: device, filler: filler, logger: logger), paths: paths, adopted: adopted, logger: logger)
    }

    public var name: String { "cachefiles" }
    public var traits: FrontEndTraits { FrontEndTraits(servesBootstrap: true) }

    public func serve(_ file: BackingFile) throws {
        frontEnd.register(
            CachefilesFrontEnd.Registration(
                id: file.id, volumeKey: CachefilesNaming.volumeKey(domain: file.domain), cookieKey: Array(file.cookieKey.utf8),
                size: file.size, backingPath: file.path))
    }

    /// The file is gone from the store: its OPENs are refused from now on, and the kernel's own copy in
    /// `fscache/` is culled, since nothing would ever name it again and it would hold its disk for good.
    public func withdraw(id: BackingFileID) {
        for registration in frontEnd.unregister(id: id) { cullKernelCopy(of: registration) }
    }

    /// Culls every file under `fscache/cache/` that none of `files()` names: in use (EBUSY) or gone meanwhile
    /// (ENOENT), a file is left for the next sweep. The kernel creates nothing else there: the device is bound
    /// to this tree by this daemon alone.
    public func sweepKernelCopies(keeping files: () -> [BackingFile]) -> [String] {
        let cache = FileSystem.join(paths.fscacheDirectory, "cache")
        let live = Set(files().map { CachefilesNaming.relativePath(domain: $0.domain, blobID: $0.cookieKey) })
        var culled: [String] = []
        for volume in (try? FileSystem.listDirectory(cache)) ?? [] where volume.hasPrefix("I") {
            for fanout in (try? FileSystem.listDirectory(FileSystem.join(cache, volume))) ?? [] where fanout.hasPrefix("@") {
                let directory = FileSystem.join(cache, volume, fanout)
                for name in (try? FileSystem.listDirectory(directory)) ?? [] where !live.contains("\(volume)/\(fanout)/\(name)") {
                    let path = FileSystem.join(directory, name)
                    let code = Self.cull(path, binary: paths.holderBinary, device: frontEnd.device.fd)
                    if code == 0 {
                        culled.append(path)
                    } else if code != EBUSY && code != ENOENT {
                        logger.warning(
                            "kernel cache file no image names not culled",
                            metadata: ["cachefiles.path": "\(path)", "error": "\(String(cString: strerror(code)))"])
                    }
                }
            }
        }
        if !culled.isEmpty {
            Self.emptyGraveyard(FileSystem.join(paths.fscacheDirectory, "graveyard"))
            logger.notice("kernel cache files no image names culled", metadata: ["cachefiles.count": "\(culled.count)"])
        }
        return culled
    }

    /// Blocking: cachefiles' `cull` of the file at `path`, through the holder binary (the kernel resolves the
    /// name in the writer's working directory). 0, or the errno the kernel answered.
    static func cull(_ path: String, binary: String, device: Int32) -> Int32 {
        (try? DescriptorHolder.cull(
            binary: binary, fd: device, directory: FileSystem.parentPath(path), name: FileSystem.lastComponent(path)))
            ?? EIO
    }

    /// What the kernel moved aside when it culled (cachefilesd deletes it the same way).
    static func emptyGraveyard(_ graveyard: String) {
        for entry in (try? FileSystem.listDirectory(graveyard)) ?? [] { try? FileSystem.removeTree(FileSystem.join(graveyard, entry)) }
    }

    /// How long a cull waits for the kernel: it links an object's file into its tree only once the object is
    /// released (after the image's unmount, in the background) and refuses one still in use.
    static let cullAttempts = 50
    static let cullInterval = Duration.milliseconds(100)

    /// Culls the kernel's file of a withdrawn registration, then empties the graveyard the kernel moves it to,
    /// as cachefilesd does. In the background: a removal does not wait for the kernel.
    private func cullKernelCopy(of registration: CachefilesFrontEnd.Registration) {
        let path = FileSystem.join(
            paths.fscacheDirectory, "cache",
            CachefilesNaming.relativePath(volumeKey: registration.volumeKey, cookieKey: registration.cookieKey))
        let (binary, device, graveyard, logger) = (
            paths.holderBinary, frontEnd.device.fd, FileSystem.join(paths.fscacheDirectory, "graveyard"), logger
        )
        Task.detached(priority: .background) {
            var code = ENOENT
            for attempt in 1...Self.cullAttempts {
                code = (try? await runBlocking { Self.cull(path, binary: binary, device: device) }) ?? EIO
                guard code == ENOENT || code == EBUSY, attempt < Self.cullAttempts else { break }
                try? await Task.sleep(for: Self.cullInterval)
            }
            let metadata: Logger.Metadata = ["cachefiles.path": "\(path)", "file": "\(registration.id)"]
            switch code {
            case 0:
                Self.emptyGraveyard(graveyard)
                logger.notice("kernel cache file culled", metadata: metadata)
            case ENOENT:
                logger.info("no kernel cache file to cull (the kernel never cached it)", metadata: metadata)
            default:
                logger.warning(
                    "kernel cache file not culled; it stays in fscache/",
                    metadata: metadata.merging(["error": "\(String(cString: strerror(code)))"]) { $1 })
            }
        }
    }

    public func complete(id: BackingFileID) {}
    /// The kernel reads its own copy in `fscache/`; ours is only the engine's source for READs.
    public func prepareEviction(id: BackingFileID) -> Bool { true }

    public func imageMount(bootstrap: String, fsid: String, domain: String, devices: [String]) -> KernelMount {
        CachefilesFrontEnd.erofsMount(fsid: fsid, domainID: domain)
    }

    /// A successor asks the kernel to hand out again what its predecessor took (after serving starts).
    public func resumeInFlight() async throws -> Int {
        guard adopted else { return 0 }
        frontEnd.start()
        try frontEnd.resumeInFlight()
        return 1
    }

    public func startServing() { frontEnd.start() }

    public func stop(keepGroup: Bool) {
        frontEnd.stop()
        guard !keepGroup else {
            logger.notice("/dev/cachefiles left with its holder for the next daemon")
            return
        }
        frontEnd.closeObjects()
        DescriptorHolder.release(socketPath: paths.cachefilesHolderSocket)
    }
}
