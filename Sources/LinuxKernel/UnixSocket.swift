#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Client side of a Unix stream socket.
public enum UnixSocket {
    /// Connects to the socket at `path` and returns the descriptor (close-on-exec), which the caller closes.
    /// Paths longer than `sun_path` are cut to fit, as the kernel would refuse them anyway.
    public static func dial(_ path: String) throws(SyscallError) -> Int32 {
        let fd = try retryingSyscall("socket", path) { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        do {
            _ = try retryingSyscall("connect", path) {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }
}
