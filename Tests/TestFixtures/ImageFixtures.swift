import Foundation
import TestThreads
import Testing

/// Paths of the shared fixtures and helpers for scratch directories. The fixtures live in
/// `../shared/fixtures` beside the package root, or where `SNAPSHOTTER_FIXTURES` points (a directory holding
/// `nydus/`), so a checkout at any path finds them.
package enum ImageFixtures {
    /// The package root: this file is `<root>/Tests/TestFixtures/ImageFixtures.swift`.
    package static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The fixtures' root directory.
    package static let root =
        ProcessInfo.processInfo.environment["SNAPSHOTTER_FIXTURES"]
        ?? packageRoot.deletingLastPathComponent().appendingPathComponent("shared/fixtures").standardizedFileURL.path

    /// The nydus conformance fixtures (nydus's own images and blobs).
    package static let directory = root + "/nydus"

    package static let bootstrap = directory + "/rafs-v6-2.2.boot"
    package static let blobID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
    package static let blob = directory + "/" + blobID
    package static let layerArchive = directory + "/v6-bootstrap-chunk-pos-438272.tar.gz"

    package static var available: Bool {
        FileManager.default.fileExists(atPath: bootstrap) && FileManager.default.fileExists(atPath: blob)
    }

    /// A fresh directory under /tmp, removed by `cleanup`.
    package static func scratchDirectory(_ label: String) throws -> String {
        let path = "/tmp/blobstore-\(label)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    package static func cleanup(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Runs a tool and returns its stdout; throws when it exits non-zero.
    @discardableResult
    package static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        let exit = process.waitForExit()
        return (exit.status, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    /// First of `candidates` that exists, for tools installed in /usr/bin or /usr/sbin.
    package static func tool(_ name: String) -> String? {
        ["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"].map { $0 + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Extracts `image/image.boot` from the nydus-snapshotter bootstrap layer into `directory`.
    package static func extractLayerBootstrap(into directory: String) throws -> String {
        let result = try run("/bin/tar", ["-xzf", layerArchive, "-C", directory, "image/image.boot"])
        guard result.status == 0 else {
            throw FixtureError.toolFailed("tar: \(result.error)")
        }
        return directory + "/image/image.boot"
    }

    package static func bytes(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    package static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// `key: value` lines of dump.erofs output.
    package static func dumpFields(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            result[line[..<colon].trimmingCharacters(in: .whitespaces)] =
                line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return result
    }
}

package enum FixtureError: Error {
    case toolFailed(String)

}
