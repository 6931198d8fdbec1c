import CLinux
import Foundation
import TestFixtures
import TestThreads
import Testing

@testable import LinuxKernel

#if canImport(Glibc)
import Glibc
#endif

@Suite("cachefiles messages: parsing, defensively", .ownThread)
struct CachefilesMessageTests {
    @Test func openMessage() throws {
        let message = try CachefilesMessage.parse(CachefilesWire.openMessage(volume: "erofs,d1", cookie: Array("boot".utf8)))
        #expect(
            message
                == .open(CachefilesOpen(messageID: 4, objectID: 7, volumeKey: "erofs,d1", cookieKey: Array("boot".utf8), fd: 9, flags: 0)))
    }

    @Test func readAndClose() throws {
        let read =
            CachefilesWire.header(id: 5, opcode: 2, length: 32, object: 7) + CachefilesWire.le64(1 << 33) + CachefilesWire.le64(131072)
        #expect(try CachefilesMessage.parse(read) == .read(messageID: 5, objectID: 7, offset: 1 << 33, length: 131072))
        #expect(
            try CachefilesMessage.parse(CachefilesWire.header(id: 6, opcode: 1, length: 16, object: 7)) == .close(messageID: 6, objectID: 7)
        )
    }

    static let malformed: [[UInt8]] = [
        [],
        [1, 2, 3],
        CachefilesWire.header(id: 1, opcode: 2, length: 16, object: 1),  // READ without payload
        CachefilesWire.header(id: 1, opcode: 1, length: 99, object: 1),  // declared length differs from the read
        CachefilesWire.header(id: 1, opcode: 9, length: 16, object: 1),  // unknown opcode
        CachefilesWire.openMessage(volume: "erofs,d1", cookie: [1, 2], volumeSize: 0xFFFF_FFF0),  // absurd key size
        CachefilesWire.openMessage(volume: "erofs,d1", cookie: [1, 2], cookieSize: 200),  // cookie past the end
        CachefilesWire.openMessage(volume: "erofs,d1", cookie: [1, 2], volumeSize: 0),
        CachefilesWire.header(id: 1, opcode: 0, length: 20, object: 1) + [0, 0, 0, 0],  // truncated OPEN payload
        // Over the 1024-byte maximum.
        CachefilesWire.header(id: 1, opcode: 2, length: 2000, object: 1) + [UInt8](repeating: 0, count: 1984),
    ]

    @Test("malformed messages are errors, never crashes", arguments: malformed)
    func rejects(bytes: [UInt8]) {
        #expect(throws: KernelError.self) { try CachefilesMessage.parse(bytes) }
    }
}
