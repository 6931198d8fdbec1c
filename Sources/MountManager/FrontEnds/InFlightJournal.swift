import SystemSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Records each pre-content event before it is served, so that a successor daemon can finish events its
/// predecessor read but never answered (the kernel keeps the reader blocked while a holder keeps the group).
///
/// A sparse file of fixed 32-byte slots indexed by the event's fd number:
///
///     offset size field
///     0      4    magic "FANJ" (0 = free slot)
///     4      4    event fd number (s32)
///     8      8    backing file id (s64)
///     16     8    offset (u64)
///     24     8    count (u64)
///
/// Written with pwrite and never fsynced: it must survive the death of the process, not of the machine
/// (a reboot drops the blocked readers too).
public final class InFlightJournal: Sendable {
    public struct Record: Equatable, Sendable {
        public var fd: Int32
        public var fileID: Int64
        public var offset: UInt64
        public var count: UInt64

        public init(fd: Int32, fileID: Int64, offset: UInt64, count: UInt64) {
            self.fd = fd
            self.fileID = fileID
            self.offset = offset
            self.count = count
        }
    }

    static let slotSize = 32
    static let magic: UInt32 = 0x4A4E_4146  // "FANJ" little-endian

    public let path: String
    private let fd: Int32

    public init(path: String) throws(SyscallError) {
        self.path = path
        fd = try retryingSyscall("open", path) { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
    }

    deinit { close(fd) }

    public func record(_ record: Record) throws(SyscallError) {
        var slot = [UInt8](repeating: 0, count: Self.slotSize)
        slot.storeLE(Self.magic, at: 0)
        slot.storeLE(UInt32(bitPattern: record.fd), at: 4)
        slot.storeLE(UInt64(bitPattern: record.fileID), at: 8)
        slot.storeLE(record.offset, at: 16)
        slot.storeLE(record.count, at: 24)
        try write(slot, fd: record.fd)
    }

    public func clear(fd eventFD: Int32) throws(SyscallError) {
        try write([UInt8](repeating: 0, count: Self.slotSize), fd: eventFD)
    }

    /// Every event recorded and not cleared.
    public func pending() throws(SyscallError) -> [Record] {
        let bytes = try FileSystem.readFile(path)
        var records: [Record] = []
        var offset = 0
        while offset + Self.slotSize <= bytes.count {
            if bytes.loadLE(UInt32.self, at: offset) == Self.magic {
                records.append(
                    Record(
                        fd: Int32(bitPattern: bytes.loadLE(UInt32.self, at: offset + 4)),
                        fileID: Int64(bitPattern: bytes.loadLE(UInt64.self, at: offset + 8)),
                        offset: bytes.loadLE(UInt64.self, at: offset + 16),
                        count: bytes.loadLE(UInt64.self, at: offset + 24)))
            }
            offset += Self.slotSize
        }
        return records
    }

    private func write(_ slot: [UInt8], fd eventFD: Int32) throws(SyscallError) {
        guard eventFD >= 0 else { return }
        let position = off_t(eventFD) * off_t(Self.slotSize)
        _ = try retryingSyscall("pwrite", path) { slot.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, position) } }
    }
}

extension Array where Element == UInt8 {
    mutating func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }
}
