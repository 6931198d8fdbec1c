import CoreFoundation
import Foundation
import LinuxKernel
import RAFSBuilder
import SnapshotterAPI
import TestSupport
import TestThreads
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Crafted images pulled by the real daemon from a `HostileRegistry`: each claim beyond `ImageLimits` is refused
/// with a clear error before anything is sized by it, and the daemon stays up with nothing left behind.
@Suite("Resource bounds: crafted images cannot make the daemon allocate without bound", .ownThread)
struct HostileImagePullTests {
    enum Claim: String, CaseIterable, Sendable {
        /// A blob whose uncompressed size is near 2^64 (its backing file's size overflowed on main: the daemon trapped).
        case uncompressedSizeNear2To64
        /// A blob of 1 PiB: a sparse backing file that large.
        case petabyteBlob
        /// More chunks than any image needs, with a meta claimed big enough to hold their chunk infos.
        case chunkCount
        /// A chunk size no encoder produces (0 or not a power of two).
        case chunkSize
        /// A device slot tagged with a blob other than its blob-table entry (say, another image's, shared in the
        /// cache domain): in fscache mode the kernel would open that blob's data for this image's chunk indexes.
        case deviceTag

        func apply(to boot: inout [UInt8]) {
            let entry = CraftedImages.blobTableEntryOffset(boot)
            switch self {
            case .uncompressedSizeNear2To64: CraftedImages.put(UInt64.max - 100, into: &boot, at: entry + 96)
            case .petabyteBlob: CraftedImages.put(1 << 50, into: &boot, at: entry + 96)
            case .chunkCount:
                CraftedImages.put(UInt64(UInt32.max), into: &boot, at: entry + 72, width: 4)
                CraftedImages.put(UInt64(UInt32.max) * 16, into: &boot, at: entry + 128)
            case .chunkSize: CraftedImages.put(3000, into: &boot, at: entry + 68, width: 4)
            case .deviceTag:
                let slot = CraftedImages.deviceSlotOffset(boot)
                boot.replaceSubrange(slot..<slot + 64, with: Array(String(repeating: "ab", count: 32).utf8))
            }
        }

        /// Words the refusal names.
        var expected: String {
            switch self {
            case .uncompressedSizeNear2To64, .petabyteBlob: return "uncompressed size"
            case .chunkCount: return "meta"
            case .chunkSize: return "chunk size"
            case .deviceTag: return "device 1 is tagged"
            }
        }
    }

    @Test(
        "a bootstrap claiming absurd sizes, or a device that is not its blob, is refused at pull; the daemon stays up",
        arguments: Claim.allCases)
    func absurdClaimsAreRefused(_ claim: Claim) throws {
        let daemon = try DaemonHarness("hostile-\(claim.rawValue.prefix(12))", arguments: ["--front-end", "eager"])
        let registry = try HostileRegistry()
        defer {
            daemon.tearDown()
            registry.stop()
        }
        let image = try NydusTestImage(
            directory: daemon.directory + "/image", files: ["bin/tool": RegistryTestSupport.randomBytes(1 << 20, seed: 9)],
            compression: .none)
        try CraftedImages.publish(
            image, rewritingBootstrap: { claim.apply(to: &$0) }, to: registry, repository: "crafted", tag: "v1",
            scratch: daemon.directory + "/craft")
        try daemon.start()

        let pulled = try runCommand(DaemonHarness.snapctlPath, ["--socket", daemon.socket, "pull", "\(registry.host)/crafted:v1"])
        #expect(pulled.status != 0, "the crafted image was pulled:\n\(pulled.output)")
        #expect(pulled.output.contains(claim.expected), "the refusal does not say why:\n\(pulled.output)")
        let alive = daemon.process?.isRunning == true
        #expect(alive, "the daemon died:\n\(daemon.log().suffix(2000))")
        guard alive else { return }
        #expect(try daemon.client().status().images?.isEmpty ?? true)

        // Nothing sized by the claim stays behind: no file under the root has an apparent size over 1 GiB.
        var largest: (path: String, size: Int64) = ("", 0)
        let walker = FileManager.default.enumerator(atPath: daemon.root)
        while let relative = walker?.nextObject() as? String {
            let path = daemon.root + "/" + relative
            if let info = try? FileSystem.lstat(path), Int64(info.st_size) > largest.size { largest = (path, Int64(info.st_size)) }
        }
        #expect(largest.size < 1 << 30, "\(largest.path) has an apparent size of \(largest.size) bytes")
    }
}
