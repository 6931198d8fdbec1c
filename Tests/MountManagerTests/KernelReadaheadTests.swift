import Foundation
import LinuxKernel
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("page-cache readahead of image mounts", .ownThread)
struct KernelReadaheadTests {
    static var supported: Bool { geteuid() == 0 && FileManager.default.fileExists(atPath: "/usr/bin/mkfs.erofs") }

    @Test("the window of one file-backed EROFS mount is set and read back; another mount keeps its own")
    func setAndGet() throws {
        try #require(Self.supported, "needs root and mkfs.erofs")
        let workspace = try FanotifyWorkspace()
        let (bootstrap, fullBlob) = try workspace.buildImage(files: ["a": 300_000, "b": 5000])
        var targets: [String] = []
        defer { for target in targets.reversed() { try? Mounter.unmount(target, detach: true) } }
        for name in ["one", "two"] {
            let target = workspace.root + "/" + name
            try FileSystem.makeDirectories(target)
            try Mounter.mount(KernelMount(type: "erofs", source: bootstrap, options: ["ro", "device=\(fullBlob)"]), at: target)
            targets.append(target)
        }
        let before = try KernelReadahead.get(mountPoint: targets[1])
        try KernelReadahead.set(mountPoint: targets[0], kilobytes: 1024)
        #expect(try KernelReadahead.get(mountPoint: targets[0]) == 1024)
        #expect(try KernelReadahead.get(mountPoint: targets[1]) == before, "only the mount asked for changes")
        #expect(try KernelReadahead.controlFile(mountPoint: targets[0]) != KernelReadahead.controlFile(mountPoint: targets[1]))
        // Still a correct filesystem with the larger window.
        let read = try Data(contentsOf: URL(fileURLWithPath: targets[0] + "/a"))
        #expect(read == (try Data(contentsOf: URL(fileURLWithPath: workspace.source + "/a"))))
    }

    @Test("a path that is no filesystem with a sysfs entry is a clear error")
    func notAMount() throws {
        #expect(throws: SyscallError.self) { try KernelReadahead.set(mountPoint: "/nonexistent-\(getpid())", kilobytes: 1024) }
    }
}
