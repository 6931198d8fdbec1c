import LinuxKernel
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("mountinfo and mount options", .ownThread)
struct MountInfoTests {
    @Test("parses optional fields, escapes and overlay super options")
    func parse() throws {
        let text = """
            36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue
            44 27 0:39 / /tmp/c1 rw,relatime shared:5 - overlay overlay rw,lowerdir=/a/1/fs:/a/2/fs,upperdir=/a/3/fs,workdir=/a/3/work
            """
        let entries = try MountInfo.parse(text)
        #expect(entries.count == 2)
        #expect(entries[0].mountPoint == "/mnt/with space")
        #expect(entries[0].fsType == "ext3" && entries[0].source == "/dev/root")
        #expect(entries[1].superOption("upperdir") == "/a/3/fs")
        #expect(entries[1].superOption("lowerdir") == "/a/1/fs:/a/2/fs")
        #expect(entries[1].mountOptions == ["rw", "relatime"])
    }

    @Test("a malformed line is an error naming it", arguments: ["36 35 98:0 / /mnt rw", "x y 1:2 / /m rw - ext4 /dev/x rw"])
    func malformed(_ line: String) {
        #expect(throws: KernelError.malformedMountInfo(line: 1, text: line)) { try MountInfo.parse(line) }
    }

    @Test("the real /proc/self/mountinfo parses and has /")
    func real() throws {
        let entries = try MountInfo.read()
        #expect(MountInfo.isMountPoint("/", in: entries))
    }

    @Test("fstab options split into flags and data")
    func options() {
        let bind = KernelMount(type: "bind", source: "/a", options: ["ro", "rbind"])
        #expect(bind.flagsAndData.flags == UInt(MS_RDONLY) | UInt(MS_BIND) | UInt(MS_REC))
        #expect(bind.flagsAndData.data.isEmpty)
        let overlay = KernelMount(type: "overlay", source: "overlay", options: ["index=off", "nodev", "lowerdir=/x"])
        #expect(overlay.flagsAndData.flags == UInt(MS_NODEV))
        #expect(overlay.flagsAndData.data == "index=off,lowerdir=/x")
    }

    @Test("mount and unmount a read-only bind for real")
    func bindMount() throws {
        try #require(geteuid() == 0, "mount(2) needs root")
        var template = Array("/tmp/mm-test-XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileSystem.removeTree(dir) }
        try FileSystem.makeDirectory(dir + "/src")
        try FileSystem.makeDirectory(dir + "/dst")
        try FileSystem.writeFileAtomically(dir + "/src/file", Array("x".utf8))
        try Mounter.mount(KernelMount(type: "bind", source: dir + "/src", options: ["ro", "rbind"]), at: dir + "/dst")
        defer { try? Mounter.unmount(dir + "/dst", detach: true) }
        #expect(try FileSystem.readFile(dir + "/dst/file") == Array("x".utf8))
        #expect(open(dir + "/dst/new", O_CREAT | O_WRONLY, 0o644) == -1 && errno == EROFS)
        let entry = try #require(try MountInfo.read().first { $0.mountPoint == dir + "/dst" })
        #expect(entry.mountOptions.contains("ro"))
        // A process another test forks while a file under the target is open holds it for moments (CI saw it once).
        try Mounter.unmountWaitingOutBusy(dir + "/dst")
        #expect(!MountInfo.isMountPoint(dir + "/dst", in: try MountInfo.read()))
        #expect(throws: KernelError.self) { try Mounter.unmount(dir + "/dst") }
    }

}
