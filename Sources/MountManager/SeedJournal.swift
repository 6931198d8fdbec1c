import LinuxKernel
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The seed front end's request journal (`SlotJournal`): a request takes the first free slot when it is
/// read and frees it after its `done <id>` (a devnode request, once read, is never handed out again), 288
/// bytes each:
///
///     offset size field
///     0      4    magic "SEDJ" (0 = free slot)
///     4      4    reserved (0)
///     8      280  the request exactly as read (`struct cachefiles_req_in`, see `SeedRequest`)
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

    /// A slot's contents after the magic word.
    struct Entry: JournalRecord {
        var request: SeedRequest

        static let magic: UInt32 = 0x4A44_4553  // "SEDJ" little-endian
        static let encodedSize = 4 + SeedRequest.size

        func encoded() throws(SyscallError) -> [UInt8] {
            do {
                return [0, 0, 0, 0] + (try request.encoded())
            } catch {
                throw SyscallError(call: "pwrite", errno: EINVAL, subject: "seed journal: unencodable request \(request.id)")
            }
        }

        init(request: SeedRequest) { self.request = request }

        init?(decoding bytes: [UInt8]) {
            guard bytes.count == Self.encodedSize, let request = try? SeedRequest.parse(Array(bytes[4...])) else { return nil }
            self.request = request
        }
    }

    private let slots: SlotJournal<Entry>
    public var path: String { slots.path }
    /// The records a predecessor left, as found when the journal was opened (before this process recorded any).
    public let inherited: [Record]
    /// Slots holding a record (recorded by us, or inherited and not yet cleared).
    private let used: Mutex<Set<Int>>

    /// Opens (or creates) the journal; inherited records keep their slots until cleared.
    public init(path: String) throws(SyscallError) {
        slots = try SlotJournal(path: path)
        let found = try slots.records().map { Record(slot: $0.slot, request: $0.record.request) }
        inherited = found
        used = Mutex(Set(found.map(\.slot)))
    }

    /// Writes `request` into a free slot and returns the slot, to be cleared once `done` was written.
    public func record(_ request: SeedRequest) throws(SyscallError) -> Int {
        let slot = used.withLock { used in
            var slot = 0
            while used.contains(slot) { slot += 1 }
            used.insert(slot)
            return slot
        }
        do {
            try slots.write(Entry(request: request), slot: slot)
        } catch {
            _ = used.withLock { $0.remove(slot) }
            throw error
        }
        return slot
    }

    /// Frees a slot after its request was answered.
    public func clear(slot: Int) throws(SyscallError) {
        defer { _ = used.withLock { $0.remove(slot) } }
        try slots.clear(slot: slot)
    }

    /// Every request recorded and not cleared, by slot.
    public func pending() throws(SyscallError) -> [Record] {
        try slots.records().map { Record(slot: $0.slot, request: $0.record.request) }
    }
}
