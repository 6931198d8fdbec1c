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

/// The cachefiles front end (Linux 5.19+ with CACHEFILES_ONDEMAND): EROFS is mounted with
/// `fsid=<id>[,domain_id=<d>]` over the kernel's own cache directory (`fscache/`); each cookie (the bootstrap,
/// each blob) that the kernel opens arrives as an OPEN, which is answered from the registrations; each missing
/// range arrives as a READ, served by having the filler make the range present in our backing file under
/// `cache/`, copying it into the object's anonymous fd (O_DIRECT: 4096-aligned buffers, offsets and
/// lengths), then READ_COMPLETE. A failed fill still completes the request, without writing: the reader gets
/// EIO, never a hang and never zeros.
///
/// Daemon restarts: the device fd must stay open in another process (`DescriptorHolder`), otherwise the
/// kernel fails every waiting reader and the mounts stay broken. A successor adopts the device, registers
/// the same blobs, starts, and calls `resumeInFlight()` (`restore`), after which the kernel reissues the
/// requests its predecessor took but never completed (with fresh OPENs for objects whose fds died).
public final class CachefilesFrontEnd: Sendable {
    /// A cookie this front end can serve: the volume key (`erofs,<domain or fsid>`), the cookie key (the fsid
    /// for a bootstrap, the device tag for a blob), the object size given to the kernel and our backing file.
    public struct Registration: Equatable, Sendable {
        public var id: BackingFileID
        public var volumeKey: String
        public var cookieKey: [UInt8]
        public var size: UInt64
        public var backingPath: String

        public init(id: BackingFileID, volumeKey: String, cookieKey: [UInt8], size: UInt64, backingPath: String) {
            self.id = id
            self.volumeKey = volumeKey
            self.cookieKey = cookieKey
            self.size = size
            self.backingPath = backingPath
        }
    }

    public struct Statistics: Equatable, Sendable {
        public var opens = 0
        public var refusedOpens = 0
        public var reads = 0
        public var filled = 0
        public var failed = 0
        public var closes = 0
        public var malformed = 0
        public var bytesCopied: UInt64 = 0
    }

    private struct Key: Hashable {
        var volume: String
        var cookie: [UInt8]
    }

    private struct Object {
        var anonFD: Int32
        var registration: Registration
    }

    private struct State {
        var registrations: [Key: Registration] = [:]
        var objects: [UInt32: Object] = [:]
        var statistics = Statistics()
    }

    /// The copy buffer's size: one O_DIRECT write per MiB of a request.
    static let copyUnit = 1 << 20
    static let alignment = 4096

    public let device: CachefilesDevice
    private let filler: any RangeFiller
    private let logger: Logger
    private let state = Mutex(State())
    private let reader = ReaderThread(label: "cachefiles.reader")
    private let copyQueue = DispatchQueue(label: "cachefiles.copy", attributes: .concurrent)

