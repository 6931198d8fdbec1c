import CLinux
import Foundation
import SystemSupport
import Testing

@testable import MountManager

#if canImport(Glibc)
import Glibc
#endif

@Suite("cachefiles messages: parsing, defensively")
struct CachefilesMessageTests {
    static func header(id: UInt32, opcode: UInt32, length: Int, object: UInt32) -> [UInt8] {
        [id, opcode, UInt32(length), object].flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    }

    static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    static func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    static func openMessage(volume: String, cookie: [UInt8], fd: UInt32 = 9, volumeSize: Int? = nil, cookieSize: Int? = nil) -> [UInt8] {
        let volumeBytes = Array(volume.utf8) + [0]
        let payload =
            le32(UInt32(volumeSize ?? volumeBytes.count)) + le32(UInt32(cookieSize ?? cookie.count)) + le32(fd) + le32(0) + volumeBytes
            + cookie
        return header(id: 4, opcode: 0, length: 16 + payload.count, object: 7) + payload
    }

    @Test func openMessage() throws {
        let message = try CachefilesMessage.parse(Self.openMessage(volume: "erofs,d1", cookie: Array("boot".utf8)))
        #expect(
            message
                == .open(CachefilesOpen(messageID: 4, objectID: 7, volumeKey: "erofs,d1", cookieKey: Array("boot".utf8), fd: 9, flags: 0)))
    }

    @Test func readAndClose() throws {
        let read = Self.header(id: 5, opcode: 2, length: 32, object: 7) + Self.le64(1 << 33) + Self.le64(131072)
        #expect(try CachefilesMessage.parse(read) == .read(messageID: 5, objectID: 7, offset: 1 << 33, length: 131072))
        #expect(try CachefilesMessage.parse(Self.header(id: 6, opcode: 1, length: 16, object: 7)) == .close(messageID: 6, objectID: 7))
    }

    static let malformed: [[UInt8]] = [
        [],
        [1, 2, 3],
        header(id: 1, opcode: 2, length: 16, object: 1),  // READ without payload
        header(id: 1, opcode: 1, length: 99, object: 1),  // declared length differs from the read
        header(id: 1, opcode: 9, length: 16, object: 1),  // unknown opcode
        openMessage(volume: "erofs,d1", cookie: [1, 2], volumeSize: 0xFFFF_FFF0),  // absurd key size
        openMessage(volume: "erofs,d1", cookie: [1, 2], cookieSize: 200),  // cookie past the end
        openMessage(volume: "erofs,d1", cookie: [1, 2], volumeSize: 0),
        header(id: 1, opcode: 0, length: 20, object: 1) + [0, 0, 0, 0],  // truncated OPEN payload
        header(id: 1, opcode: 2, length: 2000, object: 1) + [UInt8](repeating: 0, count: 1984),  // over the 1024-byte maximum
    ]

    @Test("malformed messages are errors, never crashes", arguments: malformed)
    func rejects(bytes: [UInt8]) {
        #expect(throws: CachefilesMessageError.self) { try CachefilesMessage.parse(bytes) }
    }

    @Test func mountOptions() {
        #expect(
            CachefilesFrontEnd.erofsMount(fsid: "boot1", domainID: "dom")
                == KernelMount(type: "erofs", source: "none", options: ["ro", "fsid=boot1", "domain_id=dom"]))
        #expect(SeedFrontEnd.erofsMount(bootstrapID: "b1").options == ["ro", "uuid=b1"])
    }

    /// The anonymous fd's file is O_DIRECT: the copy must use aligned buffers, offsets and lengths. An O_DIRECT
    /// target on the host checks that (an unaligned write fails with EINVAL).
    @Test(
        "copies whole aligned blocks, zero-padding past the source's end",
        arguments: [(UInt64(5000), UInt64(100)), (0, 4096), (8191, 2), (0, 3 << 20)])
    func alignedCopy(offset: UInt64, length: UInt64) throws {
        var template = Array("/var/tmp/cachefiles-copy-XXXXXX".utf8CString)
        let dir = try #require(mkdtemp(&template).map { String(cString: $0) })
        defer { try? FileSystem.removeTree(dir) }
        let size: UInt64 = (3 << 20) + 1234
        let source = (0..<Int(size)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        try Data(source).write(to: URL(fileURLWithPath: dir + "/src"))
        let target = open(dir + "/dst", O_CREAT | O_RDWR | clinux_o_direct(), 0o600)
        try #require(target >= 0, "O_DIRECT open failed: errno \(errno)")
        defer { close(target) }
        let copied = try CachefilesFrontEnd.copyAligned(from: dir + "/src", to: target, offset: offset, length: length, size: size)
        let start = offset / 4096 * 4096
        let end = min((offset + length + 4095) / 4096 * 4096, (size + 4095) / 4096 * 4096)
        #expect(copied == end - start)
        let written = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/dst")))
        #expect(UInt64(written.count) == end)
        let sourceEnd = Int(min(end, size))
        #expect(Array(written[Int(start)..<sourceEnd]) == Array(source[Int(start)..<sourceEnd]))
        #expect(written[sourceEnd...].allSatisfy { $0 == 0 })
    }
}
