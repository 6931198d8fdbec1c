import CLinux
import Dispatch
import LinuxKernel
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The fanotify front end (Linux 6.14+): backing files live under `cache/`; `ondemand/` is a bind mount of
/// `cache/` carrying a FAN_MARK_MOUNT | FAN_PRE_ACCESS mark; EROFS is mounted from paths under `ondemand/`.
/// A read of a missing range blocks in the kernel until this front end has the filler write the range
/// through `cache/` (which raises no event) and answers FAN_ALLOW; a failed fill answers
/// FAN_DENY_ERRNO(EIO), so readers get an error, never holes read as zeros.
public final class FanotifyFrontEnd: Sendable {
    public struct Statistics: Equatable, Sendable {
        public var events = 0
        public var filled = 0
        public var denied = 0
        public var passedThrough = 0
    }

    private struct FileKey: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    private struct State {
        var files: [FileKey: BackingFile] = [:]
        /// The keys of each blob id's files: `ignore` and `unregister` run once per blob, so a scan of `files`
        /// each time would be quadratic in the number of blobs.
        var keys: [BackingFileID: Set<FileKey>] = [:]
        var statistics = Statistics()
    }

    public let cacheDirectory: String
    public let watchedDirectory: String
    public let group: FanotifyGroup
    private let journal: InFlightJournal
    private let filler: any RangeFiller
    private let logger: Logger
    private let state = Mutex(State())
    private let reader = ReaderThread(label: "fanotify.reader", qos: .userInitiated)

