import SystemSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ImageService {
    /// A path for `device=<path>` in EROFS mount options. Options are split on commas before the
    /// kernel sees them, and the front end's paths can hold one (the cachefiles-style volume directory
    /// `Ierofs,<domain>`), so such a path is reached through a comma-free symlink,
    /// `<root>/devices/<name>`. EROFS opens the device by path and follows the link, so reads still go
    /// through the front end's path (and its fanotify mark).
    func mountableDevicePath(_ path: String, name: String) throws -> String {
        guard path.contains(",") else { return path }
        let directory = FileSystem.join(root, "devices")
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let link = FileSystem.join(directory, name)
        _ = unlink(link)
        try retryingSyscall("symlink", link) { symlink(path, link) }
        return link
    }
}
