#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A mount as fstab-style fields: what the snapshot service hands out and what `Mounter` performs.
public struct KernelMount: Equatable, Sendable {
    public var type: String
    public var source: String
    public var options: [String]

    public init(type: String, source: String, options: [String]) {
        self.type = type
        self.source = source
        self.options = options
    }

    /// fstab option names that are mount flags rather than filesystem data; the rest goes into `data`.
    static let flagOptions: [String: (set: Bool, flag: UInt)] = [
        "ro": (true, UInt(MS_RDONLY)),
        "rw": (false, UInt(MS_RDONLY)),
        "bind": (true, UInt(MS_BIND)),
        "rbind": (true, UInt(MS_BIND) | UInt(MS_REC)),
        "nosuid": (true, UInt(MS_NOSUID)),
        "suid": (false, UInt(MS_NOSUID)),
        "nodev": (true, UInt(MS_NODEV)),
        "dev": (false, UInt(MS_NODEV)),
        "noexec": (true, UInt(MS_NOEXEC)),
        "exec": (false, UInt(MS_NOEXEC)),
        "sync": (true, UInt(MS_SYNCHRONOUS)),
        "async": (false, UInt(MS_SYNCHRONOUS)),
        "noatime": (true, UInt(MS_NOATIME)),
        "nodiratime": (true, UInt(MS_NODIRATIME)),
        "relatime": (true, UInt(MS_RELATIME)),
        "strictatime": (true, UInt(MS_STRICTATIME)),
        "dirsync": (true, UInt(MS_DIRSYNC)),
    ]

    /// Splits the options into mount(2) flags and the filesystem's data string.
    public var flagsAndData: (flags: UInt, data: String) {
        var flags: UInt = 0
        var data: [String] = []
        for option in options {
            if let known = Self.flagOptions[option] {
                if known.set { flags |= known.flag } else { flags &= ~known.flag }
            } else {
                data.append(option)
            }
        }
        return (flags, data.joined(separator: ","))
    }
}
