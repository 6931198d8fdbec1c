import BlobStore
import CLinux
import Dispatch
import Foundation
import MountManager
import Synchronization
import SystemSupport

#if canImport(Glibc)
import Glibc
#endif

/// An in-process emulation of the seed design's devnode `/dev/cachefiles_ondemand` (no kernel implements
/// it). The daemon's end is one side of a SOCK_SEQPACKET socket pair, which gives the devnode's semantics:
/// each read returns exactly one `struct cachefiles_req_in` (280 bytes, built by `SeedRequest.encoded()`),
/// poll reports POLLIN while a request waits, and each write is one text command (`dir`, `tag`,
/// `bind ondemand`, `done <id>`). The "kernel" side is `read(path:offset:count:)`: like a filesystem read
/// of a prepared backing file, it returns at once when the range holds data, else queues a request and
/// blocks the caller until the daemon writes `done <id>`, then re-checks the range: still a hole gives EIO.
/// When the daemon's end closes, every waiting and later reader gets EIO (fail-safe, as cachefiles does).
final class SeedDevnodeEmulator: Sendable {
    struct State {
        var nextID: UInt64 = 1
        var waiting: [UInt64: DispatchSemaphore] = [:]
        var directory: String?
        var tag: String?
        var bound = false
        var closed = false
        var badCommands: [String] = []
        var requests: [SeedRequest] = []
    }

    let daemonFD: Int32
    private let kernelFD: Int32
    let state = Mutex(State())
    /// How long a reader waits for `done` before giving up with ETIMEDOUT (a hang, reported as a failure).
    let timeoutSeconds: Int

    init(timeoutSeconds: Int = 20) throws {
        var pair: [Int32] = [-1, -1]
        try retryingSyscall("socketpair") { socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) }
        daemonFD = pair[0]
        kernelFD = pair[1]
        self.timeoutSeconds = timeoutSeconds
        let thread = Thread { self.commandLoop() }
        thread.start()
    }

    /// Closes the kernel's end (after the daemon closed its own, the command loop has ended).
    func shutdown() {
        Glibc.shutdown(kernelFD, Int32(SHUT_RDWR))
    }

    /// The daemon dies: its end of the device closes.
    func closeDaemonEnd() {
        close(daemonFD)
    }

    private func commandLoop() {
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(kernelFD, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            handle(String(decoding: buffer[0..<n], as: UTF8.self))
        }
        let waiting = state.withLock { state in
            state.closed = true
            defer { state.waiting = [:] }
            return state.waiting
        }
        for semaphore in waiting.values { semaphore.signal() }
        close(kernelFD)
    }

    private func handle(_ command: String) {
        let words = command.split(separator: " ", maxSplits: 1).map(String.init)
        state.withLock { state in
            switch (words.first, words.count) {
            case ("dir", 2): state.directory = words[1]
            case ("tag", 2): state.tag = words[1]
            case ("bind", 2) where words[1] == "ondemand" && state.directory != nil: state.bound = true
            case ("done", 2):
                guard let id = UInt64(words[1]), let semaphore = state.waiting.removeValue(forKey: id) else {
                    state.badCommands.append(command)
                    return
                }
                semaphore.signal()
            default: state.badCommands.append(command)
            }
        }
    }

    /// Commands are handled on the emulator's thread, after the daemon's write returned (a real device
    /// handles them inside write(2)); waits until `bind ondemand` went through.
    @discardableResult
    func waitUntilBound(seconds: Double = 30) -> Bool {
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        while !state.withLock({ $0.bound }) {
            if monotonicNanoseconds() > deadline { return false }
            usleep(1000)
        }
        return true
    }

    /// The kernel side of a read of `[offset, offset + count)` of a prepared backing file.
    func read(path: String, offset: UInt64, count: Int) throws(SyscallError) -> [UInt8] {
        let fd = try retryingSyscall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        let size = UInt64(try FileSystem.lstat(path).st_size)
        let end = min(offset + UInt64(count), size)
        if end > offset, try hasHole(fd, from: offset, to: end) {
            waitUntilBound()
            // Ask for whole blocks, as a page-cache read would.
            let start = offset / 4096 * 4096
            let stop = min((end + 4095) / 4096 * 4096, size)
            let semaphore = DispatchSemaphore(value: 0)
            let request: SeedRequest? = state.withLock { state in
                guard !state.closed, state.bound else { return nil }
                defer { state.nextID += 1 }
                state.waiting[state.nextID] = semaphore
                let request = SeedRequest(id: state.nextID, offset: start, length: stop - start, path: FileSystem.lastComponent(path))
                state.requests.append(request)
                return request
            }
            guard let request else { throw SyscallError(call: "read", errno: EIO, subject: path) }
            let packet = try? request.encoded()
            let sent = packet.map { bytes in bytes.withUnsafeBytes { send(kernelFD, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } } ?? -1
            guard sent == SeedRequest.size else {
                _ = state.withLock { $0.waiting.removeValue(forKey: request.id) }
                throw SyscallError(call: "read", errno: EIO, subject: path)
            }
            if semaphore.wait(timeout: .now() + .seconds(timeoutSeconds)) == .timedOut {
                _ = state.withLock { $0.waiting.removeValue(forKey: request.id) }
                throw SyscallError(call: "read", errno: ETIMEDOUT, subject: path)
            }
            if try hasHole(fd, from: offset, to: end) { throw SyscallError(call: "read", errno: EIO, subject: path) }
        }
        var bytes = [UInt8](repeating: 0, count: Int(end > offset ? end - offset : 0))
        var got = 0
        while got < bytes.count {
            let n = try retryingSyscall("pread", path) {
                bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, $0.count - got, off_t(offset) + off_t(got)) }
            }
            if n == 0 { break }
            got += n
        }
        return bytes
    }

    private func hasHole(_ fd: Int32, from: UInt64, to: UInt64) throws(SyscallError) -> Bool {
        let hole = lseek(fd, off_t(from), clinux_seek_hole())
        guard hole >= 0 else { throw SyscallError(call: "lseek(SEEK_HOLE)", errno: errno) }
        return UInt64(hole) < to
    }
}

/// A device of an EROFS image read through the emulated devnode: what EROFS over the seed kernel would read.
struct EmulatedSeedDevice: ErofsDeviceReader {
    let emulator: SeedDevnodeEmulator
    let path: String

    func readDevice(at offset: UInt64, count: Int) throws(ImageFormatError) -> [UInt8] {
        do {
            return try emulator.read(path: path, offset: offset, count: count)
        } catch {
            throw .io(path: path, error)
        }
    }
}