    public init(
        cacheDirectory: String,
        watchedDirectory: String,
        journal: InFlightJournal,
        group: FanotifyGroup,
        filler: any RangeFiller,
        logger: Logger
    ) {
        self.cacheDirectory = cacheDirectory
        self.watchedDirectory = watchedDirectory
        self.journal = journal
        self.group = group
        self.filler = filler
        self.logger = logger
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Sets up the watched bind mount and its mark, and (unless `serving` is false) starts serving events.
    /// A daemon starting up registers its files first and then calls `startServing()`: events that arrive in
    /// between wait in the group's queue.
    public func start(serving: Bool = true) throws {
        try FileSystem.makeDirectories(cacheDirectory, mode: 0o700)
        try FileSystem.makeDirectories(watchedDirectory, mode: 0o700)
        if !MountInfo.isMountPoint(watchedDirectory, in: try MountInfo.read()) {
            try Mounter.mount(KernelMount(type: "none", source: cacheDirectory, options: ["bind"]), at: watchedDirectory)
        }
        try group.markMount(watchedDirectory)
        if serving { startServing() }
    }

    /// Starts the event reader (once).
    public func startServing() {
        guard reader.start({ self.readOnce() }) else { return }
        logger.info("fanotify front end serving", metadata: ["fanotify.watched": "\(watchedDirectory)"])
    }

    /// Stops reading events (in-flight fills finish). The group stays open: its owner decides whether to
    /// hand it over or release it.
    public func stop() {
        reader.stop()
    }

    /// Serves reads of `file` (a path under `cache/`) from now on.
    public func register(_ file: BackingFile) throws {
        let st = try FileSystem.lstat(file.path)
        let key = FileKey(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        state.withLock { state in
            if let previous = state.files[key] { state.keys[previous.id]?.remove(key) }
            state.files[key] = file
            state.keys[file.id, default: []].insert(key)
        }
    }

    /// The file is complete: the kernel stops asking about it.
    public func ignore(id: BackingFileID) {
        guard let file = state.withLock({ state in state.keys[id]?.first.flatMap { state.files[$0] } }) else { return }
        let watched = watchedPath(for: file.path)
        do {
            try group.ignore(watched)
        } catch {
            logger.warning("cannot stop events for a complete blob", metadata: ["file": "\(id)", "error": "\(error)"])
        }
    }

    /// Chunks of the file are about to be evicted: the ignore mark `ignore` set (now or by a predecessor sharing
    /// the group) is removed, so reads of the coming holes raise events again. True when the file has no ignore
    /// mark afterwards; an unregistered file is refused (we could not answer its events).
    public func rearm(id: BackingFileID) -> Bool {
        guard let file = state.withLock({ state in state.keys[id]?.first.flatMap { state.files[$0] } }) else { return false }
        do {
            try group.unignore(watchedPath(for: file.path))
            return true
        } catch {
            logger.warning("cannot re-arm events for a blob; its chunks are kept", metadata: ["file": "\(id)", "error": "\(error)"])
            return false
        }
    }

    public func unregister(id: BackingFileID) {
        state.withLock { state in
            for key in state.keys.removeValue(forKey: id) ?? [] { state.files[key] = nil }
        }
    }

    /// The path under `ondemand/` that mounts must use for a path under `cache/`.
    public func watchedPath(for cachePath: String) -> String {
        guard cachePath.hasPrefix(cacheDirectory) else { return cachePath }
        return watchedDirectory + cachePath.dropFirst(cacheDirectory.count)
    }

    /// Finishes events a predecessor read but did not answer (recorded in the journal): fills each range,
    /// then answers by the recorded fd number. Call after registering the backing files, before serving.
    ///
    /// A predecessor killed between reading events and journaling them (one read(2) takes many) leaves readers
    /// that nothing names: with `failingOthersBelow`, every other number under it (the predecessor's
    /// descriptor limit) is answered with EIO, so those readers get an error instead of waiting forever.
    public func resumeInFlight(failingOthersBelow limit: Int32? = nil) async throws -> Int {
        let pending: [InFlightJournal.Record]
        do {
            pending = try journal.pending()
        } catch {
            // Nothing can be filled without the journal: every reader still waiting gets its error.
            if let limit { await failUnrecorded(below: limit, recorded: []) }
            throw error
        }
        if let limit { await failUnrecorded(below: limit, recorded: Set(pending.map(\.fd))) }
        // Side by side: each inherited reader waits on its own range only, and new readers wait for serving to
        // start after all of them (one after another, N slow ranges would hold everyone N reader timeouts).
        await withTaskGroup(of: Void.self) { tasks in
            for record in pending { tasks.addTask { await self.finishInherited(record) } }
        }
        // The numbers are cleared once all are answered: none is reused before this daemon reads its own events.
        for record in pending { try journal.clear(fd: record.fd) }
        if !pending.isEmpty { logger.notice("completed inherited events", metadata: ["fanotify.count": "\(pending.count)"]) }
        return pending.count
    }

    /// Fails with EIO every reader still waiting under a number below `limit` that is not `recorded`.
    private func failUnrecorded(below limit: Int32, recorded: Set<Int32>) async {
        let group = self.group
        let failed = (try? await runBlocking { group.failWaiting(numbers: 0..<limit, skipping: recorded) }) ?? 0
        guard failed > 0 else { return }
        logger.error(
            "reads a predecessor took but never recorded were failed with EIO (it died between reading and recording them)",
            metadata: ["fanotify.count": "\(failed)"])
    }

    /// Fills an inherited event's range and answers it by its recorded number.
    private func finishInherited(_ record: InFlightJournal.Record) async {
        let allowed: Bool
        do {
            try await filler.fill(file: record.file, offset: record.offset, length: record.count)
            allowed = true
        } catch {
            logger.warning("inherited event failed", metadata: ["fanotify.fd": "\(record.fd)", "error": "\(error)"])
            allowed = false
        }
        do {
            try group.respond(fd: record.fd, allow: allowed)
        } catch {
            // ENOENT: the kernel no longer waits on it (the reader gave up or it was already answered).
            logger.debug("inherited event had no waiter", metadata: ["fanotify.fd": "\(record.fd)", "error": "\(error)"])
        }
    }

    /// One pass of the reader: the events one read returns.
    private func readOnce() -> Bool {
        do {
            let events = try group.readEvents(timeoutMilliseconds: 200)
            // A kill -9 here: read, neither recorded nor answered (`resumeInFlight(failingOthersBelow:)`).
            if !events.isEmpty { CrashPoint.reach("fanotify.read") }
            for event in events where event.fd >= 0 { dispatch(event) }
        } catch {
            logger.error("reading fanotify events failed", metadata: ["error": "\(error)"])
        }
        return true
    }

    private func dispatch(_ event: FanotifyEvent) {
        var st = stat()
        let known: BackingFile? =
            fstat(event.fd, &st) == 0
            ? state.withLock { state in
                state.statistics.events += 1
                return state.files[FileKey(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))]
            } : nil
        guard let file = known else {
            // Not a file we fill (e.g. a bootstrap fetched whole): allowed when the range holds data; a hole in
            // a file nobody serves must never read as zeros.
            let offset = event.offset ?? 0
            let end = offset + (event.count ?? UInt64(max(0, st.st_size)))
            let hole = lseek(event.fd, off_t(offset), clinux_seek_hole())
            let allowed = hole >= 0 && (UInt64(hole) >= end || UInt64(hole) >= UInt64(max(0, st.st_size)))
            answer(event.fd, allow: allowed)
            state.withLock { $0.statistics.passedThrough += 1 }
            return
        }
        let offset = event.offset ?? 0
        let count = event.count ?? UInt64(max(0, st.st_size))
        if filler.isPresent(file: file.id, offset: offset, length: count) {
            answer(event.fd, allow: true)
            state.withLock { $0.statistics.filled += 1 }
            return
        }
        let record = InFlightJournal.Record(fd: event.fd, file: file.id, offset: offset, count: count)
        do {
            try journal.record(record)
        } catch {
            logger.error("cannot journal an event; serving it anyway", metadata: ["error": "\(error)"])
        }
        let filler = self.filler
        let received = monotonicNanoseconds()
        Task.detached {
            var allowed = true
            do {
                try await filler.fill(file: file.id, offset: offset, length: count)
            } catch {
                allowed = false
                self.logger.warning(
                    "fill failed; the reader gets EIO",
                    metadata: ["file": "\(file.id)", "range.offset": "\(offset)", "range.count": "\(count)", "error": "\(error)"])
            }
            self.state.withLock { state in
                if allowed { state.statistics.filled += 1 } else { state.statistics.denied += 1 }
            }
            self.logger.debug(
                "reader waited",
                metadata: [
                    "file": "\(file.id)", "range.offset": "\(offset)", "range.count": "\(count)",
                    "wait.milliseconds": "\((monotonicNanoseconds() - received) / 1_000_000)",
                ])
            // Clear the slot before closing: once closed, the fd number can name the next event.
            self.answer(event.fd, allow: allowed, beforeClose: { try? self.journal.clear(fd: event.fd) })
        }
    }

    /// Writes the response, then closes the event's fd.
    private func answer(_ eventFD: Int32, allow: Bool, beforeClose: () -> Void = {}) {
        do {
            try group.respond(fd: eventFD, allow: allow)
        } catch {
            logger.error("fanotify response failed", metadata: ["fanotify.fd": "\(eventFD)", "error": "\(error)"])
        }
        beforeClose()
        close(eventFD)
    }
}
