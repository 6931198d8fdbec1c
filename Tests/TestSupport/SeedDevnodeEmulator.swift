import CLinux
import Dispatch
import Foundation
import LinuxKernel
import MountManager
import RAFS
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An emulation of the seed design's devnode `/dev/cachefiles_ondemand` (no kernel implements it). An opener's
/// end is a SOCK_SEQPACKET socket, which gives the devnode's semantics: each read returns exactly one
/// `struct cachefiles_req_in` (280 bytes, built by `SeedRequest.encoded()`), poll reports POLLIN while a
/// request waits, and each write is one text command (`dir`, `tag`, `bind ondemand`, `done <id>`).
///
/// Two ways to open it:
/// - in-process (`init(timeoutSeconds:)`): `daemonFD` is one end of a socket pair, the only opener ever; when
///   it closes, every waiting and later reader gets EIO (fail-safe, as cachefiles does);
/// - for another process (`init(listeningAt:timeoutSeconds:)`): a SOCK_SEQPACKET listener on a path, which a
///   daemon configured with `ondemand.seed_device = <path>` connects to (`CachefilesDevice.init(path:)`).
///   Connections are served one at a time, like a device one process may hold: a second one waits in the
///   backlog until the first is released. A descriptor passed to the fd holder keeps the connection open, so
///   a daemon killed with SIGKILL does not release the devnode. Requests made while no opener is bound wait and
///   go to the next one; when the opener's last descriptor closes, the readers whose requests it had taken
///   get EIO (the series' release semantics).
///
/// The "kernel" side is `read(path:offset:count:)`: like a filesystem read of a prepared backing file, it
/// returns at once when the range holds data, else queues a request and blocks the caller until the daemon
/// writes `done <id>`, then re-checks the range: still a hole gives EIO.
public final class SeedDevnodeEmulator: Sendable {
    public struct State {
        public var nextID: UInt64 = 1
        public var waiting: [UInt64: DispatchSemaphore] = [:]
        public var directory: String?
        public var tag: String?
        public var bound = false
        /// Released for good (in-process mode, or shut down): every read fails with EIO.
        public var closed = false
        public var badCommands: [String] = []
        /// Every request made, in order.
        public var requests: [SeedRequest] = []
        /// How many times the devnode was opened (connections accepted).
        public var opens = 0
        /// The current opener's end, as the emulation sees it; nil while nobody holds the devnode open.
        var connection: Int32?
        /// Requests waiting for an opener that has bound.
        var undelivered: [SeedRequest] = []
        /// Which connection took each delivered request.
        var deliveredTo: [UInt64: Int32] = [:]
    }

    /// In-process mode: the daemon's end of the devnode (-1 when listening on a path).
    public let daemonFD: Int32
    /// Listening mode: the path a daemon opens as the devnode.
    public let socketPath: String?
    private let listenerFD: Int32
    public let state = Mutex(State())
    /// How long a reader waits for `done` before giving up with ETIMEDOUT (a hang, reported as a failure).
    public let timeoutSeconds: Int