    public init(device: CachefilesDevice, filler: any RangeFiller, logger: Logger) {
        self.device = device
        self.filler = filler
        self.logger = logger
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// The EROFS mount for an image served by this front end: `-t erofs -o fsid=<fsid>[,domain_id=<d>] none`.
    public static func erofsMount(fsid: String, domainID: String? = nil) -> KernelMount {
        var options = ["ro", "fsid=\(fsid)"]
        if let domainID { options.append("domain_id=\(domainID)") }
        return KernelMount(type: "erofs", source: "none", options: options)
    }

    /// Starts serving messages on a thread of its own.
    public func start() {
        guard reader.start({ self.readOnce() }) else { return }
        logger.info("cachefiles front end serving", metadata: ["cachefiles.fd": "\(device.fd)"])
    }

    /// Stops reading messages. Anonymous fds stay open (the objects stay usable) until `closeObjects()`.
    public func stop() {
        reader.stop()
    }

    /// Closes every object's anonymous fd (after the mounts are gone, or to simulate a dead daemon).
    public func closeObjects() {
        let objects = state.withLock { state in
            defer { state.objects = [:] }
            return state.objects
        }
        for object in objects.values { close(object.anonFD) }
    }

    /// Serves OPENs of this cookie from now on.
    public func register(_ registration: Registration) {
        state.withLock { $0.registrations[Key(volume: registration.volumeKey, cookie: registration.cookieKey)] = registration }
    }

    /// Stops serving OPENs of the file's cookies; returns the registrations it had.
    @discardableResult
    public func unregister(id: BackingFileID) -> [Registration] {
        state.withLock { state in
            let removed = state.registrations.values.filter { $0.id == id }
            state.registrations = state.registrations.filter { $0.value.id != id }
            return removed
        }
    }

    /// For a successor on an inherited device: asks the kernel (`restore`) to hand out again every request
    /// the predecessor took and never completed. Call after registering and `start()`.
    public func resumeInFlight() throws(SyscallError) {
        try device.restore()
        logger.notice("cachefiles requests restored for a successor")
    }

    // MARK: - Serving

    /// One pass of the reader: at most one message.
    private func readOnce() -> Bool {
        let bytes: [UInt8]?
        do {
            bytes = try device.readMessage(timeoutMilliseconds: 200)
        } catch {
            logger.error("reading /dev/cachefiles failed", metadata: ["error": "\(error)"])
            usleep(100_000)
            return true
        }
        guard let bytes else { return true }
        do {
            dispatch(try CachefilesMessage.parse(bytes))
        } catch {
            skipMalformed(bytes, error)
        }
        return true
    }

    private func dispatch(_ message: CachefilesMessage) {
        switch message {
        case .open(let open): serveOpen(open)
        case .close(_, let objectID):
            let object = state.withLock { $0.objects.removeValue(forKey: objectID) }
            if let object { close(object.anonFD) }
            // Counted once the fd is closed: a CLOSE the statistics show is done.
            state.withLock { $0.statistics.closes += 1 }
        case .read(let messageID, let objectID, let offset, let length):
            serveRead(messageID: messageID, objectID: objectID, offset: offset, length: length)
        }
    }

    private func serveOpen(_ open: CachefilesOpen) {
        let registration = state.withLock { state in
            state.statistics.opens += 1
            return state.registrations[Key(volume: open.volumeKey, cookie: open.cookieKey)]
        }
        guard let registration else {
            logger.warning(
                "OPEN of an unknown cookie refused",
                metadata: [
                    "cachefiles.volume": "\(open.volumeKey)", "cachefiles.cookie": "\(String(decoding: open.cookieKey, as: UTF8.self))",
                ])
            state.withLock { $0.statistics.refusedOpens += 1 }
            // The fd is of no use: close it before answering, so nothing observes it open after the reply.
            close(open.fd)
            reply(open, size: -Int64(ENOENT))
            return
        }
        let replaced = state.withLock { state in
            state.objects.updateValue(Object(anonFD: open.fd, registration: registration), forKey: open.objectID)
        }
        if let replaced, replaced.anonFD != open.fd { close(replaced.anonFD) }
        reply(open, size: Int64(registration.size))
    }

    private func reply(_ open: CachefilesOpen, size: Int64) {
        do {
            try device.completeOpen(messageID: open.messageID, size: size)
        } catch {
            logger.error("copen failed", metadata: ["cachefiles.msg": "\(open.messageID)", "error": "\(error)"])
        }
    }

    private func serveRead(messageID: UInt32, objectID: UInt32, offset: UInt64, length: UInt64) {
        // A duplicate of the anonymous fd lets a CLOSE close the original while this request is served.
        let served: (fd: Int32, registration: Registration)? = state.withLock { state in
            state.statistics.reads += 1
            guard let object = state.objects[objectID] else { return nil }
            let copy = fcntl(object.anonFD, F_DUPFD_CLOEXEC, 0)
            return copy >= 0 ? (copy, object.registration) : nil
        }
        guard let served else {
            // Without the object's fd the request cannot be completed; the kernel fails it when the object goes.
            logger.error("READ for an unknown object", metadata: ["cachefiles.object": "\(objectID)", "cachefiles.msg": "\(messageID)"])
            state.withLock { $0.statistics.failed += 1 }
            return
        }
        let filler = self.filler
        Task.detached {
            // The range stays on disk until it is copied into the kernel's cache file (the copy may queue behind
            // others for longer than the eviction grace): an eviction in between would copy a hole, as zeros.
            var lease: RangeLease?
            do {
                lease = try await filler.fillAndHold(file: served.registration.id, offset: offset, length: length)
            } catch {
                self.logger.warning(
                    "fill failed; the reader gets EIO",
                    metadata: [
                        "file": "\(served.registration.id)", "range.offset": "\(offset)", "range.count": "\(length)",
                        "error": "\(error)",
                    ])
            }
            let held = lease
            self.copyQueue.async {
                self.finishRead(
                    messageID: messageID, anonFD: served.fd, registration: served.registration, offset: offset, length: length,
                    filled: held != nil)
                held?.end()
            }
        }
    }

    /// Copies the range (when filled) and completes the request in every case.
    private func finishRead(messageID: UInt32, anonFD: Int32, registration: Registration, offset: UInt64, length: UInt64, filled: Bool) {
        defer { close(anonFD) }
        var copied: UInt64 = 0
        var success = filled
        if filled {
            do {
                copied = try Self.copyAligned(
                    from: registration.backingPath, to: anonFD, offset: offset, length: length, size: registration.size)
            } catch {
                success = false
                logger.error(
                    "copy into the cache file failed; the reader gets EIO",
                    metadata: ["file": "\(registration.id)", "error": "\(error)"])
            }
        }
        do {
            try CachefilesDevice.completeRead(anonFD: anonFD, messageID: messageID)
        } catch {
            logger.error("READ_COMPLETE failed", metadata: ["cachefiles.msg": "\(messageID)", "error": "\(error)"])
        }
        state.withLock { state in
            if success { state.statistics.filled += 1 } else { state.statistics.failed += 1 }
            state.statistics.bytesCopied += copied
        }
    }

    /// pread from the backing file, pwrite to the anonymous fd, in 4096-aligned pieces through an aligned
    /// buffer (the cache file is O_DIRECT). Bytes past the backing file's end are zeros; the range is
    /// clipped to the object size rounded up to a block.
    static func copyAligned(
        from path: String, to anonFD: Int32, offset: UInt64, length: UInt64, size: UInt64
    ) throws(SyscallError) -> UInt64 {
        let block = UInt64(alignment)
        let start = offset / block * block
        let end = min((offset + length + block - 1) / block * block, (size + block - 1) / block * block)
        guard end > start else { return 0 }
        let input = try retryingSyscall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(input) }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: copyUnit, alignment: alignment)
        defer { buffer.deallocate() }
        var position = start
        while position < end {
            let piece = Int(min(UInt64(copyUnit), end - position))
            var got = 0
            while got < piece {
                let n = try retryingSyscall("pread", path) { pread(input, buffer + got, piece - got, off_t(position) + off_t(got)) }
                if n == 0 { break }
                got += n
            }
            if got < piece { (buffer + got).initializeMemory(as: UInt8.self, repeating: 0, count: piece - got) }
            var put = 0
            while put < piece {
                let n = try retryingSyscall("pwrite", "cachefiles object") {
                    pwrite(anonFD, buffer + put, piece - put, off_t(position) + off_t(put))
                }
                if n == 0 { throw SyscallError(call: "pwrite", errno: EIO, subject: "cachefiles object") }
                put += n
            }
            position += UInt64(piece)
        }
        return end - start
    }

    /// Logs and skips a message that does not parse. An OPEN's fd is closed (after checking it really is a
    /// cachefiles anonymous fd) and the OPEN refused, so the mount fails instead of waiting.
    private func skipMalformed(_ bytes: [UInt8], _ error: KernelError) {
        state.withLock { $0.statistics.malformed += 1 }
        logger.error("malformed cachefiles message skipped", metadata: ["error": "\(error)", "cachefiles.bytes": "\(bytes.count)"])
        guard case .keySizes(let messageID, _, _, let fd) = error else { return }
        if fd >= 0, Self.isAnonymousCachefilesFD(fd) { close(fd) }
        try? device.completeOpen(messageID: messageID, size: -Int64(EINVAL))
    }

    static func isAnonymousCachefilesFD(_ fd: Int32) -> Bool {
        FileSystem.readLink("/proc/self/fd/\(fd)") == "anon_inode:[cachefiles]"
    }
}
