import LinuxKernel
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How the kernel's reads of missing blob ranges reach the fetch engine. One front end serves the whole
/// daemon; it is chosen at start-up by probing the kernel, or forced by config.
///
/// The requirements are what the image service and the daemon call; how a front end names devices or talks
/// to its holder stays inside it.
public protocol OnDemandFrontEnd: AnyObject, Sendable {
    /// `fanotify`, `eager`, ...: what `status` reports.
    var name: String { get }
    /// What the image service must do differently for this front end.
    var traits: FrontEndTraits { get }
    /// Serves reads of this backing file from now on.
    func serve(_ file: BackingFile) throws
    func withdraw(id: BackingFileID)
    /// Every chunk of the file is local: reads need not ask any more.
    func complete(id: BackingFileID)
    /// Chunks of the file are about to be evicted (holes punched): after this returns true, a read of any
    /// evicted range must come to the front end again, never read the hole. False: the file must keep its
    /// chunks (the kernel reads it with no on-demand path, or could not be re-armed).
    func prepareEviction(id: BackingFileID) -> Bool
    /// The EROFS mount of an image: `devices` are backing files under `cache/` in device-table order, all of
    /// the cachefiles domain `domain`.
    func imageMount(bootstrap: String, fsid: String, domain: String, devices: [String]) -> KernelMount
    /// Completes requests a predecessor read but did not answer. Call after every blob is served.
    func resumeInFlight() async throws -> Int
    /// Starts answering new kernel requests; call once every recorded blob is served.
    func startServing()
    /// Stops serving. With `keepGroup`, kernel-side state (the fanotify group) is left with its holder so a
    /// successor can take over; otherwise it is released.
    func stop(keepGroup: Bool)
    /// Removes the kernel's own copies (cachefiles' `fscache/`) of every file not among `files()`: what a
    /// removal left when a crash came before its cull. Returns their paths. Front ends whose kernel keeps no
    /// copies have none, and never list the files (start-up builds nothing for them).
    func sweepKernelCopies(keeping files: () -> [BackingFile]) -> [String]
}

extension OnDemandFrontEnd {
    public func sweepKernelCopies(keeping files: () -> [BackingFile]) -> [String] { [] }
}

/// Facts about a front end that change what the image service does around it.
public struct FrontEndTraits: Sendable, Equatable {
    /// Every blob must be complete before its image is mounted (no on-demand path in the kernel).
    public var needsCompleteBlobs = false
    /// The kernel reads the bootstrap through the front end too (cachefiles: it is an fscache object), so
    /// bootstraps are served like blobs.
    public var servesBootstrap = false
    /// Why this host's kernel cannot mount images through this front end (the seed's `-o uuid=` mounts exist
    /// in no released kernel), or nil when it can. Pulls then skip the mount and snapshots on images are refused.
    public var imageMountUnsupportedReason: String?

    public init(needsCompleteBlobs: Bool = false, servesBootstrap: Bool = false, imageMountUnsupportedReason: String? = nil) {
        self.needsCompleteBlobs = needsCompleteBlobs
        self.servesBootstrap = servesBootstrap
        self.imageMountUnsupportedReason = imageMountUnsupportedReason
    }
}

/// Which front end the config asks for.
public enum FrontEndChoice: String, Sendable, CaseIterable {
    case auto
    case fanotify
    case cachefiles
    case eager
    /// The seed's `/dev/cachefiles_ondemand` (never merged, so never chosen by `auto`): for emulations of it.
    case seed
}

extension KernelMount {
    /// File-backed EROFS: the bootstrap as the source, one `device=` per blob.
    static func fileBackedErofs(bootstrap: String, devices: [String]) -> KernelMount {
        KernelMount(type: "erofs", source: bootstrap, options: ["ro"] + devices.map { "device=" + $0 })
    }
}

