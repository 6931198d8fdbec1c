import LinuxKernel

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a `SlotJournal` holds: a fixed-size record behind its type's magic word.
public protocol JournalRecord: Sendable {
    /// Marks a used slot (a zero word is a free one); tells one front end's journal from another's.
    static var magic: UInt32 { get }
    /// Bytes of a record after the magic word.
    static var encodedSize: Int { get }
    /// Exactly `encodedSize` bytes.
    func encoded() throws(SyscallError) -> [UInt8]
    /// Nil for bytes that are no valid record (a slot torn by a crash, or a foreign file).
    init?(decoding bytes: [UInt8])
}

/// The request journal of the on-demand front ends: each request a front end took from the kernel is
/// recorded before it is served and cleared once answered, so that a successor daemon finishes the ones its
/// predecessor read but never answered (the fd holder keeps the kernel side open, so their readers still
/// wait).
///
/// A sparse file of fixed slots, each the record's magic word and its encoded bytes:
///
///     offset size                 field
///     0      4                    magic (u32, 0 = free slot)
///     4      Record.encodedSize   the record
///
/// Which slot a request takes is the caller's choice (the fanotify front end uses the event's fd number,
/// the seed front end the first free slot). Written with pwrite and never fsynced: it must survive the
/// death of the process, not of the machine (a reboot drops the waiting readers too).
public final class SlotJournal<Record: JournalRecord>: Sendable {
    public static var slotSize: Int { 4 + Record.encodedSize }

    public let path: String
    private let fd: Int32

    public init(path: String) throws(SyscallError) {
        self.path = path
        fd = try retryingSyscall("open", path) { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
    }

    deinit { close(fd) }

    public func write(_ record: Record, slot: Int) throws(SyscallError) {
        var bytes = [UInt8](repeating: 0, count: 4)
        bytes.storeLE(Record.magic, at: 0)
        let encoded = try record.encoded()
        guard encoded.count == Record.encodedSize else {
            throw SyscallError(
                call: "pwrite", errno: EINVAL, subject: "\(path): record of \(encoded.count) bytes, not \(Record.encodedSize)")
        }
        try write(bytes + encoded, slot: slot)
    }

    public func clear(slot: Int) throws(SyscallError) {
        try write([UInt8](repeating: 0, count: Self.slotSize), slot: slot)
    }

    /// Every record written and not cleared, with its slot, in slot order.
    public func records() throws(SyscallError) -> [(slot: Int, record: Record)] {
        let bytes = try FileSystem.readFile(path)
        var found: [(slot: Int, record: Record)] = []
        var offset = 0
        while offset + Self.slotSize <= bytes.count {
            if bytes.loadLE(UInt32.self, at: offset) == Record.magic,
                let record = Record(decoding: Array(bytes[(offset + 4)..<(offset + Self.slotSize)]))
            {
                found.append((offset / Self.slotSize, record))
            }
            offset += Self.slotSize
        }
        return found
    }

    private func write(_ bytes: [UInt8], slot: Int) throws(SyscallError) {
        guard slot >= 0 else { return }
        let position = off_t(slot) * off_t(Self.slotSize)
        _ = try retryingSyscall("pwrite", path) { bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, position) } }
    }
}

extension Array where Element == UInt8 {
    mutating func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }
}
