import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One pre-content access event: the kernel holds the reader until it gets an answer for `fd`.
public struct FanotifyEvent: Equatable, Sendable {
    /// The event's file descriptor number; also the key the response is matched by.
    public var fd: Int32
    public var pid: Int32
    public var mask: UInt64
    /// The byte range the reader needs (FAN_EVENT_INFO_TYPE_RANGE), if the event carries one.
    public var offset: UInt64?
    public var count: UInt64?

    public init(fd: Int32, pid: Int32, mask: UInt64, offset: UInt64? = nil, count: UInt64? = nil) {
        self.fd = fd
        self.pid = pid
        self.mask = mask
        self.offset = offset
        self.count = count
    }
}

/// A fanotify group of class FAN_CLASS_PRE_CONTENT: marks, event reading and responses.
///
/// Owns its descriptor. The descriptor can also be handed to another process (the holder) so that the group
/// outlives this one: a released group would let every blocked reader see holes as zeros.
public final class FanotifyGroup: @unchecked Sendable {
    // @unchecked: `fd` is immutable after init; reads and writes on a fanotify fd are thread-safe in the
    // kernel, and responses are single write(2) calls.
    public let fd: Int32

    /// Creates a new group (needs CAP_SYS_ADMIN and Linux 6.14+ for pre-content events).
    public init() throws(SyscallError) {
        // O_LARGEFILE is implied on 64-bit kernels (the kernel forces it for fanotify event fds there).
        // FAN_UNLIMITED_QUEUE: past `fs.fanotify.max_queued_events` unread events (16384 by default; a start-up
        // or a stall of the reader is enough) the kernel drops new ones, and a dropped permission event is an
        // allowed read: the reader would get the holes as zeros. Unread events cost kernel memory instead.
        let flags = UInt32(FAN_CLASS_PRE_CONTENT) | UInt32(FAN_CLOEXEC) | UInt32(FAN_UNLIMITED_QUEUE)
        fd = try retryingSyscall("fanotify_init") { fanotify_init(flags, UInt32(O_RDONLY | O_CLOEXEC)) }
    }

    /// Adopts an existing group descriptor (received from the holder).
    public init(adopting fd: Int32) {
        self.fd = fd
    }

    deinit { close(fd) }

    /// Marks a whole mount for FAN_PRE_ACCESS: every read of a file under it asks us first.
    public func markMount(_ path: String) throws(SyscallError) {
        try retryingSyscall("fanotify_mark", path) {
            fanotify_mark(fd, UInt32(FAN_MARK_ADD) | UInt32(FAN_MARK_MOUNT), UInt64(FAN_PRE_ACCESS), AT_FDCWD, path)
        }
    }

    /// Stops pre-content events for one file (an inode ignore mark that survives modification): for backing
    /// files that are complete, so reads of local data never wait on the daemon.
    public func ignore(_ path: String) throws(SyscallError) {
        try retryingSyscall("fanotify_mark(ignore)", path) {
            fanotify_mark(
                fd, UInt32(FAN_MARK_ADD) | UInt32(FAN_MARK_IGNORED_MASK) | UInt32(FAN_MARK_IGNORED_SURV_MODIFY), UInt64(FAN_PRE_ACCESS),
                AT_FDCWD, path)
        }
    }

    /// Removes the ignore mask `ignore` set on `path`'s inode; a file without one is fine (ENOENT).
    public func unignore(_ path: String) throws(SyscallError) {
        do {
            try retryingSyscall("fanotify_mark(unignore)", path) {
                fanotify_mark(fd, UInt32(FAN_MARK_REMOVE) | UInt32(FAN_MARK_IGNORED_MASK), UInt64(FAN_PRE_ACCESS), AT_FDCWD, path)
            }
        } catch  where error.errno == ENOENT {
            return
        }
    }

    public func unmarkMount(_ path: String) throws(SyscallError) {
        try retryingSyscall("fanotify_mark(remove)", path) {
            fanotify_mark(fd, UInt32(FAN_MARK_REMOVE) | UInt32(FAN_MARK_MOUNT), UInt64(FAN_PRE_ACCESS), AT_FDCWD, path)
        }
    }

    /// Blocks until events arrive (or `poll` times out: then returns []), and parses them.
    public func readEvents(timeoutMilliseconds: Int32 = -1) throws -> [FanotifyEvent] {
        var pollfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = try retryingSyscall("poll(fanotify)") { poll(&pollfd, 1, timeoutMilliseconds) }
        guard ready > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let count = try buffer.withUnsafeMutableBytes { raw throws(SyscallError) -> Int in
            try retryingSyscall("read(fanotify)") { read(fd, raw.baseAddress, raw.count) }
        }
        return try Self.parse(Array(buffer[0..<count]))
    }