    /// An in-process devnode whose one opener is `daemonFD`.
    public init(timeoutSeconds: Int = 20) throws {
        var pair: [Int32] = [-1, -1]
        try retryingSyscall("socketpair") { socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) }
        daemonFD = pair[0]
        socketPath = nil
        listenerFD = -1
        self.timeoutSeconds = timeoutSeconds
        let kernelFD = pair[1]
        state.withLock {
            $0.connection = kernelFD
            $0.opens = 1
        }
        let thread = Thread {
            self.commandLoop(kernelFD)
            self.released(kernelFD, forGood: true)
        }
        thread.start()
    }

    /// A devnode another process opens by connecting to `path` (SOCK_SEQPACKET).
    public init(listeningAt path: String, timeoutSeconds: Int = 120) throws {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SyscallError(call: "bind", errno: ENAMETOOLONG, subject: path)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let listener = try retryingSyscall("socket", path) {
            socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        unlink(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(listener, 4) == 0 else {
            let code = errno
            close(listener)
            throw SyscallError(call: "bind", errno: code, subject: path)
        }
        daemonFD = -1
        socketPath = path
        listenerFD = listener
        self.timeoutSeconds = timeoutSeconds
        let thread = Thread { self.acceptLoop() }
        thread.start()
    }

    /// Releases the devnode for good: the listener closes, the current opener is cut off, readers get EIO.
    public func shutdown() {
        let connection = state.withLock { state in
            state.closed = true
            return state.connection
        }
        if listenerFD >= 0 {
            Glibc.shutdown(listenerFD, Int32(SHUT_RDWR))
            if let socketPath { unlink(socketPath) }
        }
        if let connection { Glibc.shutdown(connection, Int32(SHUT_RDWR)) }
    }

    /// In-process mode: the daemon dies, its end of the device closes.
    public func closeDaemonEnd() {
        if daemonFD >= 0 { close(daemonFD) }
    }

    /// Readers blocked on a request right now.
    public var waitingReaders: Int { state.withLock { $0.waiting.count } }

    private func acceptLoop() {
        while true {
            let connection = accept(listenerFD, nil, nil)
            if connection < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                break
            }
            _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
            let refused = state.withLock { state -> Bool in
                guard !state.closed else { return true }
                state.connection = connection
                state.opens += 1
                return false
            }
            if refused {
                close(connection)
                break
            }
            commandLoop(connection)
            released(connection, forGood: false)
        }
        close(listenerFD)
        released(nil, forGood: true)
    }

    private func commandLoop(_ connection: Int32) {
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            handle(String(decoding: buffer[0..<n], as: UTF8.self), connection: connection)
        }
    }

    /// The opener's last descriptor closed: readers whose requests it took get EIO (all of them when the
    /// devnode is gone for good); requests it never saw wait for the next opener.
    private func released(_ connection: Int32?, forGood: Bool) {
        let failing = state.withLock { state -> [DispatchSemaphore] in
            if forGood { state.closed = true }
            if state.connection == connection || connection == nil {
                state.connection = nil
                state.bound = false
            }
            let ids = state.waiting.keys.filter { forGood || (connection != nil && state.deliveredTo[$0] == connection) }
            let semaphores = ids.compactMap { state.waiting.removeValue(forKey: $0) }
            for id in ids { state.deliveredTo[id] = nil }
            if forGood { state.undelivered = [] }
            return semaphores
        }
        for semaphore in failing { semaphore.signal() }
        if let connection { close(connection) }
    }

    private func handle(_ command: String, connection: Int32) {
        let words = command.split(separator: " ", maxSplits: 1).map(String.init)
        state.withLock { state in
            switch (words.first, words.count) {
            case ("dir", 2): state.directory = words[1]
            case ("tag", 2): state.tag = words[1]
            case ("bind", 2) where words[1] == "ondemand" && state.directory != nil:
                state.bound = true
                // Requests made while nobody was bound go to this opener now.
                for request in state.undelivered { Self.deliver(request, to: connection, state: &state) }
                state.undelivered = []
            case ("done", 2):
                guard let id = UInt64(words[1]), let semaphore = state.waiting.removeValue(forKey: id) else {
                    state.badCommands.append(command)
                    return
                }
                state.deliveredTo[id] = nil
                semaphore.signal()
            default: state.badCommands.append(command)
            }
        }
    }

    /// Hands a request to the opener (one seqpacket message); a failed send leaves it for the next opener.
    private static func deliver(_ request: SeedRequest, to connection: Int32, state: inout State) {
        guard let packet = try? request.encoded() else { return }
        let sent = packet.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if sent == SeedRequest.size {
            state.deliveredTo[request.id] = connection
        } else {
            state.undelivered.append(request)
        }
    }

    /// Commands are handled on the emulator's thread, after the daemon's write returned (a real device
    /// handles them inside write(2)); waits until `bind ondemand` went through.
    @discardableResult
    public func waitUntilBound(seconds: Double = 30) -> Bool {
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        while !state.withLock({ $0.bound }) {
            if monotonicNanoseconds() > deadline { return false }
            usleep(1000)
        }
        return true
    }

    /// The kernel side of a read of `[offset, offset + count)` of a prepared backing file.
    public func read(path: String, offset: UInt64, count: Int) throws(SyscallError) -> [UInt8] {
        let fd = try retryingSyscall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        let size = UInt64(try FileSystem.lstat(path).st_size)
        let end = min(offset + UInt64(count), size)
        if end > offset, try hasHole(fd, from: offset, to: end) {
            // In-process, the one opener binds right after creating the emulator; wait for that.
            if socketPath == nil { waitUntilBound() }
            // Ask for whole blocks, as a page-cache read would.
            let start = offset / 4096 * 4096
            let stop = min((end + 4095) / 4096 * 4096, size)
            let semaphore = DispatchSemaphore(value: 0)
            let listening = socketPath != nil
            let request: SeedRequest? = state.withLock { state in
                guard !state.closed, state.bound || listening else { return nil }
                defer { state.nextID += 1 }
                state.waiting[state.nextID] = semaphore
                let request = SeedRequest(id: state.nextID, offset: start, length: stop - start, path: FileSystem.lastComponent(path))
                state.requests.append(request)
                if let connection = state.connection, state.bound {
                    Self.deliver(request, to: connection, state: &state)
                } else {
                    state.undelivered.append(request)
                }
                return request
            }
            guard let request else { throw SyscallError(call: "read", errno: EIO, subject: path) }
            if semaphore.wait(timeout: .now() + .seconds(timeoutSeconds)) == .timedOut {
                state.withLock { state in
                    state.waiting[request.id] = nil
                    state.deliveredTo[request.id] = nil
                    state.undelivered.removeAll { $0.id == request.id }
                }
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
public struct EmulatedSeedDevice: ErofsDeviceReader {
    public let emulator: SeedDevnodeEmulator
    public let path: String

    public init(emulator: SeedDevnodeEmulator, path: String) {
        self.emulator = emulator
        self.path = path
    }

    public func readDevice(at offset: UInt64, count: Int) throws(ImageFormatError) -> [UInt8] {
        do {
            return try emulator.read(path: path, offset: offset, count: count)
        } catch {
            throw .io(path: path, error)
        }
    }
}
