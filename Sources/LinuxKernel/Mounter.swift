#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Performs and undoes mounts with mount(2)/umount2(2) directly (never through mount(8)).
public enum Mounter {
    /// mount(2) copies at most one page of filesystem data.
    public static let maximumDataLength = Int(sysconf(Int32(_SC_PAGESIZE))) - 1

    /// Mounts `mount` at `target`. A read-only bind is a bind followed by a read-only remount, since the
    /// kernel ignores MS_RDONLY on the bind itself.
    public static func mount(_ mount: KernelMount, at target: String) throws(KernelError) {
        let (flags, data) = mount.flagsAndData
        guard data.utf8.count <= maximumDataLength else {
            throw .optionsTooLong(target: target, length: data.utf8.count, limit: maximumDataLength)
        }
        do throws(SyscallError) {
            try retryingSyscall("mount", target) {
                Glibc.mount(mount.source, target, mount.type, flags, data.isEmpty ? nil : data)
            }
            let bind = UInt(MS_BIND)
            let readOnly = UInt(MS_RDONLY)
            if flags & bind != 0 && flags & readOnly != 0 {
                do throws(SyscallError) {
                    try retryingSyscall("mount(remount,ro)", target) {
                        Glibc.mount("", target, "", UInt(MS_REMOUNT) | bind | readOnly | (flags & UInt(MS_REC)), nil)
                    }
                } catch {
                    _ = umount2(target, Int32(MNT_DETACH))
                    throw error
                }
            }
        } catch {
            throw .failed(mount, target: target, error)
        }
    }

    /// Unmounts `target`; with `detach`, lazily (MNT_DETACH) so busy mounts go once their users leave.
    public static func unmount(_ target: String, detach: Bool = false) throws(KernelError) {
        do throws(SyscallError) {
            try retryingSyscall("umount2", target) { umount2(target, detach ? Int32(MNT_DETACH) : 0) }
        } catch {
            throw .unmountFailed(target: target, error)
        }
    }

    /// How often, and how far apart, `unmountWaitingOutBusy` tries again (2.5 s in all, as containerd's own
    /// unmount does).
    public static let busyAttempts = 50
    public static let busyIntervalMicroseconds: useconds_t = 50_000

    /// umount(2), tried again while it fails with EBUSY. A holder that is gone within moments is common: a
    /// process forked while a file under the target was open keeps that file until it execs or exits.
    /// `onFirstBusy` runs at the first EBUSY; the last error is thrown. Blocking: call it off the cooperative pool.
    public static func unmountWaitingOutBusy(_ target: String, onFirstBusy: () -> Void = {}) throws(KernelError) {
        for attempt in 1... {
            do throws(KernelError) {
                return try unmount(target)
            } catch {
                guard case .unmountFailed(_, let cause) = error, cause.errno == EBUSY, attempt < busyAttempts else { throw error }
                if attempt == 1 { onFirstBusy() }
                usleep(busyIntervalMicroseconds)
            }
        }
        fatalError("unreachable: the loop returns or throws")
    }
}

/// What the running kernel's overlayfs offers.
public enum OverlayFeatures {
    /// containerd's overlay snapshotter adds `index=off` when the kernel has the `index` feature, so that
    /// layers can be mounted under several overlays; we return the same mounts.
    public static let hasIndex: Bool = FileSystem.exists("/sys/module/overlay/parameters/index")
}