    /// Parses a buffer of `fanotify_event_metadata` records with their info records.
    ///
    ///     fanotify_event_metadata (24 bytes): u32 event_len, u8 vers, u8 reserved, u16 metadata_len,
    ///                                         u64 mask, s32 fd, s32 pid
    ///     then info records up to event_len: {u8 info_type, u8 pad, u16 len, ...}
    ///     FAN_EVENT_INFO_TYPE_RANGE (24 bytes): header, u32 pad, u64 offset, u64 count
    public static func parseForTesting(_ bytes: [UInt8]) throws(KernelError) -> [FanotifyEvent] { try parse(bytes) }

    static func parse(_ bytes: [UInt8]) throws(KernelError) -> [FanotifyEvent] {
        var events: [FanotifyEvent] = []
        var offset = 0
        let metadataLength = Int(clinux_fan_event_metadata_len())
        while offset + metadataLength <= bytes.count {
            let eventLength = Int(bytes.loadLE(UInt32.self, at: offset))
            let version = bytes[offset + 4]
            guard version == UInt8(FANOTIFY_METADATA_VERSION) else { throw .unsupportedFanotifyVersion(Int(version)) }
            guard eventLength >= metadataLength, offset + eventLength <= bytes.count else {
                throw .malformedEvent(offset: offset, detail: "event length \(eventLength)")
            }
            let metadataLen = Int(bytes.loadLE(UInt16.self, at: offset + 6))
            var event = FanotifyEvent(
                fd: Int32(bitPattern: bytes.loadLE(UInt32.self, at: offset + 16)),
                pid: Int32(bitPattern: bytes.loadLE(UInt32.self, at: offset + 20)),
                mask: bytes.loadLE(UInt64.self, at: offset + 8))
            var info = offset + metadataLen
            while info + 4 <= offset + eventLength {
                let type = bytes[info]
                let length = Int(bytes.loadLE(UInt16.self, at: info + 2))
                guard length >= 4, info + length <= offset + eventLength else {
                    throw .malformedEvent(offset: info, detail: "info record length \(length)")
                }
                if type == UInt8(FAN_EVENT_INFO_TYPE_RANGE) {
                    guard length >= MemoryLayout<clinux_fanotify_range_info>.size else {
                        throw .malformedEvent(offset: info, detail: "range record of \(length) bytes")
                    }
                    event.offset = bytes.loadLE(UInt64.self, at: info + 8)
                    event.count = bytes.loadLE(UInt64.self, at: info + 16)
                }
                info += length
            }
            events.append(event)
            offset += eventLength
        }
        return events
    }

    /// Fails with `code` every event still waiting for an answer under an fd number in `numbers` (a dead
    /// reader's: the numbers named its descriptors, which died with it); a number nothing waits under costs one
    /// ENOENT. Returns how many waiting readers it failed.
    /// Numbers in `skipping` are left alone. Blocking: up to a million writes.
    public func failWaiting(numbers: Range<Int32>, skipping: Set<Int32> = [], errno code: Int32 = EIO) -> Int {
        var failed = 0
        for number in numbers where !skipping.contains(number) {
            var response = fanotify_response(fd: number, response: clinux_fan_deny_errno(code))
            let written = withUnsafeBytes(of: &response) { write(fd, $0.baseAddress, $0.count) }
            if written == MemoryLayout<fanotify_response>.size { failed += 1 }
        }
        return failed
    }

    /// Answers an event by its fd number: allow (the range is now present) or deny with an errno (the
    /// reader's syscall fails with it). Works for events read by a predecessor process too.
    public func respond(fd eventFD: Int32, allow: Bool, errno code: Int32 = EIO) throws(SyscallError) {
        var response = fanotify_response(fd: eventFD, response: allow ? UInt32(FAN_ALLOW) : clinux_fan_deny_errno(code))
        _ = try retryingSyscall("write(fanotify response)", "fd \(eventFD)") {
            withUnsafeBytes(of: &response) { write(fd, $0.baseAddress, $0.count) }
        }
    }
}

extension Array where Element == UInt8 {
    /// Little-endian load of a fixed-width integer at a byte offset (bounds checked by the caller).
    package func loadLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value |= T(self[offset + index]) << (8 * index) }
        return value
    }
}
