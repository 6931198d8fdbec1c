import LinuxKernel

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Keeps the fanotify group alive outside the daemon (see `snapshotterd-fdholder`): a daemon that dies,
/// cleanly or not, never releases the group while EROFS mounts depend on it. The fanotify face of
/// `DescriptorHolder`, which speaks the holder's protocol.
public enum FanotifyGroupHolder {
    /// Adopts the group a running holder keeps, or returns nil when no holder answers on `socketPath`.
    public static func adopt(socketPath: String) throws -> FanotifyGroup? {
        try DescriptorHolder.adopt(socketPath: socketPath, accept: isFanotify).map(FanotifyGroup.init(adopting:))
    }

    /// Starts a holder for `group` and waits until it serves `socketPath`.
    public static func spawn(binary: String, socketPath: String, group: FanotifyGroup) throws {
        try DescriptorHolder.spawn(binary: binary, socketPath: socketPath, fd: group.fd)
    }

    /// Tells the holder to close its group and exit (clean stop with nothing left depending on it).
    public static func release(socketPath: String) {
        DescriptorHolder.release(socketPath: socketPath)
    }

    static func isFanotify(_ fd: Int32) -> Bool {
        FileSystem.readLink("/proc/self/fd/\(fd)") == "anon_inode:[fanotify]"
    }
}
