import LinuxKernel

/// The fanotify front end's request journal (`SlotJournal`): one slot per pre-content event, indexed by the
/// event's fd number (unique while the event is open), 32 bytes each:
///
///     offset size field
///     0      4    magic "FANJ" (0 = free slot)
///     4      4    event fd number (s32)
///     8      8    backing file (s64): a blob's catalog id, or minus the image id for a bootstrap
///     16     8    offset (u64)
///     24     8    count (u64)
public final class InFlightJournal: Sendable {
    public struct Record: Equatable, Sendable, JournalRecord {
        public var fd: Int32
        public var file: BackingFileID
        public var offset: UInt64
        public var count: UInt64

        public init(fd: Int32, file: BackingFileID, offset: UInt64, count: UInt64) {
            self.fd = fd
            self.file = file
            self.offset = offset
            self.count = count
        }

        public static let magic: UInt32 = 0x4A4E_4146  // "FANJ" little-endian
        public static let encodedSize = 28

        public func encoded() -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: Self.encodedSize)
            bytes.storeLE(UInt32(bitPattern: fd), at: 0)
            let encodedFile: Int64
            switch file {
            case .blob(let id): encodedFile = id
            case .bootstrap(let imageID): encodedFile = -imageID
            }
            bytes.storeLE(UInt64(bitPattern: encodedFile), at: 4)
            bytes.storeLE(offset, at: 12)
            bytes.storeLE(count, at: 20)
            return bytes
        }

        public init?(decoding bytes: [UInt8]) {
            guard bytes.count == Self.encodedSize else { return nil }
            let encodedFile = Int64(bitPattern: bytes.loadLE(UInt64.self, at: 4))
            guard encodedFile != 0, encodedFile != .min else { return nil }
            self.init(
                fd: Int32(bitPattern: bytes.loadLE(UInt32.self, at: 0)),
                file: encodedFile > 0 ? .blob(encodedFile) : .bootstrap(imageID: -encodedFile),
                offset: bytes.loadLE(UInt64.self, at: 12), count: bytes.loadLE(UInt64.self, at: 20))
        }
    }

    private let slots: SlotJournal<Record>
    public var path: String { slots.path }

    public init(path: String) throws(SyscallError) {
        slots = try SlotJournal(path: path)
    }

    public func record(_ record: Record) throws(SyscallError) {
        try slots.write(record, slot: Int(record.fd))
    }

    public func clear(fd eventFD: Int32) throws(SyscallError) {
        try slots.clear(slot: Int(eventFD))
    }

    /// Every event recorded and not cleared.
    public func pending() throws(SyscallError) -> [Record] {
        try slots.records().map(\.record)
    }
}