/// Where the front ends keep their state under the service root.
public struct FrontEndPaths: Sendable {
    public var cacheDirectory: String
    public var watchedDirectory: String
    public var journalPath: String
    public var holderSocket: String
    public var holderBinary: String
    /// The kernel's cachefiles directory (must be on a disk filesystem with xattrs).
    public var fscacheDirectory: String
    public var cachefilesHolderSocket: String
    /// The service root: the seed devnode's `dir` (its backing files are `cache/` below it).
    public var root: String
    /// The seed devnode, or a Unix socket of an emulation of it (see `CachefilesDevice.init(path:)`).
    public var seedDevice: String
    public var seedHolderSocket: String
    public var seedJournalPath: String

    public init(root: String, holderBinary: String, seedDevice: String = SeedFrontEnd.devicePath) {
        self.root = root
        cacheDirectory = FileSystem.join(root, "cache")
        watchedDirectory = FileSystem.join(root, "ondemand")
        journalPath = FileSystem.join(root, "fanotify.journal")
        holderSocket = FileSystem.join(root, "fdholder.sock")
        fscacheDirectory = FileSystem.join(root, "fscache")
        cachefilesHolderSocket = FileSystem.join(root, "cachefiles-holder.sock")
        self.seedDevice = seedDevice
        seedHolderSocket = FileSystem.join(root, "seed-holder.sock")
        seedJournalPath = FileSystem.join(root, "seed.journal")
        self.holderBinary = holderBinary
    }
}

/// Probes the kernel and starts the chosen front end.
public enum FrontEndSelector {
    public static func start(
        _ choice: FrontEndChoice, paths: FrontEndPaths, filler: any RangeFiller, logger: Logger
    ) throws -> any OnDemandFrontEnd {
        switch choice {
        case .eager:
            return EagerFrontEnd()
        case .fanotify:
            return try FanotifyOnDemand.start(paths: paths, filler: filler, logger: logger)
        case .cachefiles:
            return try CachefilesOnDemand.start(paths: paths, filler: filler, logger: logger)
        case .seed:
            // Only on request: no released kernel has the devnode, so `auto` never probes it.
            return try SeedOnDemand.start(paths: paths, filler: filler, logger: logger)
        case .auto:
            do {
                return try FanotifyOnDemand.start(paths: paths, filler: filler, logger: logger)
            } catch {
                logger.notice("fanotify front end unavailable", metadata: ["error": "\(error)"])
            }
            if FileSystem.exists(CachefilesDevice.defaultPath) {
                do {
                    return try CachefilesOnDemand.start(paths: paths, filler: filler, logger: logger)
                } catch {
                    logger.notice("cachefiles front end unavailable", metadata: ["error": "\(error)"])
                }
            }
            logger.notice("no on-demand front end here; images are fetched whole before mounting (eager)")
            return EagerFrontEnd()
        }
    }
}

/// For kernels with EROFS but no on-demand path: blobs are fetched whole before their image is mounted,
/// and EROFS reads the backing files directly.
public final class EagerFrontEnd: OnDemandFrontEnd {
    public init() {}
    public var name: String { "eager" }
    public var traits: FrontEndTraits { FrontEndTraits(needsCompleteBlobs: true) }
    public func serve(_ file: BackingFile) throws {}
    public func withdraw(id: BackingFileID) {}
    public func complete(id: BackingFileID) {}
    /// EROFS reads the backing files directly, with nobody to ask on a hole: nothing may be evicted.
    public func prepareEviction(id: BackingFileID) -> Bool { false }
    /// EROFS reads the complete backing files directly.
    public func imageMount(bootstrap: String, fsid: String, domain: String, devices: [String]) -> KernelMount {
        .fileBackedErofs(bootstrap: bootstrap, devices: devices)
    }
    public func resumeInFlight() async throws -> Int { 0 }
    public func startServing() {}
    public func stop(keepGroup: Bool) {}
}

/// The fanotify front end with its group kept by `snapshotterd-fdholder`: adopted from a running holder
/// (a restart) or created and handed to a new one.
public final class FanotifyOnDemand: OnDemandFrontEnd {
    public let frontEnd: FanotifyFrontEnd
    private let paths: FrontEndPaths
    private let logger: Logger
    private let supervisor: HolderSupervisor
    /// The group came from the holder: a predecessor used it.
    private let adopted: Bool

