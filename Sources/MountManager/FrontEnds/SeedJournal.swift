import Synchronization
import SystemSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Records each seed devnode request before it is served, so that a successor daemon can finish requests
/// its predecessor read but never answered with `done <id>` (the devnode, kept open by the fd holder, keeps
/// the reader waiting; once read, a request is never handed out again).
///
/// A sparse file of fixed 288-byte slots; a slot is taken for a request and freed after its `done`:
///
///     offset size field
///     0      4    magic "SEDJ" (0 = free slot)
///     4      4    reserved (0)
///     8      280  the request exactly as read (`struct cachefiles_req_in`, see `SeedRequest`)
///
/// Written with pwrite and never fsynced: it must survive the death of the process, not of the machine
/// (a reboot drops the waiting readers too).
public final class SeedJournal: Sendable {
    /// A recorded request and the slot it occupies.
    public struct Record: Equatable, Sendable {
        public var slot: Int
        public var request: SeedRequest

        public init(slot: Int, request: SeedRequest) {
            self.slot = slot
            self.request = request
        }
    }

    static let slotSize = 8 + SeedRequest.size
    static let magic: UInt32 = 0x4A44_4553  // "SEDJ" little-endian

    public let path: String
    /// The records a predecessor left, as found when the journal was opened (before this process recorded any).
    public let inherited: [Record]
    private let fd: Int32
    /// Slots holding a record (recorded by us, or inherited and not yet cleared).
    private let used: Mutex<Set<Int>>

    /// Opens (or creates) the journal; inherited records keep their slots until cleared.
    public init(path: String) throws(SyscallError) {
        self.path = path
        fd = try retryingSyscall("open", path) { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        let found: [Record]
        do {
            found = Self.records(in: try FileSystem.readFile(path))
        } catch {
            close(fd)
            throw error
        }
        inherited = found
        used = Mutex(Set(found.map(\.slot)))
    }

    deinit { close(fd) }

    /// Writes `request` into a free slot and returns the slot, to be cleared once `done` was written.
    public func record(_ request: SeedRequest) throws(SyscallError) -> Int {
        let encoded: [UInt8]
        do {
            encoded = try request.encoded()
        } catch {
            throw SyscallError(call: "pwrite", errno: EINVAL, subject: "\(path): unencodable request \(request.id)")
        }
        let slot = used.withLock { used in
            var slot = 0
            while used.contains(slot) { slot += 1 }
            used.insert(slot)
            return slot
        }
        var bytes = [UInt8](repeating: 0, count: Self.slotSize)
        bytes.storeLE(Self.magic, at: 0)
        bytes.replaceSubrange(8..<Self.slotSize, with: encoded)
        do {
            try write(bytes, slot: slot)
        } catch {
            _ = used.withLock { $0.remove(slot) }
            throw error
        }
        return slot
    }

    /// Frees a slot after its request was answered.
    public func clear(slot: Int) throws(SyscallError) {
        defer { _ = used.withLock { $0.remove(slot) } }
        try write([UInt8](repeating: 0, count: Self.slotSize), slot: slot)
    }

    /// Every request recorded and not cleared, by slot.
    public func pending() throws(SyscallError) -> [Record] {
        Self.records(in: try FileSystem.readFile(path))
    }

    private static func records(in bytes: [UInt8]) -> [Record] {
        var records: [Record] = []
        var offset = 0
        while offset + Self.slotSize <= bytes.count {
            if bytes.loadLE(UInt32.self, at: offset) == Self.magic,
                let request = try? SeedRequest.parse(Array(bytes[(offset + 8)..<(offset + Self.slotSize)]))
            {
                records.append(Record(slot: offset / Self.slotSize, request: request))
            }
            offset += Self.slotSize
        }
        return records
    }

    private func write(_ bytes: [UInt8], slot: Int) throws(SyscallError) {
        let position = off_t(slot) * off_t(Self.slotSize)
        _ = try retryingSyscall("pwrite", path) { bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, position) } }
    }
}
