import BlobStore
import CLinux
import Foundation
import LinuxKernel
import Logging
import MountManager
import Synchronization
import TestFixtures
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The front end against a stand-in for /dev/cachefiles on the host: a SOCK_SEQPACKET pair (one message per
/// read, POLLIN while one waits, one command per write). The anonymous fds are plain files, so READ_COMPLETE
/// fails there (logged); everything else — replies, the aligned copy, skipping garbage — is checked.
@Suite("cachefiles front end against a stand-in device", .ownThread)
struct CachefilesFrontEndTests {
    final class Recorder: RangeFiller {
        let calls = Mutex<[(BackingFileID, UInt64, UInt64)]>([])
        /// When the front end ended each fill's lease: the size of the object file then (what it had copied).
        let leaseEnds = Mutex<[Int64]>([])
        let objectPath: String

        init(objectPath: String = "") { self.objectPath = objectPath }

        func fill(file: BackingFileID, offset: UInt64, length: UInt64) async throws { calls.withLock { $0.append((file, offset, length)) } }

        func fillAndHold(file: BackingFileID, offset: UInt64, length: UInt64) async throws -> RangeLease {
            try await fill(file: file, offset: offset, length: length)
            return RangeLease { [self] in
                let copied = (try? FileSystem.lstat(objectPath).st_size).map(Int64.init) ?? -1
                leaseEnds.withLock { $0.append(copied) }
            }
        }
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    }

    static func high(_ fd: Int32) -> Int32 {
        defer { close(fd) }
        return fcntl(fd, F_DUPFD_CLOEXEC, 900)
    }

    static func receive(_ fd: Int32) -> String? {
        var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pollFD, 1, 5000) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
    }

    @Test("answers OPENs from the registrations, skips garbage, copies READs aligned into the object's fd", .timeLimit(.minutes(2)))
    func serving() async throws {
        var pair: [Int32] = [-1, -1]
        try retryingSyscall("socketpair") { socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) }
        let kernel = pair[1]
        defer { close(kernel) }
        var template = Array("/var/tmp/cachefiles-fe-XXXXXX".utf8CString)
        let dir = try #require(mkdtemp(&template).map { String(cString: $0) })
        defer { try? FileSystem.removeTree(dir) }
        let content = (0..<40000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try Data(content).write(to: URL(fileURLWithPath: dir + "/backing"))

        let recorder = Recorder(objectPath: dir + "/object")
        let device = CachefilesDevice(adopting: pair[0])
        defer { device.close() }
        let frontEnd = CachefilesFrontEnd(device: device, filler: recorder, logger: Logger(label: "test"))
        frontEnd.register(
            .init(id: .blob(5), volumeKey: "erofs,d1", cookieKey: Array("blob".utf8), size: 40000, backingPath: dir + "/backing"))
        frontEnd.start()
        defer {
            frontEnd.stop()
            frontEnd.closeObjects()
        }

        // An OPEN of an unknown cookie is refused with -ENOENT and its fd closed. The fd is a pipe's read end:
        // its closing shows at the write end (POLLERR), whatever other tests' opens reuse the number for (CI once
        // saw a concurrent test take the same high number right after the close).
        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        defer { close(ends[1]) }
        let unknownFD = Self.high(ends[0])
        Self.send(kernel, CachefilesWire.openMessage(volume: "erofs,d1", cookie: Array("nope".utf8), fd: UInt32(unknownFD)))
        #expect(Self.receive(kernel) == "copen 4,-2")
        // No events asked for: poll wakes only for POLLERR (the read end closed), not for POLLOUT (a pipe's write
        // end is writable at once, also before the front end has closed the fd: CI once polled in that moment).
        var writeEnd = pollfd(fd: ends[1], events: 0, revents: 0)
        #expect(poll(&writeEnd, 1, 45_000) == 1 && writeEnd.revents & Int16(POLLERR) != 0, "the refused OPEN's fd must be closed")

        // Garbage is skipped.
        Self.send(kernel, [1, 2, 3])
        Self.send(kernel, CachefilesWire.header(id: 9, opcode: 7, length: 16, object: 1))

        // A known cookie: copen with the size; then a READ is filled and copied into the object's fd.
        let objectFD = Self.high(open(dir + "/object", O_CREAT | O_RDWR | clinux_o_direct(), 0o600))
        try #require(objectFD >= 0)
        Self.send(kernel, CachefilesWire.openMessage(volume: "erofs,d1", cookie: Array("blob".utf8), fd: UInt32(objectFD)))
        #expect(Self.receive(kernel) == "copen 4,40000")
        let read =
            CachefilesWire.header(id: 11, opcode: 2, length: 32, object: 7) + CachefilesWire.le64(5000)
            + CachefilesWire.le64(100)
        Self.send(kernel, read)
        // Generous deadlines: under the full parallel run the two cooperative threads are shared with tests
        // that block them, and this test has taken 42 s there (0.2 s on its own).
        let deadline = monotonicNanoseconds() + 45_000_000_000
        while frontEnd.statistics.filled + frontEnd.statistics.failed == 0 && monotonicNanoseconds() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(recorder.calls.withLock { $0.map { "\($0.0):\($0.1)+\($0.2)" } } == ["blob 5:5000+100"])
        let statistics = frontEnd.statistics
        #expect(statistics.malformed == 2 && statistics.refusedOpens == 1 && statistics.opens == 2)
        #expect(statistics.bytesCopied == 4096)
        let written = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/object")))
        #expect(written.count == 8192 && Array(written[4096..<8192]) == Array(content[4096..<8192]))
        // The range was held (never evicted) until it had been copied into the kernel's cache file.
        #expect(recorder.leaseEnds.withLock { $0 } == [8192], "the lease ends after the copy, not before")

        // CLOSE closes the object's fd.
        Self.send(kernel, CachefilesWire.header(id: 12, opcode: 1, length: 16, object: 7))
        let closeDeadline = monotonicNanoseconds() + 45_000_000_000
        while frontEnd.statistics.closes == 0 && monotonicNanoseconds() < closeDeadline { try await Task.sleep(for: .milliseconds(20)) }
        // Judged by what the number names, not whether it is open: tests alongside hold hundreds of fds (the
        // connection-cap test), and one took this number right after the close on CI.
        #expect(FileSystem.readLink("/proc/self/fd/\(objectFD)") != dir + "/object", "the object's fd is still open")
    }
}