    init(frontEnd: FanotifyFrontEnd, paths: FrontEndPaths, adopted: Bool, logger: Logger) {
        self.frontEnd = frontEnd
        self.adopted = adopted
        self.paths = paths
        self.logger = logger
        let group = frontEnd.group
        supervisor = HolderSupervisor(socketPath: paths.holderSocket, logger: logger) {
            try FanotifyGroupHolder.spawn(binary: paths.holderBinary, socketPath: paths.holderSocket, group: group)
        }
        supervisor.start()
    }

    static func start(paths: FrontEndPaths, filler: any RangeFiller, logger: Logger) throws -> FanotifyOnDemand {
        // A new group is closed when released (its deinit); the holder keeps its own duplicate.
        let (group, adopted) = try DescriptorHolder.adoptOrOpen(
            socketPath: paths.holderSocket, holderBinary: paths.holderBinary, accept: FanotifyGroupHolder.isFanotify,
            adopting: FanotifyGroup.init(adopting:), open: { try FanotifyGroup() }, descriptor: \.fd, close: { _ in })
        if adopted {
            logger.notice("adopted the fanotify group from its holder", metadata: ["fanotify.holder": "\(paths.holderSocket)"])
        }
        let journal = try InFlightJournal(path: paths.journalPath)
        if !adopted {
            // The journal's fd numbers name events of a group that no longer exists (its last keeper died, and
            // the kernel answered its waiting readers when it released it): none can be answered now, and a
            // number must never be answered on another group.
            let stale = try journal.pending()
            for record in stale { try journal.clear(fd: record.fd) }
            if !stale.isEmpty {
                logger.error(
                    "the fanotify group was lost with reads in flight (its holder and the daemon both died); they were released by the kernel",
                    metadata: ["fanotify.count": "\(stale.count)"])
            }
        }
        let frontEnd = FanotifyFrontEnd(
            cacheDirectory: paths.cacheDirectory, watchedDirectory: paths.watchedDirectory, journal: journal, group: group, filler: filler,
            logger: logger)
        do {
            try frontEnd.start(serving: false)
        } catch {
            // A group we cannot use must not linger in a holder.
            FanotifyGroupHolder.release(socketPath: paths.holderSocket)
            throw error
        }
        return FanotifyOnDemand(frontEnd: frontEnd, paths: paths, adopted: adopted, logger: logger)
    }

    public var name: String { "fanotify" }
    public var traits: FrontEndTraits { FrontEndTraits() }
    public func serve(_ file: BackingFile) throws { try frontEnd.register(file) }
    public func withdraw(id: BackingFileID) { frontEnd.unregister(id: id) }
    public func complete(id: BackingFileID) { frontEnd.ignore(id: id) }
    public func prepareEviction(id: BackingFileID) -> Bool { frontEnd.rearm(id: id) }
    /// EROFS names each backing file through the watched bind mount, where the group sees its reads.
    public func imageMount(bootstrap: String, fsid: String, domain: String, devices: [String]) -> KernelMount {
        .fileBackedErofs(bootstrap: bootstrap, devices: devices.map(frontEnd.watchedPath(for:)))
    }
    /// A group adopted from the holder may hold readers a dead predecessor took and never recorded.
    public func resumeInFlight() async throws -> Int {
        try await frontEnd.resumeInFlight(failingOthersBelow: adopted ? Int32(clamping: ProcessLimits.openFiles()) : nil)
    }
    public func startServing() { frontEnd.startServing() }

    public func stop(keepGroup: Bool) {
        supervisor.stop()
        frontEnd.stop()
        guard !keepGroup else {
            logger.notice("fanotify group left with its holder for the next daemon")
            return
        }
        try? frontEnd.group.unmarkMount(paths.watchedDirectory)
        if MountInfo.isMountPoint(paths.watchedDirectory, in: (try? MountInfo.read()) ?? []) {
            try? Mounter.unmount(paths.watchedDirectory, detach: true)
        }
        FanotifyGroupHolder.release(socketPath: paths.holderSocket)
    }
}
