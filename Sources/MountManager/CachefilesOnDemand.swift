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

    public func withdraw(id: BackingFileID) { frontEnd.unregister(id: id) }
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
