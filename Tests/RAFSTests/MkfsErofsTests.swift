import Foundation
import LinuxKernel
import TestFixtures
import TestThreads
import Testing

@testable import RAFS

#if canImport(Glibc)
import Glibc
#endif

/// Plain EROFS images made by Debian's mkfs.erofs from a scratch tree: the layouts nydus bootstraps do
/// not use (flat plain, tail-packed inline data, shared and inline xattrs, devices, fifos, hard links),
/// checked against the source tree and against the kernel mounting the image.
@Suite(
    "mkfs.erofs images (inline, plain, xattrs, special files)",
    .enabled(
        if: ImageFixtures.tool("mkfs.erofs") != nil && ImageFixtures.tool("setfattr") != nil && getuid() == 0,
        "needs mkfs.erofs (apt-get install erofs-utils), setfattr (apt-get install attr) and root (mknod, trusted.* xattrs)"), .ownThread
)
struct MkfsErofsTests {
    static func makeTree(_ root: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/dir/sub", withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: root + "/small"))
        try Data((0..<10_000).map { UInt8($0 % 251) }).write(to: URL(fileURLWithPath: root + "/dir/big"))
        try Data().write(to: URL(fileURLWithPath: root + "/empty"))
        try fm.createSymbolicLink(atPath: root + "/link", withDestinationPath: "dir/big")
        #expect(link(root + "/small", root + "/dir/hardlink") == 0)
        #expect(mkfifo(root + "/fifo", 0o640) == 0)
        // Major 1, minor 3 in glibc's dev_t encoding (makedev is a macro Swift cannot import).
        #expect(mknod(root + "/null", S_IFCHR | 0o666, (1 << 8) | 3) == 0)
        #expect(chown(root + "/small", 1234, 5678) == 0)
        #expect(chmod(root + "/dir/sub", 0o1750) == 0)
        for (path, name, value) in [
            ("/small", "user.color", "blue"), ("/dir/big", "user.color", "blue"),
            ("/dir/sub", "trusted.overlay.opaque", "y"), ("/empty", "user.only", "one"),
        ] {
            let tool = try #require(ImageFixtures.tool("setfattr"))
            let result = try ImageFixtures.run(tool, ["-n", name, "-v", value, root + path])
            #expect(result.status == 0, "setfattr \(path) \(name): \(result.error)")
        }
    }

    @Test("reader matches the source tree and the kernel's mount")
    func tree() throws {
        let scratch = try ImageFixtures.scratchDirectory("mkfs")
        defer { ImageFixtures.cleanup(scratch) }
        let source = scratch + "/src"
        try Self.makeTree(source)
        let imagePath = scratch + "/image.erofs"
        let mkfs = try #require(ImageFixtures.tool("mkfs.erofs"))
        // -x1: an xattr used by more than one inode goes to the shared area.
        let made = try ImageFixtures.run(mkfs, ["-x1", "--quiet", imagePath, source])
        try #require(made.status == 0, "mkfs.erofs: \(made.error)")

        let image = try ErofsImage(path: imagePath)
        #expect(image.rafs == nil)
        #expect(image.blobs.isEmpty)
        let entries = try image.entries()
        let byPath = Dictionary(entries.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
        #expect(
            Set(byPath.keys) == [
                "/", "/small", "/empty", "/link", "/fifo", "/null", "/dir", "/dir/big",
                "/dir/hardlink", "/dir/sub",
            ])

        #expect(byPath["/small"]?.uid == 1234)
        #expect(byPath["/small"]?.gid == 5678)
        #expect(byPath["/small"]?.nlink == 2)
        #expect(byPath["/dir/hardlink"]?.nid == byPath["/small"]?.nid)
        #expect(byPath["/dir/sub"]?.permissions == 0o1750)
        #expect(byPath["/fifo"]?.type == .fifo)
        #expect(byPath["/null"]?.type == .characterDevice)
        #expect(byPath["/null"]?.rdevMajor == 1)
        #expect(byPath["/null"]?.rdevMinor == 3)
        #expect(byPath["/link"]?.symlinkTarget == "dir/big")
        #expect(byPath["/small"]?.xattrs == [ErofsXattr(name: "user.color", value: Array("blue".utf8))])
        #expect(byPath["/dir/big"]?.xattrs == [ErofsXattr(name: "user.color", value: Array("blue".utf8))])
        #expect(byPath["/dir/sub"]?.xattrs == [ErofsXattr(name: "trusted.overlay.opaque", value: Array("y".utf8))])
        #expect(byPath["/empty"]?.xattrs == [ErofsXattr(name: "user.only", value: Array("one".utf8))])

        // Contents against the source, and partial reads across the inline tail.
        for path in ["/small", "/dir/big", "/empty"] {
            #expect(try image.readFile(path) == ImageFixtures.bytes(source + path), "\(path)")
        }
        let big = try image.lookup("/dir/big")
        let middle = try image.readData(of: big, offset: 4000, count: 5000)
        #expect(middle == Array(try ImageFixtures.bytes(source + "/dir/big")[4000..<9000]))

        // The kernel's view of the same image (file-backed mount, no extra devices).
        let mountPoint = scratch + "/mnt"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        try Mounter.mount(KernelMount(type: "erofs", source: imagePath, options: ["ro"]), at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }
        for entry in entries {
            var kernel = stat()
            try #require(lstat(mountPoint + entry.path, &kernel) == 0)
            #expect(UInt16(kernel.st_mode) == entry.mode, "\(entry.path)")
            #expect(kernel.st_uid == entry.uid && kernel.st_gid == entry.gid, "\(entry.path)")
            #expect(UInt64(kernel.st_nlink) == UInt64(entry.nlink), "\(entry.path)")
            #expect(UInt64(kernel.st_size) == entry.size, "\(entry.path)")
            #expect(UInt64(kernel.st_mtim.tv_sec) == entry.mtime, "\(entry.path)")
            if entry.type == .regular {
                #expect(try ImageFixtures.bytes(mountPoint + entry.path) == image.readFile(entry.path), "\(entry.path)")
            }
        }
    }
}
