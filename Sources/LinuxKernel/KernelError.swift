import CLinux

/// What an interface of the kernel handed back that we refuse, or a mount that failed; each case carries the
/// value at fault. One enum for the library besides `SyscallError`, which names a failed call.
public enum KernelError: Error, Equatable, Sendable, CustomStringConvertible {
    // mount(2) and umount2(2).
    case optionsTooLong(target: String, length: Int, limit: Int)
    case failed(KernelMount, target: String, SyscallError)
    case unmountFailed(target: String, SyscallError)
    // /proc/self/mountinfo.
    case malformedMountInfo(line: Int, text: String)
    // fanotify event records.
    case unsupportedFanotifyVersion(Int)
    case malformedEvent(offset: Int, detail: String)
    // cachefiles on-demand messages: the front end logs them and skips the message (closing an OPEN's fd
    // when it is known).
    case messageTruncated(Int)
    case lengthMismatch(messageID: UInt32, declared: UInt32, read: Int)
    case keySizes(messageID: UInt32, volume: Int, cookie: Int, fd: Int32)
    case unknownOpcode(messageID: UInt32, opcode: UInt32)

    public var description: String {
        switch self {
        case .optionsTooLong(let target, let length, let limit):
            return "mount options for \(target) are \(length) bytes, over the kernel's limit of \(limit)"
        case .failed(let mount, let target, let error):
            return "mount -t \(mount.type) \(mount.source) \(target) -o \(mount.options.joined(separator: ",")): \(error)"
        case .unmountFailed(let target, let error):
            return "unmount \(target): \(error)"
        case .malformedMountInfo(let line, let text): return "mountinfo line \(line) is malformed: \(text)"
        case .unsupportedFanotifyVersion(let version):
            return "fanotify metadata version \(version) is not the supported \(FANOTIFY_METADATA_VERSION)"
        case .malformedEvent(let offset, let detail): return "malformed fanotify event at byte \(offset): \(detail)"
        case .messageTruncated(let count): return "cachefiles message of \(count) bytes is truncated"
        case .lengthMismatch(let messageID, let declared, let read):
            return "cachefiles message \(messageID) declares \(declared) bytes but \(read) were read"
        case .keySizes(let messageID, let volume, let cookie, _):
            return "cachefiles OPEN \(messageID) has impossible key sizes (volume \(volume), cookie \(cookie))"
        case .unknownOpcode(let messageID, let opcode): return "cachefiles message \(messageID) has unknown opcode \(opcode)"
        }
    }
}
