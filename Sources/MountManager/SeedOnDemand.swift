import BlobStore
import LinuxKernel
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The seed devnode front end as the daemon uses it (`ondemand.front_end = "seed"`, never chosen by `auto`).
/// The devnode (`ondemand.seed_device`, default `/dev/cachefiles_ondemand`; a Unix socket path connects to an
/// emulation instead, see `CachefilesDevice.init(path:)`) is bound to the service root, so the backing files
/// the puller prepares under `cache/I<volume>/@<fan>/D<blob>` are the very files the devnode names. Its
/// descriptor is kept by `snapshotterd-fdholder` (`seed-holder.sock`): a daemon that dies does not release
/// the devnode, its readers keep waiting, and the successor adopts the descriptor, completes the requests
/// journalled in `seed.journal`, then reads on.
public final class SeedOnDemand: OnDemandFrontEnd {
    public static let domain = ImageStoreLayout.domain
    public let frontEnd: SeedFrontEnd
    private let paths: FrontEndPaths
    private let logger: Logger

    init(frontEnd: SeedFrontEnd, paths: FrontEndPaths, logger: Logger) {
        self.frontEnd = frontEnd
        self.paths = paths
        self.logger = logger
    }

    static func start(paths: FrontEndPaths, filler: any RangeFiller, logger: Logger) throws -> SeedOnDemand {
        let journal = try SeedJournal(path: paths.seedJournalPath)
        let isDevnode: (Int32) -> Bool = { CachefilesDevice.isDevice($0, path: paths.seedDevice) }
        let (device, adopted) = try DescriptorHolder.adoptOrOpen(
            socketPath: paths.seedHolderSocket, holderBinary: paths.holderBinary, accept: isDevnode,
            adopting: CachefilesDevice.init(adopting:),
            open: {
                guard FileSystem.exists(paths.seedDevice) else {
                    throw FrontEndError.unavailable(
                        .seed,
                        reason: "\(paths.seedDevice) does not exist (no released kernel has the seed devnode); "
                            + "set ondemand.seed_device (--seed-device) to an emulation's socket")
                }
                let device = try CachefilesDevice(path: paths.seedDevice)
                do {
                    try SeedFrontEnd.bind(device, root: paths.root, tag: Self.domain)
                } catch {
                    device.close()
                    throw error
                }
                return device
            }, descriptor: \.fd, close: { $0.close() })
        let frontEnd = SeedFrontEnd(root: paths.root, device: device, filler: filler, logger: logger, journal: journal)
        if adopted {
            logger.notice("adopted the seed devnode from its holder", metadata: ["seed.holder": "\(paths.seedHolderSocket)"])
        } else {
            logger.notice("seed devnode bound", metadata: ["seed.device": "\(paths.seedDevice)", "seed.root": "\(paths.root)"])
        }
        return SeedOnDemand(frontEnd: frontEnd, paths: paths, logger: logger)
    }

    public var name: String { "seed" }
    public var traits: FrontEndTraits { FrontEndTraits(imageMountUnsupportedReason: Self.imageMountUnsupported(paths.seedDevice)) }

    /// Prepares the blob's backing file where the devnode will name it; it must be the file the puller made.
    public func serve(_ file: BackingFile) throws {
        guard case .blob = file.id else { return }  // a bootstrap: read from disk, never through the devnode
        let registration = SeedFrontEnd.Registration(
            id: file.id, volumeKey: CachefilesNaming.volumeKey(domain: file.domain), cookieKey: file.cookieKey, size: file.size)
        let path = frontEnd.backingPath(for: registration)
        guard path == file.path else { throw FrontEndError.pathMismatch(blobID: file.cookieKey, expected: path, found: file.path) }
        try frontEnd.register(registration)
    }

    public func withdraw(id: BackingFileID) { frontEnd.unregister(id: id) }
    public func complete(id: BackingFileID) {}
    /// The devnode's kernel checks for holes itself before each read (cachefiles' semantics), and asks for them.
    public func prepareEviction(id: BackingFileID) -> Bool { true }

    public func imageMount(bootstrap: String, fsid: String, domain: String, devices: [String]) -> KernelMount {
        SeedFrontEnd.erofsMount(bootstrapID: fsid)
    }

    static func imageMountUnsupported(_ device: String) -> String {
        "the seed front end serves \(device), but no released kernel mounts EROFS with -o uuid= over the seed "
            + "devnode: images are pulled and their reads served to the devnode, not mounted; "
            + "choose ondemand.front_end = \"auto\" to run containers"
    }

    /// Starts reading, then completes what a predecessor journalled but never answered.
    public func resumeInFlight() async throws -> Int {
        frontEnd.start()
        return await frontEnd.resumeJournalled()
    }

    public func startServing() { frontEnd.start() }

    /// With `keepGroup` the devnode stays with its holder (waiting readers keep waiting for a successor);
    /// otherwise the holder closes it and the devnode fails whatever still waits with EIO.
    public func stop(keepGroup: Bool) {
        frontEnd.stop()
        guard !keepGroup else {
            logger.notice("the seed devnode left with its holder for the next daemon")
            return
        }
        DescriptorHolder.release(socketPath: paths.seedHolderSocket)
        frontEnd.device.close()
    }
}
