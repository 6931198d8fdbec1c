import CLinux
import Digests
import Dispatch
import LinuxKernel
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Writes a downloaded blob to its file and hashes it, keeping the receiving thread down to one memcpy per
/// byte: the transfer thread fills stage buffers; a serial queue hashes each full stage in order and hands it
/// to a writer queue, which writes it at its offset and returns the buffer to a small pool. The pool bounds
/// memory (`stageCount` stages of `stageBytes`, 32 MiB, allocated as needed and freed with the writer) and
/// holds the transfer back when the disk is the slower side; 8 stages absorb the disk's pauses on our
/// machines, where 4 left the transfer waiting up to 100 ms per 256 MiB.
///
/// Large blobs are written with O_DIRECT: no copy into the page cache, no dirty pages left for the final
/// fsync, and a multi-gigabyte pull does not evict the page cache of running containers. A file system that
/// refuses O_DIRECT (at open or on a write) gets buffered writes, whose writeback is started per stage so the
/// final fsync finds little left to do.
///
/// `@unchecked Sendable`: `current`, `filled` and `appendOffset` belong to the single writer (the transfer
/// thread, then `finish()` after the transfer completed); `hasher` is touched only on `hashQueue` (serial) and
/// by `finish()` after draining it; `pool`, `direct` and `failure` are behind mutexes; a stage buffer is owned
/// by exactly one side at a time (writer -> hash queue -> write queue -> pool).
final class PipelinedBlobWriter: @unchecked Sendable {
    /// Blobs at least this large are written with O_DIRECT.
    static let directMinimumBytes: Int64 = 16 << 20
    static let stageBytes = 4 << 20
    static let stageCount = 8
    /// O_DIRECT needs buffers, offsets and lengths aligned to the device's logical block; a page covers every
    /// device we meet.
    static let alignment = 4096

    /// One stage handed between queues. `@unchecked Sendable`: the pointer is owned by one queue at a time.
    private struct Stage: @unchecked Sendable {
        let buffer: UnsafeMutableRawPointer
        let length: Int
        let offset: Int64
    }

    let path: String
    private let fd: Int32
    private let stageBytes: Int
    private let hashQueue = DispatchQueue(label: "blob.hash", qos: .userInitiated)
    private let writeQueue = DispatchQueue(label: "blob.write", qos: .userInitiated, attributes: .concurrent)
    private let inFlight = DispatchGroup()
    /// Created at 0 and signalled once per stage in `init`: libdispatch traps when a semaphore is released
    /// below its initial value, which a writer abandoned mid-blob (a failed transfer) would be.
    private let freeStages = DispatchSemaphore(value: 0)
    private let pool = Mutex<[UnsafeMutableRawPointer]>([])
    private let direct: Mutex<Bool>
    private let failure = Mutex<SyscallError?>(nil)
    private var hasher = SHA256()
    private var current: UnsafeMutableRawPointer?
    private var filled = 0
    private var appendOffset: Int64 = 0

    /// Creates (truncating) `path`. `expectedSize` picks O_DIRECT and the stage size.
    init(path: String, expectedSize: Int64?) throws(SyscallError) {
        self.path = path
        // A small blob needs no more than its own size, rounded up to the alignment.
        let alignedSize = expectedSize.map { ($0 + Int64(Self.alignment) - 1) / Int64(Self.alignment) * Int64(Self.alignment) }
        stageBytes = Int(min(Int64(Self.stageBytes), max(Int64(Self.alignment), alignedSize ?? Int64(Self.stageBytes))))
        let flags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC
        var opened: Int32 = -1
        var useDirect = (expectedSize ?? 0) >= Self.directMinimumBytes
        if useDirect {
            opened = open(path, flags | clinux_o_direct(), 0o644)
            if opened < 0 && errno == EINVAL { useDirect = false }
        }
        if opened < 0 {
            useDirect = false
            opened = try retryingSyscall("open", path) { open(path, flags, 0o644) }
        }
        fd = opened
        direct = Mutex(useDirect)
        for _ in 0..<Self.stageCount { freeStages.signal() }
    }

