/// One line of /proc/<pid>/mountinfo (see proc(5)).
public struct MountInfoEntry: Equatable, Sendable {
    public var mountID: Int
    public var parentID: Int
    public var device: String
    public var root: String
    public var mountPoint: String
    public var mountOptions: [String]
    public var fsType: String
    public var source: String
    public var superOptions: [String]

    /// The value of a `name=value` super option (e.g. overlay's `upperdir`).
    public func superOption(_ name: String) -> String? {
        for option in superOptions where option.hasPrefix(name + "=") { return String(option.dropFirst(name.count + 1)) }
        return nil
    }
}

/// Reads and parses mountinfo.
public enum MountInfo {
    public static func read(_ path: String = "/proc/self/mountinfo") throws -> [MountInfoEntry] {
        try parse(String(decoding: FileSystem.readFile(path), as: UTF8.self))
    }

    public static func parse(_ text: String) throws(KernelError) -> [MountInfoEntry] {
        var entries: [MountInfoEntry] = []
        for (number, line) in text.split(separator: "\n").enumerated() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard let dash = fields.firstIndex(of: "-"), dash >= 6, fields.count >= dash + 4,
                let mountID = Int(fields[0]), let parentID = Int(fields[1])
            else { throw .malformedMountInfo(line: number + 1, text: String(line)) }
            entries.append(
                MountInfoEntry(
                    mountID: mountID,
                    parentID: parentID,
                    device: fields[2],
                    root: unescape(fields[3]),
                    mountPoint: unescape(fields[4]),
                    mountOptions: fields[5].split(separator: ",").map(String.init),
                    fsType: fields[dash + 1],
                    source: unescape(fields[dash + 2]),
                    superOptions: splitSuperOptions(fields[dash + 3]).map(unescape)
                ))
        }
        return entries
    }

    /// Whether something is mounted exactly at `path`.
    public static func isMountPoint(_ path: String, in entries: [MountInfoEntry]) -> Bool {
        entries.contains { $0.mountPoint == path }
    }

    /// Super options are comma-separated, but overlay's lowerdir may itself contain ':'-joined paths only,
    /// so a plain split on ',' is right.
    private static func splitSuperOptions(_ text: String) -> [String] {
        text.split(separator: ",").map(String.init)
    }

    /// mountinfo escapes space, tab, newline and backslash as octal (\040, \011, \012, \134).
    static func unescape(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 4 <= bytes.count,
                let value = UInt8(String(decoding: bytes[(i + 1)..<(i + 4)], as: UTF8.self), radix: 8)
            {
                out.append(value)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
