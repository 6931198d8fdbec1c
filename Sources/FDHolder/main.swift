import CLinux

// snapshotterd-fdholder: keeps kernel handles alive across snapshotterd restarts and crashes.
//
// A fanotify pre-content group whose last descriptor closes answers every pending event with ALLOW, so
// readers of a half-fetched image would see holes as zeros. snapshotterd therefore hands the group to
// this tiny process (as fd 3 at spawn), which holds it and gives a duplicate to whoever connects to its
// socket (root only, 0600). A successor daemon adopts the group from here and completes the events its
// predecessor left. The holder exits only when told to release ("R") by a daemon that stopped cleanly
// with nothing mounted on the group, or when its socket is removed.
//
// Usage: snapshotterd-fdholder --socket PATH [--fd N]
//
// It also culls for the daemon: `snapshotterd-fdholder --cull NAME --in DIRECTORY [--fd N]` writes
// `cull NAME` to /dev/cachefiles (fd N). The kernel resolves NAME in the writer's working directory, which a
// multi-threaded daemon cannot change for one call; this short-lived process can. It exits with 0, or with
// the errno the kernel answered (ENOENT: no such file yet, EBUSY: still in use) and a message.
#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String, status: Int32 = 1) -> Never {
    let line = "snapshotterd-fdholder: \(message)\n"
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    exit(status)
}

var arguments = CommandLine.arguments.dropFirst()
var socketPath: String?
var heldFD: Int32 = 3
var cullName: String?
var cullDirectory: String?
while let argument = arguments.popFirst() {
    switch argument {
    case "--socket": socketPath = arguments.popFirst()
    case "--fd": heldFD = arguments.popFirst().flatMap { Int32($0) } ?? -1
    case "--cull": cullName = arguments.popFirst()
    case "--in": cullDirectory = arguments.popFirst()
    default:
        fail("unknown argument \(argument); usage: snapshotterd-fdholder --socket PATH [--fd N] | --cull NAME --in DIRECTORY [--fd N]")
    }
}

if let cullName {
    guard let cullDirectory, !cullName.isEmpty, !cullName.contains("/") else { fail("--cull NAME (no slash) needs --in DIRECTORY") }
    guard chdir(cullDirectory) == 0 else {
        let code = errno
        fail("cd \(cullDirectory): \(String(cString: strerror(code)))", status: code)
    }
    let command = Array("cull \(cullName)".utf8)
    var written = -1
    repeat { written = command.withUnsafeBytes { write(heldFD, $0.baseAddress, $0.count) } } while written < 0 && errno == EINTR
    guard written == command.count else {
        let code = written < 0 ? errno : EIO
        fail("cull \(cullName) in \(cullDirectory): \(String(cString: strerror(code)))", status: code)
    }
    exit(0)
}
guard let socketPath, socketPath.utf8.count < 108 else { fail("--socket PATH (under 108 bytes) is required") }
guard heldFD >= 0, fcntl(heldFD, F_GETFD) >= 0 else { fail("descriptor \(heldFD) is not open") }
_ = fcntl(heldFD, F_SETFD, FD_CLOEXEC)

// Close whatever else the spawner leaked to us (e.g. the socket a parent uses to notice the daemon's exit):
// holding it would keep the daemon's parent from ever seeing the daemon end.
if let directory = opendir("/proc/self/fd") {
    var leaked: [Int32] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let fd = Int32(name), fd > 2, fd != heldFD, fd != 4, fd != dirfd(directory) { leaked.append(fd) }
    }
    closedir(directory)
    for fd in leaked { close(fd) }
}

// Detach from the daemon's session and signals meant for it; keep running until released.
_ = setsid()
signal(SIGINT, SIG_IGN)
signal(SIGHUP, SIG_IGN)
signal(SIGPIPE, SIG_IGN)
signal(SIGTERM, SIG_IGN)

let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
guard listener >= 0 else { fail("socket: \(String(cString: strerror(errno)))") }
var address = sockaddr_un()
address.sun_family = sa_family_t(AF_UNIX)
withUnsafeMutableBytes(of: &address.sun_path) { raw in
    let bytes = Array(socketPath.utf8)
    raw.copyBytes(from: bytes)
    raw[bytes.count] = 0
}
unlink(socketPath)
let previousMask = umask(0o177)
let bound = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
}
umask(previousMask)
guard bound == 0, listen(listener, 16) == 0 else { fail("bind \(socketPath): \(String(cString: strerror(errno)))") }
// Tell the spawner we are ready by closing our copy of its pipe, if it gave us one on fd 4.
if fcntl(4, F_GETFD) >= 0 { close(4) }

while true {
    let client = accept(listener, nil, nil)
    if client < 0 {
        if errno == EINTR { continue }
        fail("accept: \(String(cString: strerror(errno)))")
    }
    _ = fcntl(client, F_SETFD, FD_CLOEXEC)
    // Only root (or our own uid) may take the handle.
    var credentials = clinux_peer_cred()
    if clinux_peer_cred(client, &credentials) != 0 || (credentials.uid != 0 && credentials.uid != getuid()) {
        close(client)
        continue
    }
    _ = clinux_send_fd(client, heldFD, 72)  // "H": here is the held descriptor
    var command: UInt8 = 0
    let n = read(client, &command, 1)
    close(client)
    if n == 1 && command == UInt8(ascii: "R") {
        close(heldFD)
        unlink(socketPath)
        exit(0)
    }
}