    deinit {
        // Every queued block holds `self`, so nothing is in flight here.
        if let current { free(current) }
        pool.withLock { for buffer in $0 { free(buffer) } }
        close(fd)
    }

    /// Whether stages are being written with O_DIRECT (false after a fallback).
    var isDirect: Bool { direct.withLock { $0 } }

    /// Copies `bytes` into the pipeline at the running offset; waits for a free stage when all are busy.
    func append(_ bytes: UnsafeRawBufferPointer) throws(SyscallError) {
        if let error = failure.withLock({ $0 }) { throw error }
        var rest = bytes
        while !rest.isEmpty {
            let buffer: UnsafeMutableRawPointer
            if let current { buffer = current } else { buffer = try takeStage() }
            current = buffer
            let n = min(stageBytes - filled, rest.count)
            (buffer + filled).copyMemory(from: rest.baseAddress!, byteCount: n)
            filled += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            if filled == stageBytes { submitCurrent() }
        }
    }

    /// Writes what is left, waits for every stage, makes the file durable and returns the digest of all bytes
    /// appended.
    func finish() throws(SyscallError) -> [UInt8] {
        inFlight.wait()
        if filled > 0 {
            // The last stage is short: O_DIRECT would need its length aligned, so it goes through the cache.
            if filled % Self.alignment != 0 { try stopDirect() }
            submitCurrent()
            inFlight.wait()
        }
        if let error = failure.withLock({ $0 }) { throw error }
        try retryingSyscall("fsync", path) { fsync(fd) }
        return hashQueue.sync { hasher.finalize() }
    }

    private func takeStage() throws(SyscallError) -> UnsafeMutableRawPointer {
        freeStages.wait()
        if let buffer = pool.withLock({ $0.popLast() }) { return buffer }
        var pointer: UnsafeMutableRawPointer?
        let rc = posix_memalign(&pointer, Self.alignment, stageBytes)
        guard rc == 0, let pointer else {
            freeStages.signal()
            throw SyscallError(call: "posix_memalign", errno: rc == 0 ? ENOMEM : rc, subject: path)
        }
        return pointer
    }

    private func submitCurrent() {
        guard let buffer = current else { return }
        let stage = Stage(buffer: buffer, length: filled, offset: appendOffset)
        current = nil
        appendOffset += Int64(filled)
        filled = 0
        inFlight.enter()
        hashQueue.async {
            self.hasher.update(UnsafeRawBufferPointer(start: stage.buffer, count: stage.length))
            self.writeQueue.async {
                self.write(stage)
                self.pool.withLock { $0.append(stage.buffer) }
                self.freeStages.signal()
                self.inFlight.leave()
            }
        }
    }

    private func write(_ stage: Stage) {
        guard failure.withLock({ $0 }) == nil else { return }
        var done = 0
        while done < stage.length {
            let n = pwrite(fd, stage.buffer + done, stage.length - done, off_t(stage.offset) + off_t(done))
            if n > 0 {
                done += n
                continue
            }
            let code = n < 0 ? errno : EIO
            if code == EINTR { continue }
            if code == EINVAL && isDirect, (try? stopDirect()) != nil { continue }
            failure.withLock { $0 = $0 ?? SyscallError(call: "pwrite", errno: code, subject: path) }
            return
        }
        if !isDirect { _ = clinux_start_writeback(fd, stage.offset, Int64(stage.length)) }
    }

    /// Switches the file to buffered writes (a file system that takes O_DIRECT at open but not these writes).
    private func stopDirect() throws(SyscallError) {
        try direct.withLock { (isOn: inout Bool) throws(SyscallError) in
            guard isOn else { return }
            let flags = try retryingSyscall("fcntl(F_GETFL)", path) { fcntl(fd, F_GETFL) }
            try retryingSyscall("fcntl(F_SETFL)", path) { fcntl(fd, F_SETFL, flags & ~clinux_o_direct()) }
            isOn = false
        }
    }
}
