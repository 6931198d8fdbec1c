import CLinux
import Foundation
import LinuxKernel
import TestThreads
import Testing

@testable import MountManager

#if canImport(Glibc)
import Glibc
#endif

@Suite("cachefiles front end: mount options and aligned copies", .ownThread)
struct CachefilesMountAndCopyTests {
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
